//! The `redial` binary end to end, against the reference server (and the
//! fault proxy) started in-process on 127.0.0.1. Every wait is on something
//! the child prints or the server counts; nothing sleeps for an event.
// Test helpers (outside #[test] fns) unwrap too: a failed setup step should
// panic with its message.
#![allow(clippy::unwrap_used)]

mod common;

use redial_core::Payload;
use redial_testkit::proxy::{Cut, Proxy};
use redial_tests::reference::{Reject, Server, ServerConfig, ServerHandle};
use tokio::process::Command;

use common::{closed_port, echo_server, Run, BIN, WAIT};

async fn server() -> ServerHandle {
    Server::start(ServerConfig::default()).await.unwrap()
}

fn applied(server: &ServerHandle) -> Vec<String> {
    let mut out = Vec::new();
    for name in server.session_names() {
        for p in server.applied(&name) {
            out.push(p.payload.as_text().unwrap().to_owned());
        }
    }
    out
}

/// Fast reconnects for the fault tests.
const QUICK: [&str; 8] = [
    "--backoff",
    "full-jitter",
    "--backoff-first-ms",
    "20",
    "--backoff-cap-ms",
    "50",
    "--max-reconnect-attempts",
    "0",
];

#[tokio::test]
async fn wire_round_trip_then_eof_exits_0() {
    let server = server().await;
    let url = server.url();
    let mut run = Run::start(&["--protocol", "wire", &url]);
    run.write("hello").await;
    run.write("world").await;
    // The reference server echoes a channel-less PUBLISH as a MESSAGE.
    assert_eq!(run.line().await, "hello");
    assert_eq!(run.line().await, "world");
    let label = format!("[{}] connected (session ", server.addr());
    run.text(&label).await;
    run.eof();
    assert_eq!(run.exit().await, 0, "{:#?}", run.stderr_seen);
    assert!(run
        .stderr_seen
        .iter()
        .any(|l| l.ends_with("closed: closed_by_user: closed by user")));
    assert_eq!(applied(&server), ["hello", "world"]);
}

#[tokio::test]
async fn raw_text_and_binary_round_trip_with_headers_and_token() {
    let (url, seen) = echo_server().await;
    let mut run = Run::start(&["--header", "X-Trace: t-1", "--token", "abc123", &url]);
    run.write("ping 1").await;
    assert_eq!(run.line().await, "text:ping 1");
    run.eof();
    assert_eq!(run.exit().await, 0, "{:#?}", run.stderr_seen);
    {
        let seen = seen.lock().unwrap();
        let h = &seen[0];
        let get = |k: &str| h.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("x-trace"), Some("t-1"));
        assert_eq!(get("authorization"), Some("Bearer abc123"));
    }
    assert!(!run.stderr_seen.iter().any(|l| l.contains("abc123")));

    let mut run = Run::start(&["--binary", &url]);
    run.write("bytes").await;
    assert_eq!(run.line().await, "binary:bytes");
    run.eof();
    assert_eq!(run.exit().await, 0);
}

#[tokio::test]
async fn lines_written_during_an_outage_are_delivered_once() {
    let server = server().await;
    let proxy = Proxy::start(server.addr()).await.unwrap();
    let url = format!("ws://{}/", proxy.addr());
    let mut args = vec!["--protocol", "wire", "--events", "json"];
    args.extend(QUICK);
    args.push(&url);
    let mut run = Run::start(&args);

    let first = run.event("connected").await;
    assert_eq!(first["reconnect"], false);
    assert_eq!(first["resumed"], false);
    let name = first["session_name"].as_str().unwrap().to_owned();
    run.write("before").await;
    assert_eq!(run.line().await, "before");

    proxy.set_refusing(true);
    proxy.cut_all(Cut::Reset);
    let gone = run.event("disconnected").await;
    assert_eq!(gone["will_reconnect"], true);
    assert!(gone["reason"].is_string());
    assert!(gone.get("code").is_some());
    let scheduled = run.event("reconnect_scheduled").await;
    assert_eq!(scheduled["attempt"], 1);
    assert!(scheduled["delay_ms"].as_u64().unwrap() <= 50);
    run.write("during 1").await;
    run.write("during 2").await;
    // At least one dial is refused while the lines wait.
    run.event("dial_failed").await;
    proxy.set_refusing(false);

    let back = run.event("connected").await;
    assert_eq!(back["reconnect"], true);
    assert_eq!(back["resumed"], true);
    assert_eq!(back["session_name"], name.as_str());
    assert_eq!(run.line().await, "during 1");
    assert_eq!(run.line().await, "during 2");
    run.eof();
    let closed = run.event("closed").await;
    assert_eq!(closed["reason"], "closed_by_user");
    assert_eq!(closed["undelivered"], 0);
    assert_eq!(closed["exit_code"], 0);
    assert_eq!(run.exit().await, 0);
    assert_eq!(applied(&server), ["before", "during 1", "during 2"]);
    let states: Vec<_> = run
        .events_seen()
        .into_iter()
        .filter(|e| e["event"] == "state")
        .map(|e| {
            format!(
                "{}>{}",
                e["from"].as_str().unwrap(),
                e["to"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        states.contains(&"connected>reconnecting".to_owned()),
        "{states:?}"
    );
    assert!(states.last().unwrap().ends_with(">closed"), "{states:?}");
}

#[tokio::test]
async fn server_close_4001_exits_3() {
    let server = server().await;
    let mut run = Run::start(&["--protocol", "wire", "--events", "json", &server.url()]);
    run.event("connected").await;
    server.close_all(4001, "token revoked");
    let gone = run.event("disconnected").await;
    assert_eq!(gone["code"], 4001);
    assert_eq!(gone["will_reconnect"], false);
    let closed = run.event("closed").await;
    assert_eq!(closed["reason"], "invalid_token");
    assert_eq!(closed["code"], 4001);
    assert_eq!(closed["exit_code"], 3);
    assert_eq!(run.exit().await, 3);
}

#[tokio::test]
async fn handshake_403_exits_3_with_reason_and_code() {
    let server = server().await;
    server.reject_handshakes(Some(Reject {
        status: 403,
        retry_after: None,
    }));
    let mut run = Run::start(&["--protocol", "wire", &server.url()]);
    assert_eq!(run.exit().await, 3);
    assert!(
        run.stderr_seen
            .iter()
            .any(|l| l.contains("closed: forbidden (403)")),
        "{:#?}",
        run.stderr_seen
    );
}

#[tokio::test]
async fn exhausted_attempts_exit_4() {
    let dead = closed_port().await;
    let url = format!("ws://{dead}/");
    let mut run = Run::start(&[
        "--events",
        "json",
        "--max-reconnect-attempts",
        "2",
        "--backoff",
        "full-jitter",
        "--backoff-first-ms",
        "10",
        "--backoff-cap-ms",
        "20",
        &url,
    ]);
    let closed = run.event("closed").await;
    assert_eq!(closed["reason"], "attempts_exhausted");
    assert_eq!(run.exit().await, 4);
    let scheduled = run
        .events_seen()
        .iter()
        .filter(|e| e["event"] == "reconnect_scheduled")
        .count();
    assert_eq!(scheduled, 2);
}

/// `--endpoint` adds a node: with the first one down the client ends up on
/// the live one, and every failed dial names the dead one.
#[tokio::test]
async fn a_second_endpoint_takes_over_from_a_dead_one() {
    let server = server().await;
    let dead = format!("ws://{}/", closed_port().await);
    let live = server.url();
    let mut args = QUICK.to_vec();
    args.extend([
        "--events",
        "json",
        "--protocol",
        "wire",
        "--endpoint",
        &live,
        &dead,
    ]);
    let mut run = Run::start(&args);
    let connected = run.event("connected").await;
    assert_eq!(connected["endpoint"], 1, "{connected}");
    for e in run.events_seen() {
        if e["event"] == "dial_failed" {
            assert_eq!(e["endpoint"], 0, "{e}");
        }
    }
    run.eof();
    assert_eq!(run.exit().await, 0, "{:#?}", run.stderr_seen);
}

#[tokio::test]
async fn usage_and_config_errors_exit_2_with_one_line() {
    let server = server().await;
    let url = server.url();
    let cases: Vec<Vec<&str>> = vec![
        vec!["--frobnicate", &url],
        vec!["http://127.0.0.1:1/"],
        vec!["ws://"],
        vec![],
        vec!["--ping-interval-ms", "5", &url],
        vec!["--backoff-first-ms", "500", &url],
        vec![
            "--backoff",
            "full-jitter",
            "--backoff-first-ms",
            "500",
            "--backoff-cap-ms",
            "100",
            &url,
        ],
        vec!["--backoff", "proportional", "--backoff-jitter", "2", &url],
        vec!["--max-reconnect-attempts", "-1", &url],
        vec!["--subscribe", "news", &url],
        vec!["--token", "a", "--token-cmd", "echo b", &url],
        vec!["--header", "no colon", &url],
        vec!["--header", "Bad Name: v", &url],
        vec!["serve", "--listen", "0.0.0.0:0"],
        vec!["demo", "--seconds", "1"],
        vec!["--endpoint", "wss://127.0.0.1:1/", &url],
        vec!["--endpoint", "http://127.0.0.1:1/", &url],
    ];
    for args in cases {
        let out = Command::new(BIN).args(&args).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("redial: "), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    assert_eq!(server.stats().connections, 0, "nothing may be sent");
}

#[tokio::test]
async fn token_cmd_runs_once_per_dial_and_is_never_printed() {
    let server = server().await;
    let proxy = Proxy::start(server.addr()).await.unwrap();
    let log = std::env::temp_dir().join(format!(
        "redial-cli-token-{}-{}",
        std::process::id(),
        redial_cli_test_nonce()
    ));
    let cmd = format!("echo dial >> '{}'; echo s3cr3t-t0ken", log.display());
    let url = format!("ws://{}/", proxy.addr());
    let mut args = vec![
        "--protocol",
        "wire",
        "--events",
        "json",
        "--token-cmd",
        &cmd,
    ];
    args.extend(QUICK);
    args.push(&url);
    let mut run = Run::start(&args);
    run.event("connected").await;
    // A drop: one more dial.
    proxy.cut_all(Cut::Reset);
    run.event("connected").await;
    // A refused dial still fetched its token first.
    proxy.set_refusing(true);
    proxy.cut_all(Cut::Fin);
    run.event("dial_failed").await;
    proxy.set_refusing(false);
    run.event("connected").await;
    run.eof();
    assert_eq!(run.exit().await, 0);
    let calls = std::fs::read_to_string(&log).unwrap().lines().count() as u64;
    let _ = std::fs::remove_file(&log);
    assert_eq!(calls, proxy.accepted(), "one token per dial");
    assert_eq!(server.stats().connections + proxy.refused(), calls);
    assert!(calls >= 4);
    assert!(!run.stderr_seen.iter().any(|l| l.contains("s3cr3t")));
}

fn redial_cli_test_nonce() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[tokio::test]
async fn failing_token_cmd_is_transient_and_reported() {
    let server = server().await;
    let url = server.url();
    let mut run = Run::start(&[
        "--protocol",
        "wire",
        "--events",
        "json",
        "--token-cmd",
        "echo vault sealed >&2; exit 1",
        "--max-reconnect-attempts",
        "3",
        "--backoff",
        "full-jitter",
        "--backoff-first-ms",
        "10",
        "--backoff-cap-ms",
        "20",
        &url,
    ]);
    let failing = run.event("token_provider_failing").await;
    assert_eq!(failing["consecutive"], 3);
    assert!(failing["message"]
        .as_str()
        .unwrap()
        .contains("exited with 1: vault sealed"));
    assert_eq!(run.exit().await, 4);
    assert_eq!(server.stats().connections, 0);
}

#[tokio::test]
async fn ctrl_c_closes_cleanly() {
    let server = server().await;
    let mut run = Run::start(&["--protocol", "wire", "--events", "json", &server.url()]);
    run.event("connected").await;
    run.write("last words").await;
    assert_eq!(run.line().await, "last words");
    run.signal("-INT").await;
    let closed = run.event("closed").await;
    assert_eq!(closed["reason"], "closed_by_user");
    assert_eq!(run.exit().await, 0);
}

#[tokio::test]
async fn serve_prints_its_url_and_takes_fault_flags() {
    let mut serve = Run::start(&["serve", "--deny-channel", "secret"]);
    let line = serve.line().await;
    let url = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_owned();
    let mut run = Run::start(&[
        "--protocol",
        "wire",
        "--events",
        "json",
        "--subscribe",
        "secret",
        "--subscribe",
        "news",
        "--name",
        "calm-otter-7",
        &url,
    ]);
    let hello = run.event("connected").await;
    assert_eq!(hello["session_name"], "calm-otter-7");
    let refused = run.event("subscribe_failed").await;
    assert_eq!(refused["channel"], "secret");
    run.write("hi").await;
    assert_eq!(run.line().await, "hi");
    run.eof();
    assert_eq!(run.exit().await, 0);
    serve.signal("-INT").await;
    assert_eq!(serve.exit().await, 0);

    // A scripted rejection with a retry hint: the client waits and retries.
    let mut serve = Run::start(&["serve", "--reject-status", "503", "--retry-after-s", "7"]);
    let url = serve.line().await.replace("listening on ", "");
    let mut run = Run::start(&["--protocol", "wire", "--events", "json", &url]);
    let failed = run.event("dial_failed").await;
    assert_eq!(failed["status"], 503);
    let scheduled = run.event("reconnect_scheduled").await;
    assert!(scheduled["delay_ms"].as_u64().unwrap() >= 7_000);
    run.eof();
    assert_eq!(run.exit().await, 0);
    serve.signal("-TERM").await;
    assert_eq!(serve.exit().await, 0);
}

#[tokio::test]
async fn subscriptions_print_channel_messages() {
    let server = server().await;
    let mut run = Run::start(&[
        "--protocol",
        "wire",
        "--events",
        "json",
        "--subscribe",
        "news",
        &server.url(),
    ]);
    run.event("subscribed").await;
    assert_eq!(server.publish("news", Payload::text("extra, extra")), 1);
    assert_eq!(run.line().await, "extra, extra");
    run.eof();
    assert_eq!(run.exit().await, 0);
}

#[tokio::test]
async fn demo_runs_clean() {
    let out = tokio::time::timeout(
        WAIT * 3,
        Command::new(BIN)
            .args(["demo", "--seconds", "5", "--clients", "2", "--seed", "3"])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("nothing lost, nothing duplicated"),
        "{stdout}"
    );
    assert!(stdout.contains("recovery p99"), "{stdout}");
}

/// GET /metrics from `url` (`http://ADDR/metrics`): the status line and
/// the body.
async fn scrape(url: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url
        .strip_prefix("http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// The sum of the samples of `name` whose labels include every pair.
fn sample(body: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// A wire client with `--metrics-listen`, after two forced reconnects: the
/// scrape counts them by class and the message sent.
async fn scraped_after_two_reconnects() -> String {
    let server = server().await;
    let proxy = Proxy::start(server.addr()).await.unwrap();
    let url = format!("ws://{}/", proxy.addr());
    let mut args = vec![
        "--protocol",
        "wire",
        "--events",
        "json",
        "--metrics-listen",
        "127.0.0.1:0",
        "--client-label",
        "cli-test",
    ];
    args.extend(QUICK);
    args.push(&url);
    let mut run = Run::start(&args);
    let listening = run.event("metrics_listening").await;
    let metrics = listening["url"].as_str().unwrap().to_owned();
    run.event("connected").await;
    run.write("one").await;
    assert_eq!(run.line().await, "one");
    for _ in 0..2 {
        proxy.cut_all(Cut::Reset);
        run.event("disconnected").await;
        let back = run.event("connected").await;
        assert_eq!(back["reconnect"], true);
    }

    let (status, body) = scrape(&metrics).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let me = [("protocol", "wire"), ("client", "cli-test")];
    let with = |k, v| {
        let mut l = me.to_vec();
        l.push((k, v));
        l
    };
    assert_eq!(
        sample(&body, "redial_dials_total", &with("result", "ok")),
        3.0,
        "{body}"
    );
    assert_eq!(sample(&body, "redial_reconnects_total", &me), 2.0, "{body}");
    assert_eq!(
        sample(
            &body,
            "redial_disconnects_total",
            &with("class", "transport")
        ),
        2.0,
        "{body}"
    );
    assert_eq!(
        sample(&body, "redial_disconnects_total", &me),
        2.0,
        "{body}"
    );
    assert_eq!(
        sample(&body, "redial_messages_sent_total", &me),
        1.0,
        "{body}"
    );
    assert_eq!(
        sample(&body, "redial_sessions", &with("state", "connected")),
        1.0,
        "{body}"
    );
    assert_eq!(
        sample(&body, "redial_outage_seconds_count", &me),
        2.0,
        "{body}"
    );
    assert_eq!(
        sample(&body, "redial_handshake_seconds_count", &me),
        3.0,
        "{body}"
    );
    only_labels(
        &body,
        &[
            "protocol", "client", "result", "class", "state", "outcome", "quantile",
        ],
    );

    run.eof();
    assert_eq!(run.exit().await, 0);
    body
}

#[tokio::test]
async fn metrics_endpoint_counts_forced_reconnects() {
    scraped_after_two_reconnects().await;
}

#[cfg_attr(
    not(redial_has_promtool),
    ignore = "needs promtool: apt-get install prometheus"
)]
#[tokio::test]
async fn metrics_endpoint_passes_promtool_check() {
    promtool_check(&scraped_after_two_reconnects().await);
}

/// Nothing but the `allowed` label names on the `redial` series of `body`.
fn only_labels(body: &str, allowed: &[&str]) {
    for line in body.lines().filter(|l| l.starts_with("redial_")) {
        let labels = line.split_once('{').map_or("", |(_, rest)| rest);
        for pair in labels.split(',').filter(|p| p.contains('=')) {
            let key = pair.split('=').next().unwrap().trim_start_matches('}');
            assert!(allowed.contains(&key), "label {key} in {line}");
        }
    }
}

/// `promtool check metrics` accepts `body`.
fn promtool_check(body: &str) {
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool (apt-get install prometheus): {e}"));
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn metrics_listen_refuses_a_non_loopback_address() {
    let mut run = Run::start(&["--metrics-listen", "0.0.0.0:0", "ws://127.0.0.1:9/"]);
    let line = run.text("--metrics-listen").await;
    assert!(line.contains("only loopback"), "{line}");
    assert_eq!(run.exit().await, 2);
}

/// `redial serve --metrics-listen` after a session was created, cut and
/// resumed, with a publish on each connection: the scrape counts them.
async fn scraped_serve() -> String {
    let mut serve = Run::start(&["serve", "--metrics-listen", "127.0.0.1:0"]);
    let metrics = serve.line().await.replace("metrics on ", "");
    let line = serve.line().await;
    let url = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line}"));
    let ws = url.trim_start_matches("ws://").trim_end_matches('/');
    let proxy = Proxy::start(ws.parse().unwrap()).await.unwrap();
    let through = format!("ws://{}/", proxy.addr());
    let mut args = vec!["--protocol", "wire", "--events", "json"];
    args.extend(QUICK);
    args.push(&through);
    let mut run = Run::start(&args);
    run.event("connected").await;
    // A publish without a channel comes back to its sender.
    run.write("one").await;
    assert_eq!(run.line().await, "one");
    proxy.cut_all(Cut::Reset);
    run.event("disconnected").await;
    let back = run.event("connected").await;
    assert_eq!(back["reconnect"], true);
    run.write("two").await;
    assert_eq!(run.line().await, "two");

    let (status, body) = scrape(&metrics).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let count = |name, labels: &[(&str, &str)]| sample(&body, name, labels);
    assert_eq!(count("redial_server_connections", &[]), 1.0, "{body}");
    assert_eq!(
        count("redial_server_upgrades_total", &[("result", "accepted")]),
        2.0,
        "{body}"
    );
    assert_eq!(
        count("redial_server_sessions_total", &[("kind", "created")]),
        1.0,
        "{body}"
    );
    assert_eq!(
        count("redial_server_sessions_total", &[("kind", "resumed")]),
        1.0,
        "{body}"
    );
    assert_eq!(
        count("redial_server_publishes_total", &[("result", "applied")]),
        2.0,
        "{body}"
    );
    // A replay after the cut may send "one" again.
    assert!(
        count("redial_server_deliveries_total", &[]) >= 2.0,
        "{body}"
    );
    for (op, calls) in [("create", 1.0), ("resume", 1.0), ("send_to", 2.0)] {
        assert_eq!(
            count("redial_server_store_seconds_count", &[("op", op)]),
            calls,
            "{op}: {body}"
        );
    }
    assert_eq!(
        count("redial_server_store_timeouts_total", &[]),
        0.0,
        "{body}"
    );
    only_labels(&body, &["result", "kind", "error", "op", "quantile"]);

    run.eof();
    assert_eq!(run.exit().await, 0);
    serve.signal("-INT").await;
    assert_eq!(serve.exit().await, 0);
    body
}

#[tokio::test]
async fn serve_metrics_count_sessions_resumes_and_publishes() {
    scraped_serve().await;
}

#[cfg_attr(
    not(redial_has_promtool),
    ignore = "needs promtool: apt-get install prometheus"
)]
#[tokio::test]
async fn serve_metrics_pass_promtool_check() {
    promtool_check(&scraped_serve().await);
}
