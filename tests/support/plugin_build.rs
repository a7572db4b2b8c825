//! Builds this workspace's plugin crates (the example and the fault fixtures
//! under `plugins/`) for the tests and benches that load them.
//!
//! Shared by path (`#[path]`) between core's unit tests, the end-to-end tests
//! and the benches, so there is one copy. The build runs `$CARGO build -q`
//! (with `--release` when the caller is optimised) in a target directory of
//! its own, `target/plugin-fixtures`, so it never waits on the lock held by
//! the cargo running the tests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `crates` in one cargo run and returns their shared libraries, in
/// the same order.
pub fn build_plugin_libraries(crates: &[&str]) -> Vec<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("core/ is inside the workspace")
        .to_path_buf();
    let target = workspace.join("target").join("plugin-fixtures");
    let release = !cfg!(debug_assertions);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = Command::new(&cargo);
    build
        .current_dir(&workspace)
        .env("CARGO_TARGET_DIR", &target)
        .args(["build", "-q"]);
    if release {
        build.arg("--release");
    }
    for name in crates {
        build.args(["-p", name]);
    }
    let output = build
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo}: {e}"));
    assert!(
        output.status.success(),
        "building {crates:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let profile = if release { "release" } else { "debug" };
    crates
        .iter()
        .map(|name| {
            let path = target.join(profile).join(format!(
                "{}{}{}",
                std::env::consts::DLL_PREFIX,
                name.replace('-', "_"),
                std::env::consts::DLL_SUFFIX
            ));
            assert!(path.is_file(), "{} was not built", path.display());
            path
        })
        .collect()
}
