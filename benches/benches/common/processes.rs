//! The gate's measurement: every gated bench sampled in several short child processes, and the
//! statistic the gate compares with the budget.
//!
//! Why processes: on a shared VM a bench's median moves between processes far more than inside
//! one (docs/performance.md, "The gates", has the measurement), so one process, however long,
//! is one draw of that noise. The parent re-runs its own executable `processes` times in turn
//! with `KNHK_TICK_CHILD=1`; each child pins itself to the last core, samples every gated
//! bench and prints one line per bench (`knhk-tick-child ...`, read back here). The statistic
//! gated is the **minimum over the processes of each process's median** ("min of medians"):
//! a process's median is immune to interrupts inside it, and the minimum over processes to a
//! process that ran while the host was busy; a slower code path moves every process, so the
//! gate still fails (proved in docs/performance.md and by `.ci/gates`).
#![allow(dead_code)]
use super::measure::time_batch;
use knhk_kernel::clock::ticks_fenced;
use std::io::Write;
use std::process::Command;

/// Marks a child's result line on its stdout (criterion and the child print nothing else
/// starting with it).
const LINE_TAG: &str = "knhk-tick-child";

/// Samples per bench per child, each a batch of about `SAMPLE_TICKS` ticks.
pub const CHILD_SAMPLES: usize = 41;
const SAMPLE_TICKS: u64 = 1_000_000;
/// Warm-up per bench before its samples (caches, branch predictors, the core's clock).
const WARM_TICKS: u64 = 40_000_000;

/// What one child measured for one bench.
#[derive(Debug, Clone)]
pub struct ProcessRun {
    /// The logical CPU the child ran on (after the samples).
    pub cpu: i64,
    /// TSC ticks per core cycle just before the samples (a chain of dependent adds): the
    /// core's clock against the TSC at that moment.
    pub ticks_per_cycle: f64,
    /// TSC ticks per add of eight independent chains just before the samples: what the core's
    /// issue width delivers to this thread (a hyperthread sibling on the host takes its share,
    /// which the dependent chain above, one add per cycle, does not notice).
    pub ticks_per_wide_add: f64,
    /// Involuntary context switches of the child during the samples.
    pub preempted: i64,
    /// Steal time of the child's CPU during the samples, in USER_HZ ticks (/proc/stat): time
    /// the hypervisor ran something else on it.
    pub steal: i64,
    /// How busy the other CPUs were while the bench warmed up and sampled (0..1, /proc/stat,
    /// 10 ms resolution): a neighbour on the machine.
    pub others_busy: f64,
    /// The bench's mutable state (case, cases, blocks), address modulo 4096: data placement.
    pub state_page_offset: u64,
    /// Ticks per operation of every sample, sorted.
    pub samples: Vec<f64>,
}

impl ProcessRun {
    pub fn percentile(&self, q: f64) -> f64 {
        percentile(&self.samples, q)
    }
    pub fn median(&self) -> f64 {
        self.percentile(0.5)
    }
}

/// The `q` quantile of sorted samples (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// A bench the child measures: its name, the mutable state's address, and the routine.
pub struct ChildBench<'a> {
    pub name: &'a str,
    pub state_addr: usize,
    pub ops: u64,
    pub f: &'a mut dyn FnMut() -> bool,
}

/// True in a child started by [`run_children`].
pub fn is_child() -> bool {
    std::env::var_os("KNHK_TICK_CHILD").is_some()
}

/// The child's work: samples every bench and prints one line each.
pub fn child_main(benches: Vec<ChildBench<'_>>) {
    let mut out = std::io::stdout().lock();
    for b in benches {
        let ticks_per_cycle = ticks_per_cycle();
        let ticks_per_wide_add = ticks_per_wide_add();
        let iters = size_batch(b.f);
        let others0 = other_cpus_jiffies();
        let warm_until = ticks_fenced() + WARM_TICKS;
        while ticks_fenced() < warm_until {
            time_batch(iters, b.ops, b.f);
        }
        let (cs0, steal0) = (involuntary_switches(), steal_of_this_cpu());
        let mut samples: Vec<f64> = (0..CHILD_SAMPLES)
            .map(|_| time_batch(iters, b.ops, b.f) / iters as f64)
            .collect();
        let (cs1, steal1) = (involuntary_switches(), steal_of_this_cpu());
        let others1 = other_cpus_jiffies();
        let (busy, total) = (others1.0 - others0.0, others1.1 - others0.1);
        let others_busy = if total > 0 {
            busy as f64 / total as f64
        } else {
            f64::NAN
        };
        samples.sort_by(f64::total_cmp);
        let list: Vec<String> = samples.iter().map(|s| format!("{s:.4}")).collect();
        writeln!(
            out,
            "{LINE_TAG} {} {} {:.4} {:.4} {} {} {:.2} {} {}",
            b.name,
            current_cpu(),
            ticks_per_cycle,
            ticks_per_wide_add,
            cs1 - cs0,
            steal1 - steal0,
            others_busy,
            b.state_addr % 4096,
            list.join(",")
        )
        .expect("stdout");
    }
}

/// Iterations per sample so that one sample takes about `SAMPLE_TICKS`.
fn size_batch(f: &mut dyn FnMut() -> bool) -> u64 {
    let mut iters = 1u64;
    while iters < 1 << 30 && (time_batch(iters, 1, f) as u64) < SAMPLE_TICKS {
        iters *= 2;
    }
    iters
}

/// Per bench name, one run per child process, in the order they ran.
pub type Runs = Vec<(String, Vec<ProcessRun>)>;

/// Runs `processes` children of this executable in turn (never two at once: they would share
/// the last core), passing `args` through, and adds what they measured to `runs`. `only`
/// restricts the children to those benches (a confirmation round). Exits 2 when a child fails.
pub fn run_children(runs: &mut Runs, processes: usize, args: &[String], only: Option<&[String]>) {
    let exe = std::env::current_exe().expect("current_exe");
    for p in 0..processes {
        let mut cmd = Command::new(&exe);
        cmd.args(args).env("KNHK_TICK_CHILD", "1");
        if let Some(names) = only {
            cmd.env("KNHK_TICK_CHILD_ONLY", names.join(","));
        }
        let out = cmd.output().unwrap_or_else(|e| {
            eprintln!("tick_budget: cannot start child process: {e}");
            std::process::exit(2)
        });
        if !out.status.success() {
            eprintln!(
                "tick_budget: child process {p} failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            std::process::exit(2);
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some((name, run)) = parse_line(line) else {
                continue;
            };
            match runs.iter_mut().find(|(n, _)| *n == name) {
                Some((_, r)) => r.push(run),
                None => runs.push((name, vec![run])),
            }
        }
    }
}

/// In a child of a confirmation round: whether `name` is one of the benches asked for.
pub fn child_wants(name: &str) -> bool {
    match std::env::var("KNHK_TICK_CHILD_ONLY") {
        Ok(list) => list.split(',').any(|n| n == name),
        Err(_) => true,
    }
}

fn parse_line(line: &str) -> Option<(String, ProcessRun)> {
    let mut w = line.strip_prefix(LINE_TAG)?.split_whitespace();
    let name = w.next()?.to_string();
    let cpu = w.next()?.parse().ok()?;
    let ticks_per_cycle = w.next()?.parse().ok()?;
    let ticks_per_wide_add = w.next()?.parse().ok()?;
    let preempted = w.next()?.parse().ok()?;
    let steal = w.next()?.parse().ok()?;
    let others_busy = w.next()?.parse().ok()?;
    let state_page_offset = w.next()?.parse().ok()?;
    let samples = w
        .next()?
        .split(',')
        .map(|s| s.parse().ok())
        .collect::<Option<Vec<f64>>>()?;
    Some((
        name,
        ProcessRun {
            cpu,
            ticks_per_cycle,
            ticks_per_wide_add,
            preempted,
            steal,
            others_busy,
            state_page_offset,
            samples,
        },
    ))
}

/// The gate's statistic over the processes: the minimum of their medians.
pub fn min_of_medians(runs: &[ProcessRun]) -> f64 {
    runs.iter().map(ProcessRun::median).fold(f64::NAN, f64::min)
}

/// TSC ticks per core cycle now: a chain of dependent register adds (one cycle each; a chain of
/// immediate adds can be folded away by recent cores, see benches/tools/clock_ratio.c).
#[inline(never)]
pub fn ticks_per_cycle() -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        const ROUNDS: u64 = 250_000;
        let (mut x, y) = (1u64, 3u64);
        let t0 = ticks_fenced();
        for _ in 0..ROUNDS {
            // SAFETY: register arithmetic only; no memory, no stack, flags clobbered (default).
            unsafe {
                std::arch::asm!(
                    "add {x}, {y}",
                    "add {x}, {y}",
                    "add {x}, {y}",
                    "add {x}, {y}",
                    x = inout(reg) x,
                    y = in(reg) y,
                    options(nomem, nostack)
                );
            }
        }
        let t1 = ticks_fenced();
        std::hint::black_box(x);
        (t1 - t0) as f64 / (4 * ROUNDS) as f64
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        f64::NAN
    }
}

/// TSC ticks per add of eight independent chains of register adds: throughput, not latency.
#[inline(never)]
pub fn ticks_per_wide_add() -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        const ROUNDS: u64 = 250_000;
        let mut x = [1u64; 8];
        let y = 3u64;
        let t0 = ticks_fenced();
        for _ in 0..ROUNDS {
            // SAFETY: register arithmetic only; no memory, no stack, flags clobbered (default).
            unsafe {
                std::arch::asm!(
                    "add {a}, {y}", "add {b}, {y}", "add {c}, {y}", "add {d}, {y}",
                    "add {e}, {y}", "add {f}, {y}", "add {g}, {y}", "add {h}, {y}",
                    a = inout(reg) x[0], b = inout(reg) x[1], c = inout(reg) x[2],
                    d = inout(reg) x[3], e = inout(reg) x[4], f = inout(reg) x[5],
                    g = inout(reg) x[6], h = inout(reg) x[7], y = in(reg) y,
                    options(nomem, nostack)
                );
            }
        }
        let t1 = ticks_fenced();
        std::hint::black_box(x);
        (t1 - t0) as f64 / (8 * ROUNDS) as f64
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        f64::NAN
    }
}

/// The logical CPU this thread runs on (field 39 of /proc/self/stat), -1 when unknown.
fn current_cpu() -> i64 {
    std::fs::read_to_string("/proc/thread-self/stat")
        .ok()
        .and_then(|s| {
            // the command name (field 2) may hold spaces: count fields after its ')'
            let rest = &s[s.rfind(')')? + 2..];
            rest.split_whitespace().nth(36)?.parse().ok()
        })
        .unwrap_or(-1)
}

fn involuntary_switches() -> i64 {
    std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Steal time (USER_HZ ticks) of the CPU this thread runs on, from /proc/stat.
fn steal_of_this_cpu() -> i64 {
    let cpu = format!("cpu{} ", current_cpu());
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let l = s.lines().find(|l| l.starts_with(&cpu))?;
            l.split_whitespace().nth(8)?.parse().ok()
        })
        .unwrap_or(0)
}

/// (busy, total) jiffies of every CPU but this one, from /proc/stat (busy: all but idle and
/// iowait).
fn other_cpus_jiffies() -> (i64, i64) {
    let mine = format!("cpu{} ", current_cpu());
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let (mut busy, mut total) = (0, 0);
    for l in stat.lines() {
        let other_cpu = l.starts_with("cpu") && !l.starts_with("cpu ") && !l.starts_with(&mine);
        if !other_cpu {
            continue;
        }
        let v: Vec<i64> = l
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        let sum: i64 = v.iter().sum();
        let idle = v.get(3).unwrap_or(&0) + v.get(4).unwrap_or(&0);
        busy += sum - idle;
        total += sum;
    }
    (busy, total)
}
