//! Sets one cfg per tool or server a CLI test needs, when it is on `PATH`
//! or when `CI` is set: `redial_has_promtool` (Debian package
//! `prometheus`), `redial_has_redis` (`redis-server`),
//! `redial_has_mosquitto` (`mosquitto`),
//! `redial_has_anvil` when `npm ci` ran in `tests/anvil`, and
//! `redial_has_socketio` with node and `npm ci` run in
//! `tests/socketio-server`. The tests that
//! need one are then reported as ignored, not passed, where it is missing;
//! the same mechanism as the `tests` package's server launchers (see
//! `tests/src/third_party/mod.rs`).

/// (program, cfg)
const NEEDED: [(&str, &str); 3] = [
    ("promtool", "redial_has_promtool"),
    ("redis-server", "redial_has_redis"),
    ("mosquitto", "redial_has_mosquitto"),
];

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CI");
    println!("cargo:rerun-if-env-changed=PATH");
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<_> = std::env::split_paths(&path).collect();
    // Installing a program changes a directory on PATH: rerun then.
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    let anvil = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/anvil/node_modules/@foundry-rs/anvil/package.json");
    println!("cargo:rustc-check-cfg=cfg(redial_has_anvil)");
    if let Some(dir) = anvil.ancestors().find(|d| d.is_dir()) {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    if ci || anvil.is_file() {
        println!("cargo:rustc-cfg=redial_has_anvil");
    }
    // The Socket.IO suite: node and `npm ci` in tests/socketio-server.
    let socketio = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/socketio-server/node_modules/socket.io/package.json");
    println!("cargo:rustc-check-cfg=cfg(redial_has_socketio)");
    if let Some(dir) = socketio.ancestors().find(|d| d.is_dir()) {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    let node = dirs.iter().any(|d| d.join("node").is_file());
    if ci || (node && socketio.is_file()) {
        println!("cargo:rustc-cfg=redial_has_socketio");
    }
    for (program, cfg) in NEEDED {
        println!("cargo:rustc-check-cfg=cfg({cfg})");
        if ci || dirs.iter().any(|d| d.join(program).is_file()) {
            println!("cargo:rustc-cfg={cfg}");
        }
    }
}
