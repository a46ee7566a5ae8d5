//! Test switches, compiled only with the `testing` feature (the shell's integration tests
//! enable it through a dev-dependency on this crate). Never part of a release build.

use std::time::Duration;

/// `KNHK_TESTING_HOLD_REGISTRATION=<workflow id>:<ms>`: holds the registration of that
/// workflow id this long between building the workflow and appending its log record (the
/// window in which a crash must not lose an acknowledged event). Logs one line when it
/// holds, so a test knows the window is open.
pub fn hold_registration(id: &str) {
    let Ok(spec) = std::env::var("KNHK_TESTING_HOLD_REGISTRATION") else {
        return;
    };
    let Some((held, ms)) = spec.rsplit_once(':') else {
        return;
    };
    if let (true, Ok(ms)) = (held == id, ms.parse::<u64>()) {
        tracing::warn!(workflow = %id, ms, "testing: registration held before its log append");
        std::thread::sleep(Duration::from_millis(ms));
    }
}
