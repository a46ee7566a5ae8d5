//! The C example builds through pkg-config against libknhk's build tree and runs without
//! LD_LIBRARY_PATH: what a C caller does.
use std::path::Path;
use std::process::Command;

#[test]
fn c_example_builds_with_pkg_config_and_runs() {
    // make and pkg-config are the C caller's tools, not cargo's: .ci/run installs them and
    // sets CI, where their absence is a failure; elsewhere the test says what it skipped.
    let have = |tool: &str| Command::new(tool).arg("--version").output().is_ok();
    if !(have("make") && have("pkg-config")) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but make or pkg-config is missing"
        );
        eprintln!(
            "c_example: make or pkg-config not installed; skipped (apt install make pkg-config)"
        );
        return;
    }
    let c_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../c");
    let out = Command::new("make")
        .arg("-C")
        .arg(&c_dir)
        .arg("build/example")
        .output()
        .expect("run make (needs make, cc and pkg-config)");
    assert!(
        out.status.success(),
        "make build/example failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Built through c/knhk-uninstalled.pc, whose rpath names c/build: no LD_LIBRARY_PATH.
    let run = Command::new(c_dir.join("build/example"))
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "example failed: {stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stdout.contains("case amount=250: complete after 5 steps"),
        "{stdout}"
    );
    assert!(
        stdout.contains("case amount=5000: complete after 6 steps"),
        "{stdout}"
    );
}
