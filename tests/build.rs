//! Finds which third-party servers are installed and sets one cfg per
//! server (see `src/third_party/installed.rs`), so the suites' `needs!` marks
//! make cargo report a test whose server is missing as ignored.
//!
//! With `CI` set every cfg is set: CI installs the servers, and a missing
//! one must fail its tests rather than be ignored.

#[allow(dead_code)] // the launchers use the rest of it
#[path = "src/third_party/installed.rs"]
mod installed;

use std::path::{Path, PathBuf};

use installed::Server;

fn main() {
    let package = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let path = std::env::var_os("PATH");
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/third_party/installed.rs");
    println!("cargo:rerun-if-env-changed=CI");
    println!("cargo:rerun-if-env-changed=PATH");
    // Installing or removing a server changes a directory on PATH, and
    // `npm ci` changes the graphql server's directory: watch those, so the
    // cfgs follow the install state without a `cargo clean`. (A path that
    // does not exist would make cargo rerun this script on every build, so
    // only existing ones are watched.)
    if let Some(path) = &path {
        for dir in std::env::split_paths(path) {
            watch(&dir);
        }
    }
    for server in Server::ALL {
        println!("cargo:rustc-check-cfg=cfg({})", server.cfg());
        if let Some(file) = server.file() {
            watch_nearest(&package.join(file), &package);
        }
        if ci || server.installed(path.as_deref(), &package) {
            println!("cargo:rustc-cfg={}", server.cfg());
        } else {
            let file = server
                .file()
                .map(|f| format!(" and {f}"))
                .unwrap_or_default();
            println!(
                "cargo:warning={:?} server missing (needs {}{file}): its tests are ignored",
                server,
                server.programs().join(" and ")
            );
        }
    }
}

fn watch(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// Watches `file`, or the closest existing directory above it inside
/// `package`, where its creation would show.
fn watch_nearest(file: &Path, package: &Path) {
    let mut at = Some(file);
    while let Some(p) = at {
        if p.exists() || p == package {
            watch(p);
            return;
        }
        at = p.parent();
    }
}
