//! Budgets: one readable file, `benches/budgets.toml`, a `[section]` per gate and one
//! `name = number` line per benchmark, so changing a budget is a one-line edit.
//!
//! Overrides, for proving a gate fails or for a slower machine, without editing the file:
//! - `KNHK_BUDGET_<NAME>=<number>` sets one budget (`NAME` upper-cased, e.g.
//!   `KNHK_BUDGET_WCP01_SEQUENCE_RUST=2`),
//! - `KNHK_BUDGET_SCALE=<factor>` multiplies every budget of the run (e.g. `0.1`).
use std::collections::BTreeMap;

/// The budgets file, embedded at compile time and re-read at run time when present (so an
/// edit takes effect without a rebuild).
pub const BUDGETS_TOML: &str = include_str!("../budgets.toml");

/// Budgets of one `[section]`.
#[derive(Debug, Clone, Default)]
pub struct Budgets {
    map: BTreeMap<String, f64>,
    scale: f64,
}

impl Budgets {
    /// The `[section]` of `benches/budgets.toml` with the environment overrides applied.
    pub fn load(section: &str) -> Budgets {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/budgets.toml");
        let text = std::fs::read_to_string(path).unwrap_or_else(|_| BUDGETS_TOML.to_string());
        let mut b = Budgets::parse(&text, section).unwrap_or_else(|e| panic!("{path}: {e}"));
        b.scale = match std::env::var("KNHK_BUDGET_SCALE") {
            Ok(v) => v
                .parse()
                .unwrap_or_else(|_| panic!("KNHK_BUDGET_SCALE={v}: not a number")),
            Err(_) => 1.0,
        };
        b
    }

    /// Parses one section of the budgets format (`# comment`, `[section]`, `key = number`).
    pub fn parse(text: &str, section: &str) -> Result<Budgets, String> {
        let mut map = BTreeMap::new();
        let mut current = String::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                current = name.trim().to_string();
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| format!("line {}: expected `name = number`", n + 1))?;
            if current == section {
                let v: f64 = v
                    .trim()
                    .parse()
                    .map_err(|_| format!("line {}: `{}` is not a number", n + 1, v.trim()))?;
                map.insert(k.trim().to_string(), v);
            }
        }
        Ok(Budgets { map, scale: 1.0 })
    }

    /// The budget for `name`, after overrides; `None` when it has none (reported, not gated).
    pub fn get(&self, name: &str) -> Option<f64> {
        let key = format!("KNHK_BUDGET_{}", name.to_ascii_uppercase());
        if let Ok(v) = std::env::var(&key) {
            return Some(
                v.parse()
                    .unwrap_or_else(|_| panic!("{key}={v}: not a number")),
            );
        }
        self.map.get(name).map(|b| b * self.scale)
    }

    /// The value in the file for `name`, without overrides (for sections that are printed,
    /// not gated).
    pub fn in_file(&self, name: &str) -> Option<f64> {
        self.map.get(name).copied()
    }

    /// Every name with a budget in the file.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sections_and_comments() {
        let t = "# top\n[ticks]\na = 8 # eight\nb=2.5\n[instructions]\na = 40\n";
        let b = Budgets::parse(t, "ticks").unwrap();
        assert_eq!(b.get("a"), Some(8.0));
        assert_eq!(b.get("b"), Some(2.5));
        assert_eq!(
            Budgets::parse(t, "instructions").unwrap().get("a"),
            Some(40.0)
        );
        assert!(Budgets::parse("[ticks]\nx = y\n", "ticks").is_err());
    }

    #[test]
    fn the_checked_in_file_parses() {
        assert!(
            Budgets::parse(BUDGETS_TOML, "ticks")
                .unwrap()
                .names()
                .count()
                > 0
        );
    }
}
