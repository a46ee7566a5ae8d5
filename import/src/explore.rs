//! Soundness exploration: a breadth-first walk over the reachable states of a sealed net,
//! driven by the kernel itself (clone a case, `start`, `complete_with` over every branch bit
//! set the split allows). The firing rules exist once, in C; this module only chooses moves
//! and reads markings.
//!
//! Reports, each with the element ids involved: 1-safety (a completion the kernel refuses with
//! SAFETY_VIOLATION), multi-merge at XOR-joins, option to complete (every reachable state can
//! still reach completion), deadlocks, proper completion (no token left behind when the
//! output condition is marked), and dead tasks (never started).

use std::collections::{HashMap, VecDeque};

use knhk_kernel::{flags, Case, CaseState, Error, Net};

use crate::check::{Finding, FindingKind, Severity};
use crate::ir::{FlowGuard, Guard, Join, Model, Split, Task, NEVER};

/// Result of an exploration.
#[derive(Debug, Clone)]
pub struct Exploration {
    pub states: usize,
    /// True when every reachable state was visited (the cap was not hit).
    pub exhaustive: bool,
    pub findings: Vec<Finding>,
}

/// The identity of a state: everything the kernel's behaviour depends on except registers
/// (guards are not evaluated: every branch outcome is explored).
type Key = (u64, u64, u64, u64, u32);

pub(crate) fn key(c: &Case) -> Key {
    (c.marking(), c.busy(), c.or_expect(), c.absorb(), c.flags())
}

/// The branch bit sets worth trying when completing `t`: AND splits ignore bits; XOR and OR
/// splits try every subset of the flows whose guard is not constant (constant-true flows
/// always set, constant-false never), the empty set included (the default flow).
pub fn branch_sets(t: &Task) -> Vec<u32> {
    if t.split == Split::And {
        return vec![0];
    }
    let n = t.outputs.len().min(8);
    let mut forced = 0u32;
    let mut free = Vec::new();
    for (k, f) in t.outputs.iter().take(n).enumerate() {
        match &f.guard {
            FlowGuard::Compiled(g) if *g == Guard::ALWAYS => forced |= 1 << k,
            FlowGuard::Compiled(g) if *g == NEVER => {}
            FlowGuard::Always if !f.default => forced |= 1 << k,
            _ => free.push(k),
        }
    }
    let mut out = Vec::with_capacity(1 << free.len());
    for s in 0u32..(1u32 << free.len()) {
        let mut bits = forced;
        for (j, &k) in free.iter().enumerate() {
            if s & (1 << j) != 0 {
                bits |= 1 << k;
            }
        }
        out.push(bits);
    }
    out
}

fn bits(set: u64) -> impl Iterator<Item = u32> {
    (0..64u32).filter(move |i| set & (1u64 << i) != 0)
}

/// Explores the reachable states of `net` (the lowering of `model`) up to `cap` states.
pub fn explore(model: &Model, net: &Net, cap: usize) -> Exploration {
    explore_until(model, net, cap, &|| false)
}

/// [`explore`], checking `stop` every 1,024 states: once it says so, the exploration ends
/// with a refusal (its caller went away, or gave up).
pub fn explore_until(model: &Model, net: &Net, cap: usize, stop: &dyn Fn() -> bool) -> Exploration {
    let mut findings = Vec::new();
    let init = match Case::new(net) {
        Ok(c) => c,
        Err(e) => {
            findings.push(Finding::refusal(
                FindingKind::Seal,
                format!("the kernel cannot start a case: {e}"),
                Vec::new(),
            ));
            return Exploration {
                states: 0,
                exhaustive: false,
                findings,
            };
        }
    };
    let sets: Vec<Vec<u32>> = model.tasks.iter().map(branch_sets).collect();
    let xor_pre: Vec<(usize, u64)> = model
        .tasks
        .iter()
        .enumerate()
        .filter(|(_, t)| t.join == Join::Xor && t.inputs.len() > 1)
        .map(|(i, t)| {
            (
                i,
                t.inputs
                    .iter()
                    .fold(0u64, |m, &c| m | (1u64 << (c as u64 & 63))),
            )
        })
        .collect();

    let mut states: Vec<Case> = vec![init];
    let mut index: HashMap<Key, usize> = HashMap::from([(key(&init), 0)]);
    let mut succ: Vec<Vec<usize>> = vec![Vec::new()];
    let mut queue = VecDeque::from([0usize]);
    let mut started = 0u64;
    let mut exhaustive = true;
    let mut unsafe_seen = 0u64; // tasks already reported as not 1-safe
    let mut mm_seen = 0u64; // XOR-joins already reported as multi-merge
    let mut improper_seen = false;
    let mut deadlocks = Vec::new();
    let mut complete = vec![false];

    let mut visited = 0usize;
    while let Some(si) = queue.pop_front() {
        visited += 1;
        if visited.is_multiple_of(1024) && stop() {
            findings.push(Finding::refusal(
                FindingKind::ExplorationIncomplete,
                format!("exploration stopped after {visited} states: the import was cancelled"),
                Vec::new(),
            ));
            return Exploration {
                states: states.len(),
                exhaustive: false,
                findings,
            };
        }
        let s = states[si];
        match net.state(&s) {
            CaseState::Complete => {
                complete[si] = true;
                if s.flags() & flags::EXPLICIT_TERMINATION != 0 && !improper_seen {
                    improper_seen = true;
                }
                continue;
            }
            CaseState::Deadlocked => {
                deadlocks.push(si);
                continue;
            }
            CaseState::Cancelled => continue,
            CaseState::Running => {}
        }
        // Multi-merge: two inputs of an XOR-join marked together, or one marked while it runs.
        for &(t, pre) in &xor_pre {
            let marked = s.marking() & pre;
            let busy = s.busy() & (1u64 << t) != 0;
            if (marked.count_ones() >= 2 || (busy && marked != 0)) && mm_seen & (1u64 << t) == 0 {
                mm_seen |= 1u64 << t;
                let mut els = vec![model.task_id(t).to_string()];
                els.extend(model.marking_ids(marked).into_iter().map(String::from));
                let why = if marked.count_ones() >= 2 {
                    format!(
                        "its inputs {:?} can be marked at the same time",
                        model.marking_ids(marked)
                    )
                } else {
                    format!(
                        "its input {:?} can be marked again while it runs",
                        model.marking_ids(marked)
                    )
                };
                findings.push(Finding::refusal(
                    FindingKind::MultiMerge,
                    format!(
                        "multi-merge (WCP-8) at XOR-join '{}': {why}; the kernel runs 1-safe nets and refuses multi-merge",
                        model.task_id(t)
                    ),
                    els,
                ));
            }
        }
        let mut moves: Vec<Case> = Vec::new();
        for t in bits(net.enabled(&s)) {
            let mut c = s;
            if net.start(&mut c, t).is_ok() {
                started |= 1u64 << t;
                moves.push(c);
            }
        }
        for t in bits(s.busy()) {
            let Some(task_sets) = sets.get(t as usize) else {
                continue;
            };
            for &b in task_sets {
                let mut c = s;
                match net.complete_with(&mut c, t, b) {
                    Ok(()) => {
                        if c.flags() & flags::EXPLICIT_TERMINATION != 0 && !improper_seen {
                            improper_seen = true;
                            let left = s.marking() & !(1u64 << (model.output as u64 & 63));
                            let busy = s.busy() & !(1u64 << t);
                            let mut els: Vec<String> = model
                                .marking_ids(left)
                                .into_iter()
                                .map(String::from)
                                .collect();
                            els.extend(model.task_ids(busy).into_iter().map(String::from));
                            findings.push(Finding::refusal(
                                FindingKind::ImproperCompletion,
                                format!(
                                    "improper completion: task '{}' marks the output condition while {:?} are still marked{}",
                                    model.task_id(t as usize),
                                    model.marking_ids(left),
                                    if busy == 0 { String::new() } else { format!(" and {:?} busy", model.task_ids(busy)) }
                                ),
                                els,
                            ));
                        }
                        moves.push(c);
                    }
                    Err(Error::SafetyViolation) => {
                        if unsafe_seen & (1u64 << t) == 0 {
                            unsafe_seen |= 1u64 << t;
                            let tk = &model.tasks[t as usize];
                            let post = tk
                                .outputs
                                .iter()
                                .fold(0u64, |m, f| m | (1u64 << (f.target as u64 & 63)));
                            let clash = post & s.marking();
                            let mut els = vec![tk.id.clone()];
                            els.extend(model.marking_ids(clash).into_iter().map(String::from));
                            findings.push(Finding::refusal(
                                FindingKind::NotSafe,
                                format!(
                                    "not 1-safe: completing task '{}' puts a second token on {:?} (marking {:?})",
                                    tk.id,
                                    model.marking_ids(clash),
                                    model.marking_ids(s.marking())
                                ),
                                els,
                            ));
                        }
                    }
                    Err(_) => {}
                }
            }
        }
        for c in moves {
            let k = key(&c);
            let next = match index.get(&k) {
                Some(&i) => i,
                None => {
                    if states.len() >= cap {
                        exhaustive = false;
                        continue;
                    }
                    let i = states.len();
                    states.push(c);
                    index.insert(k, i);
                    succ.push(Vec::new());
                    complete.push(false);
                    queue.push_back(i);
                    i
                }
            };
            succ[si].push(next);
        }
    }

    for &d in deadlocks.iter().take(1) {
        let s = states[d];
        findings.push(Finding::refusal(
            FindingKind::Deadlock,
            format!(
                "deadlock: reachable marking {:?} enables no task and nothing is busy",
                model.marking_ids(s.marking())
            ),
            model
                .marking_ids(s.marking())
                .into_iter()
                .map(String::from)
                .collect(),
        ));
    }
    if exhaustive {
        // Option to complete: every state reaches a complete state (reverse reachability).
        let n = states.len();
        let mut pred: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (a, ss) in succ.iter().enumerate() {
            for &b in ss {
                pred[b].push(a);
            }
        }
        let mut ok = complete.clone();
        let mut q: VecDeque<usize> = (0..n).filter(|&i| ok[i]).collect();
        while let Some(x) = q.pop_front() {
            for &p in &pred[x] {
                if !ok[p] {
                    ok[p] = true;
                    q.push_back(p);
                }
            }
        }
        if let Some(bad) = (0..n).find(|&i| !ok[i] && !deadlocks.contains(&i)) {
            let s = states[bad];
            let mut els: Vec<String> = model
                .marking_ids(s.marking())
                .into_iter()
                .map(String::from)
                .collect();
            els.extend(model.task_ids(s.busy()).into_iter().map(String::from));
            findings.push(Finding::refusal(
                FindingKind::NoOptionToComplete,
                format!(
                    "no option to complete: from marking {:?} with {:?} busy the output condition can no longer be reached",
                    model.marking_ids(s.marking()),
                    model.task_ids(s.busy())
                ),
                els,
            ));
        }
        let all = if model.tasks.len() >= 64 {
            u64::MAX
        } else {
            (1u64 << model.tasks.len()) - 1
        };
        let dead = all & !started;
        if dead != 0 {
            findings.push(Finding::refusal(
                FindingKind::DeadTask,
                format!(
                    "dead tasks (never enabled in any reachable state): {:?}",
                    model.task_ids(dead)
                ),
                model.task_ids(dead).into_iter().map(String::from).collect(),
            ));
        }
    } else {
        findings.push(Finding {
            kind: FindingKind::ExplorationIncomplete,
            severity: Severity::Warning,
            message: format!(
                "exploration stopped at the state cap ({cap} states): option to complete, proper completion and dead tasks not decided"
            ),
            elements: Vec::new(),
        });
    }
    // Root causes first: a multi-merge or an unsafe completion explains the rest.
    findings.sort_by_key(|f| match f.kind {
        FindingKind::MultiMerge => 0,
        FindingKind::NotSafe => 1,
        _ => 2,
    });
    Exploration {
        states: states.len(),
        exhaustive,
        findings,
    }
}
