//! A criterion measurement in TSC ticks, and the recorder the report reads its medians from.
//!
//! Every benchmark routine times a whole batch (`iters` iterations of several operations
//! each) between two fenced counter reads and reports ticks per operation; criterion's
//! samples are such batches. The recorder keeps each sample, so the report's median and
//! minimum are exactly what criterion measured. (The gate's statistic comes from several
//! processes instead: `processes.rs`.)
#![allow(dead_code)]
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::Throughput;
use knhk_kernel::clock::{ticks_fenced, Calibration};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// Ticks per operation as criterion's unit; `ns` shown beside it through the calibration.
pub struct Ticks {
    pub cal: Calibration,
}

impl Measurement for Ticks {
    type Intermediate = u64;
    type Value = f64;
    fn start(&self) -> u64 {
        ticks_fenced()
    }
    fn end(&self, i: u64) -> f64 {
        ticks_fenced().wrapping_sub(i) as f64
    }
    fn add(&self, a: &f64, b: &f64) -> f64 {
        a + b
    }
    fn zero(&self) -> f64 {
        0.0
    }
    fn to_f64(&self, v: &f64) -> f64 {
        *v
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        self
    }
}

impl ValueFormatter for Ticks {
    fn format_value(&self, value: f64) -> String {
        format!("{value:.2} ticks ({:.2} ns)", self.cal.to_ns(value))
    }
    fn scale_values(&self, _typical: f64, _values: &mut [f64]) -> &'static str {
        "ticks"
    }
    fn scale_throughputs(&self, _typical: f64, t: &Throughput, values: &mut [f64]) -> &'static str {
        if let Throughput::Elements(n) = t {
            for v in values {
                *v /= *n as f64;
            }
        }
        "ticks/elem"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ticks"
    }
}

/// Samples per benchmark: (iterations, ticks per operation summed over the iterations).
#[derive(Default)]
pub struct Recorder {
    samples: RefCell<BTreeMap<String, Vec<(u64, f64)>>>,
}

/// Median and minimum ticks per operation of one benchmark.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub samples: usize,
}

impl Recorder {
    pub fn push(&self, name: &str, iters: u64, per_op_total: f64) {
        self.samples
            .borrow_mut()
            .entry(name.to_string())
            .or_default()
            .push((iters, per_op_total));
    }

    /// Stats over the last `n` samples of `name` (criterion's measurement phase follows
    /// its warm-up, so the last `sample_size` calls are the measured samples).
    pub fn stats(&self, name: &str, n: usize) -> Option<Stats> {
        let map = self.samples.borrow();
        let all = map.get(name)?;
        let tail = &all[all.len().saturating_sub(n)..];
        let per: Vec<f64> = tail.iter().map(|&(i, t)| t / i as f64).collect();
        Some(stats_of(per))
    }

    pub fn names(&self) -> Vec<String> {
        self.samples.borrow().keys().cloned().collect()
    }
}

pub fn stats_of(mut per: Vec<f64>) -> Stats {
    per.sort_by(f64::total_cmp);
    let n = per.len();
    let median = if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        per[n / 2]
    } else {
        (per[n / 2 - 1] + per[n / 2]) / 2.0
    };
    Stats {
        median,
        min: per.first().copied().unwrap_or(f64::NAN),
        samples: n,
    }
}

/// Times `iters` calls of `f` (each doing `ops` operations) between two fenced counter
/// reads; panics when `f` reports a refused operation. Returns ticks per operation, summed.
#[inline(never)]
pub fn time_batch(iters: u64, ops: u64, f: &mut dyn FnMut() -> bool) -> f64 {
    let mut ok = true;
    let t0 = ticks_fenced();
    for _ in 0..iters {
        ok &= f();
    }
    let t1 = ticks_fenced();
    assert!(ok, "an operation was refused inside a measured batch");
    t1.wrapping_sub(t0) as f64 / ops as f64
}

/// Pins the calling thread to the last core (the first is busiest with interrupts).
pub fn pin_last_core() -> Option<usize> {
    let ids = core_affinity::get_core_ids()?;
    let id = *ids.last()?;
    core_affinity::set_for_current(id).then_some(id.id)
}
