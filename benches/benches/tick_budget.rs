//! `cargo bench -p knhk-benches --bench tick_budget`: criterion benches in TSC ticks, peers side
//! by side, and the tick-budget gate.
//!
//! Prints the calibration (ticks per ns) once, runs every benchmark with a short criterion
//! measurement, prints a table of medians against `benches/budgets.toml` `[ticks]`, and exits
//! non-zero naming each benchmark whose median exceeds its budget plus the stated margin
//! (`KNHK_TICK_MARGIN`, default 25%), confirmed by up to four independent re-measurements,
//! because the machines are shared and noisy.
//! `KNHK_BENCH_LONG=1` measures longer (for docs/performance.md); `KNHK_BUDGET_*` override
//! budgets (see `budgets.rs`).
mod common;

use common::handoff;
use common::measure::{pin_last_core, remeasure, time_batch, Recorder, Stats, Ticks};
use common::peers::{self, fsm, HashNet};
use criterion::Criterion;
use knhk_benches::budgets::Budgets;
use knhk_benches::{
    coin_flips, core_patterns, other_patterns, BeatBatch, BlockBatch, Scenario, Workflow,
};
use knhk_kernel::clock::Calibration;
use knhk_kernel::{Block, BlockPath, Case, Event, Op};
use std::hint::black_box;
use std::time::Duration;

/// Benchmarks registered in this run: name, operations per iteration, the routine.
struct Bench<'a> {
    name: String,
    group: &'static str,
    ops: u64,
    f: Box<dyn FnMut() -> bool + 'a>,
}

const BATCH_CASES: usize = 512;

/// Independent re-measurements that confirm a median over budget before it fails the gate.
const REMEASUREMENTS: usize = 4;

/// The margin over a budget before the gate fails, as a fraction: `KNHK_TICK_MARGIN`, default
/// 0.25 (a shared machine's medians move by a tick from run to run). 0 gates on the budget.
fn tick_margin() -> f64 {
    match std::env::var("KNHK_TICK_MARGIN") {
        Ok(v) => match v.parse::<f64>() {
            Ok(m) if m >= 0.0 => m,
            _ => {
                eprintln!("tick_budget: KNHK_TICK_MARGIN={v}: not a fraction >= 0");
                std::process::exit(2);
            }
        },
        Err(_) => 0.25,
    }
}

#[allow(clippy::needless_range_loop)] // step-major loops over per-case arrays read clearer indexed
fn main() {
    // The handoff pins its two threads to the first two cores: list them before this thread
    // is pinned (a pinned thread sees only its own core).
    let all_cores = core_affinity::get_core_ids().unwrap_or_default();
    let pinned = pin_last_core();
    let cal = Calibration::measure(Duration::from_millis(100));
    let long = std::env::var_os("KNHK_BENCH_LONG").is_some();
    println!("knhk tick_budget: calibration {cal}");
    println!(
        "knhk tick_budget: pinned to core {}, {} mode, beat: scalar (Net::beat), SIMD path {}",
        pinned.map_or("none".to_string(), |c| c.to_string()),
        if long { "long" } else { "short" },
        beat_path_name(),
    );

    let sample_size = if long { 60 } else { 20 };
    let mut criterion = Criterion::default()
        .with_measurement(Ticks { cal })
        .sample_size(sample_size)
        .warm_up_time(Duration::from_millis(if long { 1000 } else { 250 }))
        .measurement_time(Duration::from_millis(if long { 3000 } else { 600 }))
        .without_plots()
        .configure_from_args();

    // ---- the scenarios and the state they run on ----
    let core = core_patterns();
    let wcp04_bits = knhk_benches::wcp04_exclusive_choice_bits();
    let other = other_patterns();
    let beat = BeatBatch::sequence(64);
    let block_batch = BlockBatch::sequence(8);
    let block_batch_16 = BlockBatch::sequence_of(16, 32);
    let block_ring = BlockBatch::ring_staggered(8);
    let workflow = Workflow::new();
    let flips = coin_flips(BATCH_CASES, 0x5eed);
    let hashnet = HashNet::workflow();

    let mut benches: Vec<Bench> = Vec::new();
    let scen_rust = |s: &'static Scenario, suffix: &str| {
        let mut case = s.start;
        Bench {
            name: format!("{}_{suffix}", s.name),
            group: "patterns",
            ops: s.ops(),
            f: Box::new(move || s.run_rust(black_box(&mut case))),
        }
    };
    let scen_c = |s: &'static Scenario| {
        let mut case = *s.start.as_raw();
        let raw: &knhk_sys::knhk_net_t = s.net.as_raw();
        Bench {
            name: format!("{}_c", s.name),
            group: "patterns",
            ops: s.ops(),
            f: Box::new(move || s.run_c(black_box(raw), black_box(&mut case))),
        }
    };
    // Scenarios live for the whole run.
    let core: &'static [Scenario] = Box::leak(core.into_boxed_slice());
    let wcp04_bits: &'static Scenario = Box::leak(Box::new(wcp04_bits));
    let other: &'static [Scenario] = Box::leak(other.into_boxed_slice());
    for s in core.iter().chain(std::iter::once(wcp04_bits)) {
        benches.push(scen_rust(s, "rust"));
        benches.push(scen_c(s));
    }
    for s in other {
        benches.push(scen_rust(s, "rust"));
    }

    // ---- the beat: 64 cases x 62 steps, 8 distinct cases per beat ----
    {
        let b = &beat;
        let mut cases = b.start.clone();
        benches.push(Bench {
            name: "beat_batch".into(),
            group: "beat",
            ops: b.events(),
            f: Box::new(move || b.run(black_box(&mut cases))),
        });
        let mut cases = b.start.clone();
        benches.push(Bench {
            name: "beat_batch_simd".into(),
            group: "beat",
            ops: b.events(),
            f: Box::new(move || run_beats_simd(b, black_box(&mut cases))),
        });
    }

    // ---- the same 64 cases x 62 steps as blocks of 8 (struct of arrays), one call per step ----
    // (and a 16-task sequence, 32 blocks: the table lookups of nets of up to 16 tasks; and a
    // 17-task ring with every block's lanes at eight different tasks: no lockstep)
    for (name, path, b) in [
        ("beat_block", BlockPath::Best, &block_batch),
        ("beat_block_scalar", BlockPath::Scalar, &block_batch),
        ("beat_block_16tasks", BlockPath::Best, &block_batch_16),
        ("beat_block_staggered", BlockPath::Best, &block_ring),
    ] {
        let mut blocks = b.start.clone();
        let mut st = vec![0u8; b.start.len() * 8];
        benches.push(Bench {
            name: name.into(),
            group: "beat",
            ops: b.events(),
            f: Box::new(move || b.run(black_box(&mut blocks), &mut st, path)),
        });
    }

    // ---- peers on the 8-event workflow: single case, and 512 independent cases ----
    let wf = &workflow;
    let starts: Vec<Case> = flips.iter().map(|&r| wf.case(r)).collect();
    let events: Vec<[u32; 8]> = flips.iter().map(|&r| wf.events_for(r)).collect();
    {
        let (starts, events) = (starts.clone(), events.clone());
        let mut k = 0usize;
        benches.push(Bench {
            name: "peer_knhk_single".into(),
            group: "peers",
            ops: 8,
            f: Box::new(move || {
                k = (k + 1) & (BATCH_CASES - 1);
                let mut case = starts[k];
                let mut ok = true;
                for &t in &events[k] {
                    ok &= wf.net.fire(black_box(&mut case), t).is_ok();
                }
                ok
            }),
        });
    }
    {
        // 512 cases, 8 steps, a beat per 8 cases and step.
        let mut beats: Vec<[Event; 8]> = Vec::new();
        for step in 0..8 {
            for g in 0..BATCH_CASES / 8 {
                beats.push(core::array::from_fn(|l| {
                    let c = g * 8 + l;
                    Event::new(c as u32, Op::Fire, events[c][step] as u8)
                }));
            }
        }
        let start = starts.clone();
        let mut cases = starts.clone();
        benches.push(Bench {
            name: "peer_knhk_batch512".into(),
            group: "peers",
            ops: 8 * BATCH_CASES as u64,
            f: Box::new(move || {
                cases.copy_from_slice(&start);
                let mut st = [0u8; 8];
                let mut bad = 0u8;
                for b in &beats {
                    if wf.net.beat(black_box(&mut cases), b, &mut st).is_err() {
                        return false;
                    }
                    bad |= st.iter().fold(0, |a, &s| a | s);
                }
                bad == 0
            }),
        });
    }
    {
        // 512 cases as 64 blocks, 8 steps, one block_fire call per step over all blocks.
        let nblocks = BATCH_CASES / 8;
        let mut start: Vec<Block> = vec![Block::new(&wf.net).expect("block"); nblocks];
        for (c, case) in starts.iter().enumerate() {
            start[c / 8].set(c % 8, case);
        }
        let steps: Vec<Vec<u8>> = (0..8)
            .map(|step| (0..BATCH_CASES).map(|c| events[c][step] as u8).collect())
            .collect();
        let mut blocks = start.clone();
        let mut st = vec![0u8; BATCH_CASES];
        benches.push(Bench {
            name: "peer_knhk_blocks512".into(),
            group: "peers",
            ops: 8 * BATCH_CASES as u64,
            f: Box::new(move || {
                blocks.copy_from_slice(&start);
                let mut bad = 0u8;
                for tasks in &steps {
                    if wf
                        .net
                        .block_fire(black_box(&mut blocks), tasks, &mut st, BlockPath::Best)
                        .is_err()
                    {
                        return false;
                    }
                    bad |= st.iter().fold(0, |a, &s| a | s);
                }
                bad == 0
            }),
        });
    }
    {
        let hn = &hashnet;
        let names: Vec<[&str; 8]> = flips.iter().map(|&r| peers::event_names(r)).collect();
        let mut k = 0usize;
        let mut case = hn.case(0);
        let (f1, n1) = (flips.clone(), names.clone());
        benches.push(Bench {
            name: "peer_hashmap_single".into(),
            group: "peers",
            ops: 8,
            f: Box::new(move || {
                k = (k + 1) & (BATCH_CASES - 1);
                hn.reset(&mut case, f1[k]);
                let mut ok = true;
                for name in n1[k] {
                    ok &= hn.fire(black_box(&mut case), name);
                }
                ok
            }),
        });
        let mut cases: Vec<_> = flips.iter().map(|&r| hn.case(r)).collect();
        let f2 = flips.clone();
        benches.push(Bench {
            name: "peer_hashmap_batch512".into(),
            group: "peers",
            ops: 8 * BATCH_CASES as u64,
            f: Box::new(move || {
                for (c, &r) in cases.iter_mut().zip(&f2) {
                    hn.reset(c, r);
                }
                let mut ok = true;
                for step in 0..8 {
                    for (c, n) in cases.iter_mut().zip(&names) {
                        ok &= hn.fire(black_box(c), n[step]);
                    }
                }
                ok
            }),
        });
    }
    {
        let evs: Vec<[fsm::Task; 8]> = flips.iter().map(|&r| fsm::events(r)).collect();
        let f1 = flips.clone();
        let e1 = evs.clone();
        let mut k = 0usize;
        benches.push(Bench {
            name: "peer_statig_single".into(),
            group: "peers",
            ops: 8,
            f: Box::new(move || {
                k = (k + 1) & (BATCH_CASES - 1);
                let mut m = fsm::machine(f1[k]);
                for e in &e1[k] {
                    black_box(&mut m).handle(e);
                }
                black_box(m.state()) == &fsm::State::End {}
            }),
        });
        let f2 = flips.clone();
        let mut machines: Vec<_> = flips.iter().map(|&r| fsm::machine(r)).collect();
        benches.push(Bench {
            name: "peer_statig_batch512".into(),
            group: "peers",
            ops: 8 * BATCH_CASES as u64,
            f: Box::new(move || {
                for (m, &r) in machines.iter_mut().zip(&f2) {
                    *m = fsm::machine(r);
                }
                for step in 0..8 {
                    for (m, e) in machines.iter_mut().zip(&evs) {
                        black_box(m).handle(&e[step]);
                    }
                }
                machines.iter().all(|m| m.state() == &fsm::State::End {})
            }),
        });
    }

    // ---- run them all under criterion ----
    let recorder = Recorder::default();
    for group in ["patterns", "beat", "peers"] {
        let mut g = criterion.benchmark_group(group);
        for b in benches.iter_mut().filter(|b| b.group == group) {
            let (name, ops, rec) = (b.name.clone(), b.ops, &recorder);
            let f = &mut b.f;
            g.bench_function(&b.name, |bencher| {
                bencher.iter_custom(|iters| {
                    let t = time_batch(iters, ops, &mut **f);
                    rec.push(&name, iters, t);
                    t
                })
            });
        }
        g.finish();
    }

    // ---- the handoff ----
    let handoff_lat = if criterion_filter_allows("handoff") {
        Some(handoff::measure(
            &all_cores,
            if long { 1_000_000 } else { 200_000 },
        ))
    } else {
        None
    };

    criterion.final_summary();

    // ---- report and gate ----
    let section = std::env::var("KNHK_TICK_BUDGETS").unwrap_or_else(|_| "ticks".into());
    let budgets = Budgets::load(&section);
    let targets = Budgets::load("targets");
    let margin = tick_margin();
    let stats = |n: &str| recorder.stats(n, sample_size);
    println!();
    println!(
        "knhk tick_budget — calibration {:.4} ticks/ns; medians over {sample_size} criterion \
         samples; budgets [{section}] of benches/budgets.toml, limit = budget + {:.0}% margin \
         (KNHK_TICK_MARGIN={margin}); target column: issue 3 targets, ! = not met",
        cal.ticks_per_ns,
        margin * 100.0
    );
    println!(
        "| {:<34} | {:>12} | {:>12} | {:>10} | {:>6} | {:>6} | {:<7} | {:>6} |",
        "benchmark",
        "median ticks",
        "min ticks",
        "median ns",
        "budget",
        "limit",
        "verdict",
        "target"
    );
    println!(
        "|{:-<36}|{:->14}|{:->14}|{:->12}|{:->8}|{:->8}|{:-<9}|{:->8}|",
        "", "", "", "", "", "", "", ""
    );
    let mut offenders = Vec::new();
    for b in benches.iter_mut() {
        let Some(mut s) = stats(&b.name) else {
            continue;
        };
        // beat_block's budget is for the vector path: without AVX-512 it runs the scalar
        // path, reported (and guarded by the instruction gate) but not held to 2 ticks.
        let budget = if b.name == "beat_block" && beat_path_name() != "avx512" {
            None
        } else {
            budgets.get(&b.name)
        };
        let limit = budget.map(|v| v * (1.0 + margin));
        let mut verdict = "-".to_string();
        if let Some(limit) = limit {
            // Confirm an apparent failure, outside criterion, up to four times spread over
            // about two seconds: a shared machine can stall one benchmark for a whole
            // criterion run and for a while after it. The best median of these counts.
            for attempt in 0..REMEASUREMENTS {
                if s.median <= limit {
                    break;
                }
                if attempt > 0 {
                    std::thread::sleep(Duration::from_millis(500));
                }
                let r = remeasure(b.ops, 31, 2_000_000, &mut *b.f);
                if r.median < s.median {
                    s = Stats {
                        median: r.median,
                        min: s.min.min(r.min),
                        samples: r.samples,
                    };
                }
            }
            verdict = if s.median <= limit {
                "ok".into()
            } else {
                "OVER".into()
            };
            if s.median > limit {
                offenders.push(format!(
                    "{} (median {:.2} ticks > limit {limit:.2} = budget {} + {:.0}%)",
                    b.name,
                    s.median,
                    budget.unwrap_or_default(),
                    margin * 100.0
                ));
            }
        }
        let target = targets.in_file(&b.name).map_or("-".to_string(), |d| {
            format!("{d}{}", if s.median <= d { "" } else { "!" })
        });
        println!(
            "| {:<34} | {:>12.2} | {:>12.2} | {:>10.2} | {:>6} | {:>6} | {:<7} | {:>6} |",
            b.name,
            s.median,
            s.min,
            cal.to_ns(s.median),
            budget.map_or("-".to_string(), |v| format!("{v}")),
            limit.map_or("-".to_string(), |v| format!("{v:.2}")),
            verdict,
            target
        );
    }

    // peers: ratio to knhk
    let ratio = |peer: &str, knhk: &str| -> Option<(f64, f64)> {
        let p = stats(peer)?.median;
        let k = stats(knhk)?.median;
        Some((p, p / k))
    };
    println!();
    println!(
        "| {:<26} | {:>14} | {:>14} |",
        "peer (8-event workflow)", "ticks/event", "x knhk"
    );
    println!("|{:-<28}|{:->16}|{:->16}|", "", "", "");
    for (peer, knhk) in [
        ("peer_knhk_single", "peer_knhk_single"),
        ("peer_statig_single", "peer_knhk_single"),
        ("peer_hashmap_single", "peer_knhk_single"),
        ("peer_knhk_blocks512", "peer_knhk_blocks512"),
        ("peer_knhk_batch512", "peer_knhk_blocks512"),
        ("peer_statig_batch512", "peer_knhk_blocks512"),
        ("peer_hashmap_batch512", "peer_knhk_blocks512"),
    ] {
        if let Some((p, r)) = ratio(peer, knhk) {
            println!("| {peer:<26} | {p:>14.2} | {r:>14.2} |");
        }
    }
    if let Some(l) = &handoff_lat {
        println!();
        println!(
            "handoff (SPSC ring, one event, one-way, {} samples, threads {}): p50 {} ticks ({:.0} ns), p99 {} ticks ({:.0} ns), min {} ticks",
            l.sorted.len(),
            if l.pinned { "pinned to cores 0 and 1" } else { "not pinned" },
            l.pct(0.5),
            cal.to_ns(l.pct(0.5) as f64),
            l.pct(0.99),
            cal.to_ns(l.pct(0.99) as f64),
            l.sorted[0],
        );
    }
    for name in budgets.names() {
        if stats(name).is_none() && !filtered() {
            offenders.push(format!("{name} (has a budget but was not measured)"));
        }
    }
    println!();
    if offenders.is_empty() {
        println!("tick budget gate: ok");
    } else {
        for o in &offenders {
            eprintln!("tick budget gate: OVER BUDGET: {o}");
        }
        eprintln!(
            "tick budget gate: FAILED ({} over budget); budgets in benches/budgets.toml",
            offenders.len()
        );
        std::process::exit(1);
    }
}

/// The scalar beat over the same batch (libknhk's portable path, forced).
fn run_beats_simd(b: &BeatBatch, cases: &mut [Case]) -> bool {
    cases.copy_from_slice(&b.start);
    let raw_net: *const knhk_sys::knhk_net_t = b.net.as_raw();
    let mut st = [0u8; 8];
    let mut bad = 0u32;
    for beat in &b.beats {
        // SAFETY: Case and Event are repr(transparent) over the C structs; the net is sealed
        // and alive; every case_index < cases.len(); 8 statuses fit `st`.
        let s = unsafe {
            knhk_sys::knhk_beat_simd(
                raw_net,
                cases.as_mut_ptr().cast(),
                cases.len() as u32,
                beat.as_ptr().cast(),
                8,
                st.as_mut_ptr(),
            )
        };
        bad |= s | st.iter().fold(0, |a, &s| a | s as u32);
    }
    bad == 0
}

fn beat_path_name() -> &'static str {
    // SAFETY: a pure query with no arguments.
    match unsafe { knhk_sys::knhk_beat_path() } {
        knhk_sys::KNHK_BEAT_PATH_AVX512 => "avx512",
        _ => "scalar",
    }
}

/// True when criterion was given a name filter on the command line.
fn filtered() -> bool {
    std::env::args().skip(1).any(|a| !a.starts_with('-'))
}

fn criterion_filter_allows(name: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
}
