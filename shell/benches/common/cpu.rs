//! The CPU a bench ran on, for its output (figures are compared on one machine only).

/// The `model name` line of `/proc/cpuinfo` (empty where it cannot be read).
pub fn model_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default()
}
