//! Calls through the handle, against a test server that answers them: the
//! protocol is the core's `Prober` (a call goes out as `call ID REQUEST`,
//! `reply ID RESULT` and `reject ID CODE` answer it; its probe timer is set
//! beyond the test).

use std::time::Duration;

use futures_util::future::join;
use redial_core::fuzzing::Prober;
use redial_core::{CallError, CallOptions, Event, Payload, Text};

use super::{fast_config, wait_event, wait_server, within, Plan, ScriptedPeer, ServerEvent, WAIT};
use crate::{Builder, Runtime};

fn calls_prober() -> Prober {
    Prober::new(Duration::from_secs(3600), Duration::from_secs(1))
}

/// The next text the server reads, with its connection.
async fn next_text<R: Runtime>(rt: &R, server: &mut ScriptedPeer, what: &str) -> (usize, String) {
    match wait_server(rt, server, what, |e| matches!(e, ServerEvent::Text { .. })).await {
        ServerEvent::Text { conn, text } => (conn, text),
        other => panic!("{other:?}"),
    }
}

/// A reply and a rejection come back to their callers; across a drop a
/// call in flight fails with `ConnectionLost` and reaches the server once,
/// while a repeatable one is sent once more on the next connection and
/// answered there.
pub async fn calls_across_a_drop<R: Runtime>(make: impl Fn(String) -> Builder<R>) {
    let mut server = ScriptedPeer::start(|_| Plan::Accept).expect("server");
    let builder = make(server.url().to_owned())
        .protocol(calls_prober())
        .config(fast_config().build().expect("config"));
    let rt = builder.runtime().clone();
    let (handle, mut events) = builder.connect().expect("connect");
    wait_event(&rt, &mut events, "connected", |e| {
        matches!(e, Event::Connected { .. })
    })
    .await;

    let answered = join(
        handle.call(Payload::text("eth_blockNumber"), CallOptions::new()),
        async {
            let got = next_text(&rt, &mut server, "the call").await;
            assert_eq!(got, (0, "call 1 eth_blockNumber".to_owned()));
            server.send_text(0, "reply 1 0x10");
        },
    );
    let (reply, ()) = within(&rt, WAIT, "the reply", answered).await;
    assert_eq!(reply, Ok(Payload::text("0x10")));

    let refused = join(
        handle.call(Payload::text("nonsense"), CallOptions::new()),
        async {
            let got = next_text(&rt, &mut server, "the second call").await;
            assert_eq!(got, (0, "call 2 nonsense".to_owned()));
            server.send_text(0, "reject 2 -32602");
        },
    );
    let (reply, ()) = within(&rt, WAIT, "the rejection", refused).await;
    assert_eq!(
        reply,
        Err(CallError::Rejected {
            code: -32602,
            message: Text::from("rejected")
        })
    );

    let once = handle.call(Payload::text("send_tx"), CallOptions::new());
    let read = handle.call(Payload::text("read"), CallOptions::new().repeatable(true));
    let server_side = async {
        let mut seen = vec![
            next_text(&rt, &mut server, "the third call").await,
            next_text(&rt, &mut server, "the fourth call").await,
        ];
        server.drop_conn(0);
        let again = next_text(&rt, &mut server, "the repeat").await;
        assert_eq!(
            again,
            (1, "call 4 read".to_owned()),
            "sent once more, alone"
        );
        server.send_text(1, "reply 4 0x20");
        seen.push(again);
        seen
    };
    let ((once, read), seen) = within(
        &rt,
        WAIT,
        "the calls across the drop",
        join(join(once, read), server_side),
    )
    .await;
    assert_eq!(once, Err(CallError::ConnectionLost));
    assert_eq!(read, Ok(Payload::text("0x20")));
    assert_eq!(
        seen,
        [
            (0, "call 3 send_tx".to_owned()),
            (0, "call 4 read".to_owned()),
            (1, "call 4 read".to_owned())
        ],
        "the call not marked repeatable reached the server once"
    );
    within(&rt, WAIT, "close", handle.close()).await;
    assert_eq!(
        handle.call(Payload::text("late"), CallOptions::new()).await,
        Err(CallError::Refused(redial_core::SendError::Closed))
    );
}
