//! The dashboard in a real browser: runs `tools/dashboard-test/dashboard.test.mjs` (Debian's
//! Chromium driven by playwright-core) against this build's `ovasabi`, which it starts with
//! `ovasabi up` on a free port. Screenshots of every view land in
//! `target/dashboard-screenshots/`.
//!
//! Needs Node.js, `/usr/bin/chromium` (`apt-get install chromium`) and the test's package
//! (`cd tools/dashboard-test && npm ci`). Without them the test says so and skips; with
//! `OVASABI_REQUIRE_SERVICES=1` (as `.ci/run` sets) it fails instead.

use std::path::{Path, PathBuf};
use std::process::Command;

const CHROMIUM: &str = "/usr/bin/chromium";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the workspace holds the crate")
        .to_path_buf()
}

/// What is missing to run the browser test, if anything.
fn missing(tools: &Path) -> Option<String> {
    if Command::new("node").arg("--version").output().is_err() {
        return Some("Node.js (`node`) is not installed".to_owned());
    }
    if !Path::new(CHROMIUM).exists() {
        return Some(format!(
            "Chromium is not at {CHROMIUM}: run `apt-get install chromium`"
        ));
    }
    if !tools.join("node_modules/playwright-core").is_dir() {
        return Some(
            "playwright-core is not installed: run `(cd tools/dashboard-test && npm ci)`"
                .to_owned(),
        );
    }
    None
}

#[test]
fn the_dashboard_shows_the_platform_in_a_real_browser() {
    let root = workspace();
    let tools = root.join("tools/dashboard-test");
    if let Some(why) = missing(&tools) {
        let required = std::env::var("OVASABI_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
        assert!(!required, "OVASABI_REQUIRE_SERVICES=1 but {why}");
        eprintln!("skipped: {why}");
        return;
    }
    let out = root.join("target/dashboard-screenshots");
    let status = Command::new("node")
        .arg(tools.join("dashboard.test.mjs"))
        .arg("--bin")
        .arg(env!("CARGO_BIN_EXE_ovasabi"))
        .arg("--out")
        .arg(&out)
        .arg("--chromium")
        .arg(CHROMIUM)
        .current_dir(&tools)
        .env_remove("OVASABI_DATA_DIR")
        .status()
        .expect("node runs");
    assert!(
        status.success(),
        "the browser test failed ({status}); its output is above, its screenshots in {}",
        out.display()
    );
}
