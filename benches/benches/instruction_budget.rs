//! `cargo bench -p knhk-benches --bench instruction_budget`: the deterministic gate.
//!
//! Tick counts move with the machine and its neighbours; instruction counts do not. For each
//! benchmark with a budget in `benches/budgets.toml` `[instructions]`, this binary runs itself
//! twice under `valgrind --tool=callgrind` (as a child that executes the benchmark's
//! iteration `N1` and then `N2` times) and takes the difference of the two instruction totals
//! divided by the operations in between: process start-up, net building and the valgrind
//! runtime cancel out, and what is left is instructions per operation, identical from run to
//! run on the same binary. Under valgrind the CPU reports no AVX-512 (AVX2 where the host has
//! it): the block path is measured as `beat_block_scalar` and `beat_block_avx2`.
//!
//! Prints a table of instructions per operation against the budgets; exits non-zero naming
//! every benchmark over its budget. `KNHK_BUDGET_<NAME>` / `KNHK_BUDGET_SCALE` override.
use knhk_benches::budgets::Budgets;
use knhk_benches::{core_patterns, wcp04_exclusive_choice_bits, BeatBatch, BlockBatch, Scenario};
use knhk_kernel::BlockPath;
use std::hint::black_box;
use std::process::Command;

const N1: u64 = 200;
const N2: u64 = 1200;

/// Runs `name` for `iters` iterations; returns the operations per iteration.
fn run_child(name: &str, iters: u64) -> u64 {
    let mut scenarios = core_patterns();
    scenarios.push(wcp04_exclusive_choice_bits());
    let find = |suffix: &str| -> Option<&Scenario> {
        scenarios
            .iter()
            .find(|s| format!("{}_{suffix}", s.name) == name)
    };
    if let Some(s) = find("rust") {
        let mut case = s.start;
        for _ in 0..iters {
            assert!(s.run_rust(black_box(&mut case)));
        }
        return s.ops();
    }
    if let Some(s) = find("c") {
        let mut case = *s.start.as_raw();
        for _ in 0..iters {
            assert!(s.run_c(black_box(s.net.as_raw()), black_box(&mut case)));
        }
        return s.ops();
    }
    if name == "beat_batch" {
        let b = BeatBatch::sequence(64);
        let mut cases = b.start.clone();
        for _ in 0..iters {
            assert!(b.run(black_box(&mut cases)));
        }
        return b.events();
    }
    if let Some(path) = block_path_of(name) {
        let b = BlockBatch::sequence(8);
        let mut blocks = b.start.clone();
        let mut st = vec![0u8; b.start.len() * 8];
        for _ in 0..iters {
            assert!(b.run(black_box(&mut blocks), &mut st, path));
        }
        return b.events();
    }
    panic!("instruction_budget: unknown benchmark {name}");
}

/// The block path a `beat_block_*` benchmark names: `beat_block_scalar` and
/// `beat_block_avx2` (valgrind's CPU has AVX2 where the host has it, never AVX-512).
fn block_path_of(name: &str) -> Option<BlockPath> {
    match name {
        "beat_block_scalar" => Some(BlockPath::Scalar),
        "beat_block_avx2" => Some(BlockPath::Avx2),
        _ => None,
    }
}

/// Instructions executed by the child running `name` for `iters` iterations.
fn instructions(name: &str, iters: u64) -> Result<u64, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out =
        std::env::temp_dir().join(format!("knhk-ir-{}-{name}-{iters}.out", std::process::id()));
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg("--quiet")
        .arg(&exe)
        .env("KNHK_IR_CHILD", name)
        .env("KNHK_IR_ITERS", iters.to_string())
        .status()
        .map_err(|e| format!("cannot run valgrind ({e}); install it: apt-get install valgrind"))?;
    if !status.success() {
        return Err(format!("valgrind run of {name} failed: {status}"));
    }
    let text = std::fs::read_to_string(&out).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&out);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no instruction total in callgrind output for {name}"))
}

fn main() {
    if let Ok(name) = std::env::var("KNHK_IR_CHILD") {
        let iters = std::env::var("KNHK_IR_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1);
        run_child(&name, iters);
        return;
    }
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let budgets = Budgets::load("instructions");
    let names: Vec<String> = budgets
        .names()
        .filter(|n| filters.is_empty() || filters.iter().any(|f| n.contains(f.as_str())))
        .map(String::from)
        .collect();
    println!("knhk instruction_budget: valgrind --tool=callgrind, (I({N2}) - I({N1})) / ops");
    println!(
        "| {:<34} | {:>14} | {:>10} | {:<7} |",
        "benchmark", "instr / op", "budget", "verdict"
    );
    println!("|{:-<36}|{:->16}|{:->12}|{:-<9}|", "", "", "", "");
    let mut offenders = Vec::new();
    for name in &names {
        if let Some(path) = block_path_of(name) {
            if !path.supported() {
                // a CPU without the path (under valgrind: the host's AVX2, if it has it)
                println!("| {name:<34} | {:>14} | {:>10} | SKIPPED |", "-", "-");
                println!("instruction budget gate: {name} SKIPPED: this CPU has no {path:?} path");
                continue;
            }
        }
        let ops = run_child_ops(name);
        let r = instructions(name, N1).and_then(|a| Ok((a, instructions(name, N2)?)));
        let (a, b) = match r {
            Ok(v) => v,
            Err(e) => {
                eprintln!("instruction budget gate: {e}");
                std::process::exit(2);
            }
        };
        let per_op = b.saturating_sub(a) as f64 / ((N2 - N1) * ops) as f64;
        let budget = budgets.get(name).expect("listed from the budgets");
        let ok = per_op <= budget;
        println!(
            "| {:<34} | {:>14.2} | {:>10} | {:<7} |",
            name,
            per_op,
            budget,
            if ok { "ok" } else { "OVER" }
        );
        if !ok {
            offenders.push(format!(
                "{name} ({per_op:.2} instructions/op > budget {budget})"
            ));
        }
    }
    if offenders.is_empty() {
        println!("instruction budget gate: ok ({} benchmarks)", names.len());
    } else {
        for o in &offenders {
            eprintln!("instruction budget gate: OVER BUDGET: {o}");
        }
        eprintln!(
            "instruction budget gate: FAILED ({} over budget); budgets in benches/budgets.toml",
            offenders.len()
        );
        std::process::exit(1);
    }
}

/// Operations per iteration of `name` (runs no iteration).
fn run_child_ops(name: &str) -> u64 {
    run_child(name, 0)
}
