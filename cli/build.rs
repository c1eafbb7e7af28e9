//! Sets `redial_has_promtool` when `promtool` (Debian package
//! `prometheus`) is on `PATH`, or when `CI` is set, so the test that
//! validates `--metrics-listen` output with it is reported as ignored, not
//! passed, where it is missing: the same mechanism as the `tests`
//! package's server launchers (see `tests/src/servers/mod.rs`).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CI");
    println!("cargo:rerun-if-env-changed=PATH");
    println!("cargo:rustc-check-cfg=cfg(redial_has_promtool)");
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut found = false;
    for dir in std::env::split_paths(&path) {
        // Installing it changes a directory on PATH: rerun then.
        if dir.is_dir() {
            println!("cargo:rerun-if-changed={}", dir.display());
        }
        found |= dir.join("promtool").is_file();
    }
    if ci || found {
        println!("cargo:rustc-cfg=redial_has_promtool");
    }
}
