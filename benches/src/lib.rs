//! knhk-benches: the nets and scenarios the tick-budget and instruction-budget benches run.
//!
//! Every scenario is a sealed [`Net`], a starting [`Case`] (a reachable state, taken after
//! the scenario's setup steps) and a list of operations. One *iteration* copies the starting
//! case (128 bytes) and applies every operation once; the per-op cost is the total over many
//! iterations divided by the operations, so the reset copy is amortised over the batch and
//! the tick counter is never read around a single operation.
//!
//! The peers (a `HashMap<String, u32>` token-count Petri net and a `statig` state machine) are
//! dev-dependencies of the bench targets only and live in `benches/peers.rs`.
use knhk_kernel::{Block, BlockPath, Case, Event, Guard, GuardOp, Join, Net, Op, Split, Term};

pub mod budgets;

/// One operation of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `fire(t)`: start then complete, guards evaluated on the case registers.
    Fire(u32),
    /// `fire_with(t, bits)`: caller-computed predicate bits.
    FireBits(u32, u32),
    /// `start(t)`.
    Start(u32),
    /// `complete(t)`.
    Complete(u32),
    /// `cancel_task(t)`.
    CancelTask(u32),
    /// `cancel_case()`.
    CancelCase,
    /// `start_instance(t, i)` (multiple-instance tasks).
    StartInstance(u32, u32),
    /// `complete_instance(t, i)`.
    CompleteInstance(u32, u32),
}

/// A net, the case every iteration starts from, and the operations of one iteration.
pub struct Scenario {
    /// Short name, e.g. `wcp01_sequence`.
    pub name: &'static str,
    /// The sealed net.
    pub net: Box<Net>,
    /// The state each iteration starts from.
    pub start: Case,
    /// The operations of one iteration, in order; all succeed from `start`.
    pub steps: Vec<Step>,
    /// `steps` as a task list when every step is a plain fire.
    pub fires: Option<Vec<u32>>,
}

/// The task list when every step is a plain fire (the tight loop the core patterns use).
fn fire_tasks(steps: &[Step]) -> Option<Vec<u32>> {
    steps
        .iter()
        .map(|s| {
            if let Step::Fire(t) = *s {
                Some(t)
            } else {
                None
            }
        })
        .collect()
}

impl Scenario {
    /// A scenario; `fires` is derived from `steps`.
    pub fn new(name: &'static str, net: Box<Net>, start: Case, steps: Vec<Step>) -> Scenario {
        let fires = fire_tasks(&steps);
        Scenario {
            name,
            net,
            start,
            steps,
            fires,
        }
    }

    /// The tasks, when every step is a plain fire.
    #[inline]
    pub fn fires_only(&self) -> Option<&[u32]> {
        self.fires.as_deref()
    }

    /// Operations per iteration.
    pub fn ops(&self) -> u64 {
        self.steps.len() as u64
    }

    /// One iteration through the Rust kernel API. Returns false when any operation was
    /// refused (a broken scenario).
    #[inline]
    pub fn run_rust(&self, case: &mut Case) -> bool {
        *case = self.start;
        let net = &*self.net;
        let mut ok = true;
        if let Some(tasks) = self.fires_only() {
            for &t in tasks {
                ok &= net.fire(case, t).is_ok();
            }
            return ok;
        }
        for &s in &self.steps {
            ok &= match s {
                Step::Fire(t) => net.fire(case, t),
                Step::FireBits(t, b) => net.fire_with(case, t, b),
                Step::Start(t) => net.start(case, t),
                Step::Complete(t) => net.complete(case, t),
                Step::CancelTask(t) => net.cancel_task(case, t),
                Step::CancelCase => net.cancel_case(case),
                Step::StartInstance(t, i) => net.start_instance(case, t, i),
                Step::CompleteInstance(t, i) => net.complete_instance(case, t, i),
            }
            .is_ok();
        }
        ok
    }

    /// One iteration through the C API (`knhk_sys` calls, no Rust wrapper in between).
    #[inline]
    pub fn run_c(&self, net: &knhk_sys::knhk_net_t, case: &mut knhk_sys::knhk_case_t) -> bool {
        let raw_net: *const knhk_sys::knhk_net_t = net;
        *case = *self.start.as_raw();
        let c: *mut knhk_sys::knhk_case_t = case;
        let mut ok = true;
        if let Some(tasks) = self.fires_only() {
            for &t in tasks {
                // SAFETY: raw_net comes from a live reference to a sealed net and c to an
                // exclusively borrowed, initialised case; libknhk keeps no pointer.
                ok &= unsafe { knhk_sys::knhk_fire(raw_net, c, t) } == knhk_sys::KNHK_OK;
            }
            return ok;
        }
        for &s in &self.steps {
            // SAFETY: raw_net comes from a live reference to a sealed net and
            // c to an exclusively borrowed, initialised case; libknhk keeps no pointer.
            let status = unsafe {
                match s {
                    Step::Fire(t) => knhk_sys::knhk_fire(raw_net, c, t),
                    Step::FireBits(t, b) => knhk_sys::knhk_fire_bits(raw_net, c, t, b),
                    Step::Start(t) => knhk_sys::knhk_start(raw_net, c, t),
                    Step::Complete(t) => knhk_sys::knhk_complete(raw_net, c, t),
                    Step::CancelTask(t) => knhk_sys::knhk_cancel_task(raw_net, c, t),
                    Step::CancelCase => knhk_sys::knhk_cancel_case(raw_net, c),
                    Step::StartInstance(t, i) => knhk_sys::knhk_instance_start(raw_net, c, t, i),
                    Step::CompleteInstance(t, i) => {
                        knhk_sys::knhk_instance_complete(raw_net, c, t, i)
                    }
                }
            };
            ok &= status == knhk_sys::KNHK_OK;
        }
        ok
    }

    /// Checks that one iteration succeeds through both APIs and ends in the same state.
    pub fn validate(&self) -> Result<(), String> {
        let mut a = self.start;
        if !self.run_rust(&mut a) {
            return Err(format!(
                "{}: an operation was refused (Rust API)",
                self.name
            ));
        }
        let mut b = *self.start.as_raw();
        if !self.run_c(self.net.as_raw(), &mut b) {
            return Err(format!("{}: an operation was refused (C API)", self.name));
        }
        if a.marking() != b.marking || a.seq() != b.seq || a.flags() != b.flags {
            return Err(format!("{}: Rust and C runs disagree", self.name));
        }
        Ok(())
    }
}

fn seal(net: &mut Net, what: &str) {
    if let Err(e) = net.seal() {
        panic!("{what}: seal failed: {e:?}");
    }
}

fn conds(net: &mut Net, n: usize) -> Vec<u32> {
    (0..n).map(|_| net.add_condition().unwrap()).collect()
}

/// Applies `steps` to a fresh case of `net` and returns it (the reachable starting state).
fn after(net: &Net, steps: &[Step]) -> Case {
    let mut case = Case::new(net).unwrap();
    for &st in steps {
        let r = match st {
            Step::Fire(t) => net.fire(&mut case, t),
            Step::FireBits(t, b) => net.fire_with(&mut case, t, b),
            Step::Start(t) => net.start(&mut case, t),
            Step::Complete(t) => net.complete(&mut case, t),
            Step::CancelTask(t) => net.cancel_task(&mut case, t),
            Step::CancelCase => net.cancel_case(&mut case),
            Step::StartInstance(t, i) => net.start_instance(&mut case, t, i),
            Step::CompleteInstance(t, i) => net.complete_instance(&mut case, t, i),
        };
        r.unwrap_or_else(|e| panic!("setup step {st:?}: {e:?}"));
    }
    case
}

/// WCP-1 sequence: a chain `c0 -> T0 -> c1 -> ... -> T61 -> c62`; one iteration fires all 62
/// tasks (the last one completes the case).
pub fn wcp01_sequence() -> Scenario {
    sequence_of(62, "wcp01_sequence")
}

/// A chain of `n` tasks (`n` <= 63); one iteration fires all of them.
fn sequence_of(n: usize, name: &'static str) -> Scenario {
    let mut net = Box::new(Net::new());
    let c = conds(&mut net, n + 1);
    let mut steps = Vec::new();
    for k in 0..n {
        let t = net.add_task(Join::Xor, Split::And).unwrap();
        net.input_flow(c[k], t).unwrap();
        net.output_flow(t, c[k + 1], None, false).unwrap();
        steps.push(Step::Fire(t));
    }
    net.set_input(c[0]).unwrap();
    net.set_output(c[n]).unwrap();
    seal(&mut net, name);
    let start = Case::new(&net).unwrap();
    Scenario::new(name, net, start, steps)
}

/// A binary split tree of depth 4 (15 AND-split tasks, 16 leaves) followed by a binary
/// AND-join tree (15 tasks) into the output. Returns the net and the split and join tasks,
/// each in firing order.
fn diamond_tree() -> (Box<Net>, Vec<u32>, Vec<u32>) {
    let mut net = Box::new(Net::new());
    let input = net.add_condition().unwrap();
    let output = net.add_condition().unwrap();
    net.set_input(input).unwrap();
    net.set_output(output).unwrap();
    // Split tree, breadth first: level holds the conditions waiting to be split.
    let mut level = vec![input];
    let mut splits = Vec::new();
    for _ in 0..4 {
        let mut next = Vec::new();
        for &c in &level {
            let t = net.add_task(Join::Xor, Split::And).unwrap();
            net.input_flow(c, t).unwrap();
            for _ in 0..2 {
                let d = net.add_condition().unwrap();
                net.output_flow(t, d, None, false).unwrap();
                next.push(d);
            }
            splits.push(t);
        }
        level = next;
    }
    // Join tree: pairs of the level join into one condition until one is left.
    let mut joins = Vec::new();
    while level.len() > 1 {
        let mut next = Vec::new();
        for pair in level.chunks(2) {
            let t = net.add_task(Join::And, Split::And).unwrap();
            net.input_flow(pair[0], t).unwrap();
            net.input_flow(pair[1], t).unwrap();
            let d = if level.len() == 2 {
                output
            } else {
                net.add_condition().unwrap()
            };
            net.output_flow(t, d, None, false).unwrap();
            next.push(d);
            joins.push(t);
        }
        level = next;
    }
    seal(&mut net, "diamond tree");
    (net, splits, joins)
}

/// WCP-2 parallel split: the 15 AND-splits of a binary split tree, from a fresh case.
pub fn wcp02_parallel_split() -> Scenario {
    let (net, splits, _) = diamond_tree();
    let start = Case::new(&net).unwrap();
    let steps = splits.into_iter().map(Step::Fire).collect();
    Scenario::new("wcp02_parallel_split", net, start, steps)
}

/// WCP-3 synchronization: the 15 AND-joins of a binary join tree (16 leaves marked); the
/// last one completes the case.
pub fn wcp03_synchronization() -> Scenario {
    let (net, splits, joins) = diamond_tree();
    let setup: Vec<Step> = splits.into_iter().map(Step::Fire).collect();
    let start = after(&net, &setup);
    let steps = joins.into_iter().map(Step::Fire).collect();
    Scenario::new("wcp03_synchronization", net, start, steps)
}

/// A chain of 31 XOR-split tasks: `X_k` takes `m_{k-1}` and chooses `m_k` when
/// `regs[0] == 0` (its first flow), else its default flow `q_k`; every `q_k` and the end of
/// the chain merge into the output through one XOR-join task.
fn xor_chain() -> (Box<Net>, Vec<u32>) {
    let mut net = Box::new(Net::new());
    let n = 31;
    let m = conds(&mut net, n + 1);
    let q = conds(&mut net, n);
    let output = net.add_condition().unwrap();
    net.set_input(m[0]).unwrap();
    net.set_output(output).unwrap();
    let guard = Guard::Term(Term::constant(0, GuardOp::Eq, 0));
    let mut chain = Vec::new();
    for k in 0..n {
        let t = net.add_task(Join::Xor, Split::Xor).unwrap();
        net.input_flow(m[k], t).unwrap();
        net.output_flow(t, m[k + 1], Some(&guard), false).unwrap();
        net.output_flow(t, q[k], None, true).unwrap();
        chain.push(t);
    }
    let z = net.add_task(Join::Xor, Split::And).unwrap();
    net.input_flow(m[n], z).unwrap();
    for &qk in &q {
        net.input_flow(qk, z).unwrap();
    }
    net.output_flow(z, output, None, false).unwrap();
    seal(&mut net, "xor chain");
    (net, chain)
}

/// WCP-4 exclusive choice: 31 XOR splits, each evaluating its guard on the case registers.
pub fn wcp04_exclusive_choice() -> Scenario {
    let (net, chain) = xor_chain();
    let start = Case::new(&net).unwrap();
    let steps = chain.into_iter().map(Step::Fire).collect();
    Scenario::new("wcp04_exclusive_choice", net, start, steps)
}

/// WCP-4 with caller-computed predicate bits (`fire_with`), no guard evaluation.
pub fn wcp04_exclusive_choice_bits() -> Scenario {
    let (net, chain) = xor_chain();
    let start = Case::new(&net).unwrap();
    let steps = chain.into_iter().map(|t| Step::FireBits(t, 1)).collect();
    Scenario::new("wcp04_exclusive_choice_bits", net, start, steps)
}

/// WCP-5 simple merge: 31 XOR-join tasks `M_k` over `{p_k, q_k}` (`q_k` fed by a
/// deferred-choice side task from `p_k`); every iteration merges along the `p` path.
pub fn wcp05_simple_merge() -> Scenario {
    let mut net = Box::new(Net::new());
    let n = 31;
    let p = conds(&mut net, n + 1);
    let q = conds(&mut net, n);
    net.set_input(p[0]).unwrap();
    net.set_output(p[n]).unwrap();
    let mut steps = Vec::new();
    for k in 0..n {
        let merge = net.add_task(Join::Xor, Split::And).unwrap();
        net.input_flow(p[k], merge).unwrap();
        net.input_flow(q[k], merge).unwrap();
        net.output_flow(merge, p[k + 1], None, false).unwrap();
        let side = net.add_task(Join::Xor, Split::And).unwrap();
        net.input_flow(p[k], side).unwrap();
        net.output_flow(side, q[k], None, false).unwrap();
        steps.push(Step::Fire(merge));
    }
    seal(&mut net, "wcp05");
    let start = Case::new(&net).unwrap();
    Scenario::new("wcp05_simple_merge", net, start, steps)
}

/// The gated core patterns, WCP-1..5.
pub fn core_patterns() -> Vec<Scenario> {
    vec![
        wcp01_sequence(),
        wcp02_parallel_split(),
        wcp03_synchronization(),
        wcp04_exclusive_choice(),
        wcp05_simple_merge(),
    ]
}

// ------------------------------------------------------------------------------------------
// Mask-only (10, 11, 16, 19, 20, 25, 43) and side-state (6, 7, 9) patterns: small nets, one
// short scenario each; reported, not gated.
// ------------------------------------------------------------------------------------------

/// WCP-10 arbitrary cycles: `i -> A -> c1 -> B`, B's first flow loops back to A's input
/// `c0` (A XOR-joins `i` and `c0`), its default leaves to the output. One iteration goes
/// round the loop 16 times (32 fires, predicate bits from the caller).
pub fn wcp10_arbitrary_cycles() -> Scenario {
    let mut net = Box::new(Net::new());
    let [i, c0, c1, o] = [0; 4].map(|_| net.add_condition().unwrap());
    let a = net.add_task(Join::Xor, Split::And).unwrap();
    let b = net.add_task(Join::Xor, Split::Xor).unwrap();
    net.input_flow(i, a).unwrap();
    net.input_flow(c0, a).unwrap();
    net.output_flow(a, c1, None, false).unwrap();
    net.input_flow(c1, b).unwrap();
    net.output_flow(b, c0, None, false).unwrap();
    net.output_flow(b, o, None, true).unwrap();
    net.set_input(i).unwrap();
    net.set_output(o).unwrap();
    seal(&mut net, "wcp10");
    let start = Case::new(&net).unwrap();
    let mut steps = Vec::new();
    for _ in 0..16 {
        steps.push(Step::Fire(a));
        steps.push(Step::FireBits(b, 1));
    }
    Scenario::new("wcp10_arbitrary_cycles", net, start, steps)
}

/// Two tasks racing for the input condition (deferred choice), both to the output.
fn race() -> (Box<Net>, u32, u32) {
    let mut net = Box::new(Net::new());
    let [i, o] = [0; 2].map(|_| net.add_condition().unwrap());
    let a = net.add_task(Join::Xor, Split::And).unwrap();
    let b = net.add_task(Join::Xor, Split::And).unwrap();
    for t in [a, b] {
        net.input_flow(i, t).unwrap();
        net.output_flow(t, o, None, false).unwrap();
    }
    net.set_input(i).unwrap();
    net.set_output(o).unwrap();
    seal(&mut net, "race");
    (net, a, b)
}

/// WCP-11 implicit termination: withdrawing the only enabled task leaves nothing marked and
/// nothing busy; the case completes implicitly.
pub fn wcp11_implicit_termination() -> Scenario {
    let (net, a, _) = race();
    let start = Case::new(&net).unwrap();
    Scenario::new(
        "wcp11_implicit_termination",
        net,
        start,
        vec![Step::CancelTask(a)],
    )
}

/// WCP-16 deferred choice: two tasks enabled by one token; the first start wins.
pub fn wcp16_deferred_choice() -> Scenario {
    let (net, _, b) = race();
    let start = Case::new(&net).unwrap();
    Scenario::new("wcp16_deferred_choice", net, start, vec![Step::Start(b)])
}

/// WCP-19 cancel task: a busy task is withdrawn.
pub fn wcp19_cancel_task() -> Scenario {
    let (net, a, _) = race();
    let start = after(&net, &[Step::Start(a)]);
    Scenario::new("wcp19_cancel_task", net, start, vec![Step::CancelTask(a)])
}

/// WCP-20 cancel case.
pub fn wcp20_cancel_case() -> Scenario {
    let (net, _, _) = race();
    let start = Case::new(&net).unwrap();
    Scenario::new("wcp20_cancel_case", net, start, vec![Step::CancelCase])
}

/// `i -> S` (AND split to `a`, `b`); `a -> A -> x`, `b -> B -> y`; `J` joins `x`, `y` (with
/// `join`) into the output. Returns the net and S, A, B, J.
fn fork(join: Join, configure: impl FnOnce(&mut Net, [u32; 4], [u32; 6])) -> (Box<Net>, [u32; 4]) {
    let mut net = Box::new(Net::new());
    let cs = [0; 6].map(|_| net.add_condition().unwrap());
    let [i, a, b, x, y, o] = cs;
    let s = net.add_task(Join::Xor, Split::And).unwrap();
    let ta = net.add_task(Join::Xor, Split::And).unwrap();
    let tb = net.add_task(Join::Xor, Split::And).unwrap();
    let j = net.add_task(join, Split::And).unwrap();
    net.input_flow(i, s).unwrap();
    net.output_flow(s, a, None, false).unwrap();
    net.output_flow(s, b, None, false).unwrap();
    net.input_flow(a, ta).unwrap();
    net.output_flow(ta, x, None, false).unwrap();
    net.input_flow(b, tb).unwrap();
    net.output_flow(tb, y, None, false).unwrap();
    net.input_flow(x, j).unwrap();
    net.input_flow(y, j).unwrap();
    net.output_flow(j, o, None, false).unwrap();
    net.set_input(i).unwrap();
    net.set_output(o).unwrap();
    let tasks = [s, ta, tb, j];
    configure(&mut net, tasks, cs);
    seal(&mut net, "fork");
    (net, tasks)
}

/// WCP-25 cancel region: after the split, A completes and cancels B's region (its input
/// condition `b` and B itself).
pub fn wcp25_cancel_region() -> Scenario {
    let (net, [s, a, _, _]) = fork(Join::And, |net, [_, a, b, _], [_, cb, ..]| {
        net.add_cancel_condition(a, cb).unwrap();
        net.add_cancel_task(a, b).unwrap();
    });
    let start = after(&net, &[Step::Fire(s)]);
    Scenario::new("wcp25_cancel_region", net, start, vec![Step::Fire(a)])
}

/// WCP-43 explicit termination: A also marks the output while B's branch is still marked;
/// the rest is cleared and the case says so.
pub fn wcp43_explicit_termination() -> Scenario {
    let mut net = Box::new(Net::new());
    let [i, a, b, o] = [0; 4].map(|_| net.add_condition().unwrap());
    let s = net.add_task(Join::Xor, Split::And).unwrap();
    let ta = net.add_task(Join::Xor, Split::And).unwrap();
    let tb = net.add_task(Join::Xor, Split::And).unwrap();
    net.input_flow(i, s).unwrap();
    net.output_flow(s, a, None, false).unwrap();
    net.output_flow(s, b, None, false).unwrap();
    net.input_flow(a, ta).unwrap();
    net.output_flow(ta, o, None, false).unwrap();
    net.input_flow(b, tb).unwrap();
    net.output_flow(tb, o, None, false).unwrap();
    net.set_input(i).unwrap();
    net.set_output(o).unwrap();
    // Concurrent branches may both reach the output condition (the case ends on the first).
    seal(&mut net, "wcp43");
    let start = after(&net, &[Step::Fire(s)]);
    Scenario::new(
        "wcp43_explicit_termination",
        net,
        start,
        vec![Step::Fire(ta)],
    )
}

/// WCP-6 multi-choice: an OR split with three guarded flows, two of them true.
fn or_net(join: Join) -> (Box<Net>, [u32; 5]) {
    let mut net = Box::new(Net::new());
    let [i, a, b, c, x, y, z, o] = [0; 8].map(|_| net.add_condition().unwrap());
    let s = net.add_task(Join::Xor, Split::Or).unwrap();
    let ta = net.add_task(Join::Xor, Split::And).unwrap();
    let tb = net.add_task(Join::Xor, Split::And).unwrap();
    let tc = net.add_task(Join::Xor, Split::And).unwrap();
    let j = net.add_task(join, Split::And).unwrap();
    net.input_flow(i, s).unwrap();
    let yes = Guard::Term(Term::constant(0, GuardOp::Eq, 0));
    let no = Guard::Term(Term::constant(0, GuardOp::Ne, 0));
    net.output_flow(s, a, Some(&yes), false).unwrap();
    net.output_flow(s, b, Some(&yes), false).unwrap();
    net.output_flow(s, c, Some(&no), true).unwrap();
    for (from, t, to) in [(a, ta, x), (b, tb, y), (c, tc, z)] {
        net.input_flow(from, t).unwrap();
        net.output_flow(t, to, None, false).unwrap();
        net.input_flow(to, j).unwrap();
    }
    net.output_flow(j, o, None, false).unwrap();
    net.set_input(i).unwrap();
    net.set_output(o).unwrap();
    seal(&mut net, "or net");
    (net, [s, ta, tb, tc, j])
}

/// WCP-6 multi-choice: the OR split (guards evaluated, two of three flows taken).
pub fn wcp06_multi_choice() -> Scenario {
    let (net, [s, ..]) = or_net(Join::Or);
    let start = Case::new(&net).unwrap();
    Scenario::new("wcp06_multi_choice", net, start, vec![Step::Fire(s)])
}

/// WCP-7 structured synchronizing merge: OR split, the two activated branches, the OR join
/// that waits for exactly them (4 operations).
pub fn wcp07_sync_merge() -> Scenario {
    let (net, [s, ta, tb, _, j]) = or_net(Join::Or);
    let start = Case::new(&net).unwrap();
    let steps = vec![Step::Fire(s), Step::Fire(ta), Step::Fire(tb), Step::Fire(j)];
    Scenario::new("wcp07_sync_merge", net, start, steps)
}

/// WCP-9 structured discriminator: after an AND split, the first branch fires the join, the
/// second branch's token is absorbed (4 operations: A, discriminator, B, absorbed).
pub fn wcp09_discriminator() -> Scenario {
    let (net, [s, ta, tb, d]) = fork(Join::Discriminator, |_, _, _| {});
    let start = after(&net, &[Step::Fire(s)]);
    let steps = vec![
        Step::Fire(ta),
        Step::Start(d),
        Step::Fire(tb),
        Step::Complete(d),
    ];
    Scenario::new("wcp09_discriminator", net, start, steps)
}

/// Non-local OR-join (WCP-37/38): a chain of 15 general OR-joins `J_k` over `m_{k-1}` and a
/// "dead" input `d_k`. X XOR-splits `h` to `m_0` (default) or to `g2`; the AND-join G
/// (`g1`, `g2`) leads to `e`, from which two XOR splits mark exactly one `d_k` (so every
/// reachable state is on one sequential path and the seal's exploration stays small). From
/// `m_0` each `J_k` finds one input marked and the other unreachable, and fires.
///
/// `orjoin_nonlocal`: `i -> X` directly (no `g1`): nothing upstream of `J_k` can move, so
/// each decision is the two-mask test (`orj_quiet`). `orjoin_nonlocal_lookup`: S AND-splits
/// `i` to `g1` and `h`, and `g1` stays marked (G waits for `g2` forever): a token upstream,
/// so each decision is the table lookup (hash, probe). The last J marks the output while
/// `g1` is still marked (an explicit termination, the general path). 15 OR-join fires per
/// iteration either way, like `wcp03_synchronization`'s 15 AND-joins.
pub fn orjoin_nonlocal() -> Scenario {
    orjoin_chain("orjoin_nonlocal", false)
}

/// Wide tasks: `i -> W -> c_1..c_62 -> J -> o`, W an AND split of 62 flows and J an AND join
/// of 62 inputs (the widest pair a 64-condition net holds: no flow enters the input, and a
/// flow onto the output would end the case). One iteration fires W and J (2 steps). Both are
/// hot (an AND split's output and an AND join's input are masks), so this is the short path
/// at full width.
pub fn wide_and_split_62() -> Scenario {
    let mut net = Box::new(Net::new());
    let i = net.add_condition().unwrap();
    let o = net.add_condition().unwrap();
    let mid = conds(&mut net, 62);
    net.set_input(i).unwrap();
    net.set_output(o).unwrap();
    let w = net.add_task(Join::Xor, Split::And).unwrap();
    let j = net.add_task(Join::And, Split::And).unwrap();
    net.input_flow(i, w).unwrap();
    for &c in &mid {
        net.output_flow(w, c, None, false).unwrap();
        net.input_flow(c, j).unwrap();
    }
    net.output_flow(j, o, None, false).unwrap();
    seal(&mut net, "wide and split");
    let start = Case::new(&net).unwrap();
    Scenario::new(
        "wide_and_split_62",
        net,
        start,
        vec![Step::Fire(w), Step::Fire(j)],
    )
}

/// Wide XOR split: `i -> X -> c_0..c_19 -> T_k -> o`, X an XOR split of 20 flows, flow k
/// guarded `regs[0] == k` (the last the default), `regs[0] = 17`: X's guards are evaluated
/// flow by flow on the general path (a split of more than two flows is not hot). One
/// iteration fires X and T_17 (2 steps).
pub fn wide_xor_split_20() -> Scenario {
    let mut net = Box::new(Net::new());
    let i = net.add_condition().unwrap();
    let o = net.add_condition().unwrap();
    let c = conds(&mut net, 20);
    net.set_input(i).unwrap();
    net.set_output(o).unwrap();
    let x = net.add_task(Join::Xor, Split::Xor).unwrap();
    net.input_flow(i, x).unwrap();
    let mut ts = Vec::new();
    for (k, &ck) in c.iter().enumerate() {
        let g = Guard::Term(Term::constant(0, GuardOp::Eq, k as i64));
        net.output_flow(x, ck, Some(&g), k == 19).unwrap();
        let t = net.add_task(Join::Xor, Split::And).unwrap();
        net.input_flow(ck, t).unwrap();
        net.output_flow(t, o, None, false).unwrap();
        ts.push(t);
    }
    seal(&mut net, "wide xor split");
    let mut start = Case::new(&net).unwrap();
    start.regs_mut()[0] = 17;
    Scenario::new(
        "wide_xor_split_20",
        net,
        start,
        vec![Step::Fire(x), Step::Fire(ts[17])],
    )
}

/// Multiple instances (issue 13 item 2): `i -> M -> c -> B -> o`, M a multiple-instance task of
/// 32 instances (all must complete). One iteration starts M, starts and completes each
/// instance in id order (the last completion completes M) and fires B: 66 steps, 64 of them
/// instance steps.
pub fn mi_instance_start_complete() -> Scenario {
    let mut net = Box::new(Net::new());
    let [i, c, o] = [0; 3].map(|_| net.add_condition().unwrap());
    net.set_input(i).unwrap();
    net.set_output(o).unwrap();
    let m = net.add_task(Join::Xor, Split::And).unwrap();
    let b = net.add_task(Join::Xor, Split::And).unwrap();
    net.input_flow(i, m).unwrap();
    net.output_flow(m, c, None, false).unwrap();
    net.input_flow(c, b).unwrap();
    net.output_flow(b, o, None, false).unwrap();
    net.set_mi(m, knhk_kernel::MiSpec::fixed(32)).unwrap();
    seal(&mut net, "mi");
    let start = Case::new(&net).unwrap();
    let mut steps = vec![Step::Start(m)];
    for k in 0..32 {
        steps.push(Step::StartInstance(m, k));
        steps.push(Step::CompleteInstance(m, k));
    }
    steps.push(Step::Fire(b));
    Scenario::new("mi_instance_start_complete", net, start, steps)
}

/// A composite task's hand-off to a sub-net case and back (issue 13 item 3), the kernel's part:
/// the parent `i -> C -> o` and the child's net `si -> X -> so`. One iteration starts `C` in
/// the parent, creates the child case, fires `X` (the child completes) and completes `C` (the
/// parent completes): 4 kernel calls. The engine's part (slot allocation, the logged creation,
/// the link) is not in it.
pub struct SubnetHandoff {
    pub parent: Box<Net>,
    pub child: Box<Net>,
    pub parent_start: Case,
    /// The parent's composite task and the child's one task.
    pub composite: u32,
    pub work: u32,
}

impl SubnetHandoff {
    pub fn new() -> SubnetHandoff {
        let line = |name: &str| {
            let mut net = Box::new(Net::new());
            let [i, o] = [0; 2].map(|_| net.add_condition().unwrap());
            net.set_input(i).unwrap();
            net.set_output(o).unwrap();
            let t = net.add_task(Join::Xor, Split::And).unwrap();
            net.input_flow(i, t).unwrap();
            net.output_flow(t, o, None, false).unwrap();
            seal(&mut net, name);
            (net, t)
        };
        let (parent, composite) = line("handoff parent");
        let (child, work) = line("handoff child");
        let parent_start = Case::new(&parent).unwrap();
        SubnetHandoff {
            parent,
            child,
            parent_start,
            composite,
            work,
        }
    }

    /// Operations per iteration.
    pub const OPS: u64 = 4;

    /// One hand-off from `parent` (a copy of `parent_start`); true when every call succeeded
    /// and both cases completed.
    pub fn run(&self, parent: &mut Case) -> bool {
        let mut ok = self.parent.start(parent, self.composite).is_ok();
        let Ok(mut child) = Case::new(&self.child) else {
            return false;
        };
        ok &= self.child.fire(&mut child, self.work).is_ok();
        ok &= self.child.state(&child) == knhk_kernel::CaseState::Complete;
        ok &= self.parent.complete(parent, self.composite).is_ok();
        ok && self.parent.state(parent) == knhk_kernel::CaseState::Complete
    }
}

impl Default for SubnetHandoff {
    fn default() -> Self {
        Self::new()
    }
}

/// See [`orjoin_nonlocal`]: the same chain, every decision a table lookup.
pub fn orjoin_nonlocal_lookup() -> Scenario {
    orjoin_chain("orjoin_nonlocal_lookup", true)
}

fn orjoin_chain(name: &'static str, lookup: bool) -> Scenario {
    // with `g1` left marked, the 16th J would end the case by explicit termination (the
    // general path): the iteration fires the first 15
    let stages = if lookup { 16 } else { 15 };
    let mut net = Box::new(Net::new());
    let i = net.add_condition().unwrap();
    let o = net.add_condition().unwrap();
    let m = conds(&mut net, stages); // m_0 ..; the last J produces the output
    let d = conds(&mut net, stages);
    let [e, e2] = [0; 2].map(|_| net.add_condition().unwrap());
    let [g1, g2, h] = if lookup {
        [0; 3].map(|_| net.add_condition().unwrap())
    } else {
        [i; 3] // unused
    };
    let mut setup = Vec::new();
    if lookup {
        let s = net.add_task(Join::Xor, Split::And).unwrap();
        net.input_flow(i, s).unwrap();
        net.output_flow(s, g1, None, false).unwrap();
        net.output_flow(s, h, None, false).unwrap();
        setup.push(Step::Fire(s));
    }
    let x = net.add_task(Join::Xor, Split::Xor).unwrap();
    net.input_flow(if lookup { h } else { i }, x).unwrap();
    let never = Guard::Term(Term::constant(0, GuardOp::Eq, 1));
    let to_e = if lookup { g2 } else { e };
    net.output_flow(x, to_e, Some(&never), false).unwrap();
    net.output_flow(x, m[0], None, true).unwrap();
    setup.push(Step::Fire(x));
    if lookup {
        let g = net.add_task(Join::And, Split::And).unwrap();
        net.input_flow(g1, g).unwrap();
        net.input_flow(g2, g).unwrap();
        net.output_flow(g, e, None, false).unwrap();
    }
    // XOR splits of at most 8 flows: 7 guarded d's and the default to the next split's input
    // (the last one's default: the last d)
    let chunks: Vec<&[u32]> = d[..stages - 1].chunks(7).collect();
    let mut from = e;
    let mut spare = Some(e2);
    for (n, chunk) in chunks.iter().enumerate() {
        let et = net.add_task(Join::Xor, Split::Xor).unwrap();
        net.input_flow(from, et).unwrap();
        for &dk in chunk.iter() {
            net.output_flow(et, dk, Some(&never), false).unwrap();
        }
        let to = if n + 1 == chunks.len() {
            d[stages - 1]
        } else {
            from = spare.take().unwrap_or_else(|| net.add_condition().unwrap());
            from
        };
        net.output_flow(et, to, None, true).unwrap();
    }
    let mut joins = Vec::new();
    for k in 0..stages {
        let j = net.add_task(Join::Or, Split::And).unwrap();
        net.input_flow(m[k], j).unwrap();
        net.input_flow(d[k], j).unwrap();
        let next = if k + 1 < stages { m[k + 1] } else { o };
        net.output_flow(j, next, None, false).unwrap();
        joins.push(j);
    }
    net.set_input(i).unwrap();
    net.set_output(o).unwrap();
    seal(&mut net, name);
    assert_eq!(
        net.general_or_joins(),
        joins.iter().fold(0, |a, &j| a | 1u64 << j),
        "every J_k is a general OR-join"
    );
    let start = after(&net, &setup);
    let steps = joins.into_iter().take(15).map(Step::Fire).collect();
    Scenario::new(name, net, start, steps)
}

/// The reported, not gated, patterns.
pub fn other_patterns() -> Vec<Scenario> {
    vec![
        wcp10_arbitrary_cycles(),
        wcp11_implicit_termination(),
        wcp16_deferred_choice(),
        wcp19_cancel_task(),
        wcp20_cancel_case(),
        wcp25_cancel_region(),
        wcp43_explicit_termination(),
        wcp06_multi_choice(),
        wcp07_sync_merge(),
        wcp09_discriminator(),
    ]
}

// ------------------------------------------------------------------------------------------
// The beat: many cases, 8 events per beat on 8 distinct cases.
// ------------------------------------------------------------------------------------------

/// Cases of the WCP-1 sequence net driven through `Net::beat`: every case fires task k in
/// step k; a beat carries 8 distinct cases.
pub struct BeatBatch {
    /// The sequence net.
    pub net: Box<Net>,
    /// The state every iteration starts from (all cases fresh).
    pub start: Vec<Case>,
    /// The beats of one iteration, 8 lanes each.
    pub beats: Vec<[Event; 8]>,
}

impl BeatBatch {
    /// `ncases` (a multiple of 8) cases through the 62-step sequence net.
    pub fn sequence(ncases: usize) -> BeatBatch {
        assert!(ncases.is_multiple_of(8) && ncases > 0);
        let scen = wcp01_sequence();
        let start = vec![Case::new(&scen.net).unwrap(); ncases];
        let mut beats = Vec::new();
        for s in &scen.steps {
            let Step::Fire(t) = *s else { unreachable!() };
            for g in 0..ncases / 8 {
                beats.push(core::array::from_fn(|l| {
                    Event::new((g * 8 + l) as u32, Op::Fire, t as u8)
                }));
            }
        }
        BeatBatch {
            net: scen.net,
            start,
            beats,
        }
    }

    /// Case-events per iteration.
    pub fn events(&self) -> u64 {
        self.beats.len() as u64 * 8
    }

    /// One iteration: reset the cases, run every beat. Returns false on any refused lane.
    #[inline]
    pub fn run(&self, cases: &mut [Case]) -> bool {
        cases.copy_from_slice(&self.start);
        let mut st = [0u8; 8];
        let mut bad = 0u8;
        for b in &self.beats {
            if self.net.beat(cases, b, &mut st).is_err() {
                return false;
            }
            bad |= st.iter().fold(0, |a, &s| a | s);
        }
        bad == 0
    }
}

/// The cases of [`BeatBatch`] as blocks of 8 (`knhk_block_t`) driven through
/// `Net::block_fire`: step k fires task k on every lane of every block, one call per step.
pub struct BlockBatch {
    /// The sequence net.
    pub net: Box<Net>,
    /// The blocks every iteration starts from (all cases fresh).
    pub start: Vec<Block>,
    /// Per step, the task of every lane of every block (8 per block).
    pub steps: Vec<Vec<u8>>,
}

impl BlockBatch {
    /// `nblocks` blocks (8 cases each) through the 62-step sequence net.
    pub fn sequence(nblocks: usize) -> BlockBatch {
        BlockBatch::sequence_of(62, nblocks)
    }

    /// `nblocks` blocks on a ring of 16 tasks (`i -> E -> c0 -> R0 -> c1 -> ... -> R15`, R15
    /// an XOR split back to `c0` while `regs[0] == 0`, else to the output), the lanes
    /// staggered: lane `l` of every block starts at `c(l)`, so the eight lanes of a block fire
    /// eight different tasks in every step (no lockstep). 48 steps: three laps.
    pub fn ring_staggered(nblocks: usize) -> BlockBatch {
        assert!(nblocks > 0);
        let mut net = Box::new(Net::new());
        let input = net.add_condition().unwrap();
        let output = net.add_condition().unwrap();
        let c = conds(&mut net, 16);
        let entry = net.add_task(Join::Xor, Split::And).unwrap();
        net.input_flow(input, entry).unwrap();
        net.output_flow(entry, c[0], None, false).unwrap();
        let looping = Guard::Term(Term::constant(0, GuardOp::Eq, 0));
        let ring: Vec<u32> = (0..16)
            .map(|k| {
                let last = k == 15;
                let t = net
                    .add_task(Join::Xor, if last { Split::Xor } else { Split::And })
                    .unwrap();
                net.input_flow(c[k], t).unwrap();
                if last {
                    net.output_flow(t, c[0], Some(&looping), false).unwrap();
                    net.output_flow(t, output, None, true).unwrap();
                } else {
                    net.output_flow(t, c[k + 1], None, false).unwrap();
                }
                t
            })
            .collect();
        net.set_input(input).unwrap();
        net.set_output(output).unwrap();
        seal(&mut net, "ring");
        let lane_case = |l: usize| {
            let mut case = Case::new(&net).unwrap();
            net.fire(&mut case, entry).unwrap();
            for &t in &ring[..l] {
                net.fire(&mut case, t).unwrap();
            }
            case
        };
        let mut block = Block::new(&net).unwrap();
        for l in 0..8 {
            block.set(l, &lane_case(l));
        }
        let steps = (0..48)
            .map(|step| {
                (0..nblocks * 8)
                    .map(|lane| ring[(lane % 8 + step) % 16] as u8)
                    .collect()
            })
            .collect();
        BlockBatch {
            net,
            start: vec![block; nblocks],
            steps,
        }
    }

    /// `nblocks` blocks through a sequence net of `ntasks` tasks (<= 63).
    pub fn sequence_of(ntasks: usize, nblocks: usize) -> BlockBatch {
        assert!(nblocks > 0);
        let scen = sequence_of(ntasks, "block sequence");
        let start = vec![Block::new(&scen.net).unwrap(); nblocks];
        let steps = scen
            .steps
            .iter()
            .map(|s| {
                let Step::Fire(t) = *s else { unreachable!() };
                vec![t as u8; nblocks * 8]
            })
            .collect();
        BlockBatch {
            net: scen.net,
            start,
            steps,
        }
    }

    /// Case-events per iteration.
    pub fn events(&self) -> u64 {
        (self.steps.len() * self.start.len() * 8) as u64
    }

    /// One iteration: reset the blocks, run every step on `path`. Returns false on any
    /// refused lane.
    #[inline]
    pub fn run(&self, blocks: &mut [Block], statuses: &mut [u8], path: BlockPath) -> bool {
        blocks.copy_from_slice(&self.start);
        let mut bad = 0u8;
        for tasks in &self.steps {
            if self.net.block_fire(blocks, tasks, statuses, path).is_err() {
                return false;
            }
            bad |= statuses.iter().fold(0, |a, &s| a | s);
        }
        bad == 0
    }
}

// ------------------------------------------------------------------------------------------
// The peer workflow: sequence, AND-split, AND-join, XOR with a 50/50 guard, merge, end.
// ------------------------------------------------------------------------------------------

/// The 8-event workflow every peer runs:
/// `A` (sequence) -> `B` (AND split) -> `C` ‖ `D` -> `E` (AND join) -> `F` (XOR split on
/// `regs[0] == 0`) -> `G` | `H` -> `M` (XOR merge) -> end.
pub struct Workflow {
    /// The sealed net.
    pub net: Box<Net>,
    /// Task indices A, B, C, D, E, F, G, H, M.
    pub tasks: [u32; 9],
}

/// Task names of [`Workflow`], in index order.
pub const WORKFLOW_TASKS: [&str; 9] = ["A", "B", "C", "D", "E", "F", "G", "H", "M"];

impl Workflow {
    /// Builds and seals the workflow.
    pub fn new() -> Workflow {
        let mut net = Box::new(Net::new());
        let c = conds(&mut net, 11);
        let [i, c1, c2, c3, c4, c5, c6, c7, c8, c9, o] = [
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10],
        ];
        let mut task = |join, split, ins: &[u32], outs: &[(u32, Option<Guard>, bool)]| {
            let t = net.add_task(join, split).unwrap();
            for &x in ins {
                net.input_flow(x, t).unwrap();
            }
            for (x, g, d) in outs {
                net.output_flow(t, *x, g.as_ref(), *d).unwrap();
            }
            t
        };
        let a = task(Join::Xor, Split::And, &[i], &[(c1, None, false)]);
        let b = task(
            Join::Xor,
            Split::And,
            &[c1],
            &[(c2, None, false), (c3, None, false)],
        );
        let tc = task(Join::Xor, Split::And, &[c2], &[(c4, None, false)]);
        let d = task(Join::Xor, Split::And, &[c3], &[(c5, None, false)]);
        let e = task(Join::And, Split::And, &[c4, c5], &[(c6, None, false)]);
        let g0 = Guard::Term(Term::constant(0, GuardOp::Eq, 0));
        let f = task(
            Join::Xor,
            Split::Xor,
            &[c6],
            &[(c7, Some(g0), false), (c8, None, true)],
        );
        let g = task(Join::Xor, Split::And, &[c7], &[(c9, None, false)]);
        let h = task(Join::Xor, Split::And, &[c8], &[(c9, None, false)]);
        let m = task(Join::Xor, Split::And, &[c9], &[(o, None, false)]);
        net.set_input(i).unwrap();
        net.set_output(o).unwrap();
        seal(&mut net, "workflow");
        Workflow {
            net,
            tasks: [a, b, tc, d, e, f, g, h, m],
        }
    }

    /// The 8 task indices a case with guard register `r0` fires, in order.
    pub fn events_for(&self, r0: i64) -> [u32; 8] {
        let [a, b, c, d, e, f, g, h, m] = self.tasks;
        [a, b, c, d, e, f, if r0 == 0 { g } else { h }, m]
    }

    /// A fresh case with guard register `r0`.
    pub fn case(&self, r0: i64) -> Case {
        let mut c = Case::new(&self.net).unwrap();
        c.regs_mut()[0] = r0;
        c
    }
}

impl Default for Workflow {
    fn default() -> Self {
        Workflow::new()
    }
}

/// A deterministic 50/50 sequence of guard values (xorshift), so every run sees the same cases.
pub fn coin_flips(n: usize, seed: u64) -> Vec<i64> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32 & 1) as i64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_runs() {
        for s in core_patterns()
            .iter()
            .chain(other_patterns().iter())
            .chain([orjoin_nonlocal(), orjoin_nonlocal_lookup()].iter())
        {
            s.validate().unwrap();
        }
    }

    #[test]
    fn subnet_handoff_completes_both_cases() {
        let h = SubnetHandoff::new();
        let mut parent = h.parent_start;
        assert!(h.run(&mut parent));
        // a second hand-off from the finished parent is refused
        assert!(!h.run(&mut parent));
    }

    #[test]
    fn beat_batch_runs() {
        let b = BeatBatch::sequence(16);
        let mut cases = b.start.clone();
        assert!(b.run(&mut cases));
        assert!(cases.iter().all(|c| c.is_done()));
    }

    #[test]
    fn staggered_ring_runs_on_both_paths() {
        let b = BlockBatch::ring_staggered(2);
        for path in [BlockPath::Best, BlockPath::Scalar] {
            let mut blocks = b.start.clone();
            let mut st = vec![0xAAu8; 16];
            assert!(b.run(&mut blocks, &mut st, path));
            assert!(blocks
                .iter()
                .all(|blk| blk.get(3).unwrap().seq() == 1 + 3 + 48));
        }
    }

    #[test]
    fn block_batch_runs_on_both_paths() {
        let b = BlockBatch::sequence(3);
        for path in [BlockPath::Best, BlockPath::Scalar] {
            let mut blocks = b.start.clone();
            let mut st = vec![0xAAu8; 24];
            assert!(b.run(&mut blocks, &mut st, path));
            for blk in &blocks {
                assert!((0..8).all(|i| blk.get(i).unwrap().is_done()));
            }
        }
    }

    #[test]
    fn workflow_completes_both_ways() {
        let w = Workflow::new();
        for r0 in [0, 1] {
            let mut c = w.case(r0);
            for t in w.events_for(r0) {
                w.net.fire(&mut c, t).unwrap();
            }
            assert!(c.is_done());
        }
    }
}
