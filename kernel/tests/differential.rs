//! Differential property test: random structured nets, random event sequences, every step of
//! libknhk (through knhk-kernel) compared with a reference interpreter written plainly here
//! (token counts in maps, sets for busy tasks, no bit tricks).
//!
//! The reference follows DESIGN.md §2 and the rules documented in `c/include/knhk.h`; it shares
//! no code with libknhk. Each net is also run through `Net::beat` on a shadow case and through
//! the block paths on eight shadow lanes in lockstep (`Net::block_fire` on the vector and the
//! scalar path in turn, `Net::block_beat` for the other operations), which must agree byte for
//! byte with the single-operation calls. Before every step the case is saved and restored
//! (`Case::save`, `Case::restore`): the restored case must equal it and, given the same step,
//! return the same status and bytes; after every step `Case::check` must accept the case.
//!
//! Multiple-instance tasks (about a third of the nets make some single tasks MI, with random
//! minimum, maximum, threshold, creation mode and keep): the reference keeps each live MI
//! task's instances as sets (created count, started, completed); instance steps (start,
//! complete, add) go through the single-case calls and the array beats' cases alike (a beat
//! has no instance op), and nets with MI tasks skip the block paths (a block holds no MI
//! slots; `knhk.h`: an MI task's start in a lane is refused, tested in C).
//!
//! `KNHK_DIFF_CASES` sets the number of sequences (default 10,000).
use knhk_kernel::{
    flags, Block, BlockPath, Case, CaseState, Error, Event, Guard, GuardOp, InstanceState, Join,
    MiSpec, Net, Op, Split, Term, MAX_BRANCHES, MAX_MI_TASKS, NO_TASK,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

// ------------------------------------------------------------------------------------------
// The model a generator produces, and how it is loaded into the kernel
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Branch {
    cond: u32,
    guard: Option<Guard>,
    default: bool,
    /// The OR-join input this branch activates (structured OR blocks only).
    or_expect: Option<u32>,
}

#[derive(Debug, Clone)]
struct TaskM {
    join: Join,
    split: Split,
    pre: Vec<u32>,
    branches: Vec<Branch>,
    cancel_conds: Vec<u32>,
    cancel_tasks: Vec<u32>,
    /// An OR-join without a matching structured OR-split: the kernel decides it by the YAWL
    /// rule (the reference explores, see `RefCase::yawl_or_join_enabled`).
    general_or: bool,
    /// Multiple instances.
    mi: Option<MiSpec>,
}

#[derive(Debug, Clone, Default)]
struct Model {
    nconds: u32,
    input: u32,
    output: u32,
    tasks: Vec<TaskM>,
}

impl Model {
    fn cond(&mut self) -> u32 {
        self.nconds += 1;
        self.nconds - 1
    }
    fn task(&mut self, join: Join, split: Split, pre: Vec<u32>) -> u32 {
        self.tasks.push(TaskM {
            join,
            split,
            pre,
            branches: vec![],
            cancel_conds: vec![],
            cancel_tasks: vec![],
            general_or: false,
            mi: None,
        });
        self.tasks.len() as u32 - 1
    }
    fn out(&mut self, t: u32, cond: u32) {
        self.tasks[t as usize].branches.push(Branch {
            cond,
            guard: None,
            default: false,
            or_expect: None,
        });
    }

    fn to_net(&self) -> Result<Box<Net>, String> {
        self.build().map_err(|e| e.to_string())
    }

    fn build(&self) -> Result<Box<Net>, knhk_kernel::SealError> {
        let err = |error| knhk_kernel::SealError {
            error,
            element: knhk_kernel::Element::None,
            other: None,
        };
        let mut net = Box::new(Net::new());
        for _ in 0..self.nconds {
            net.add_condition().map_err(err)?;
        }
        net.set_input(self.input).map_err(err)?;
        net.set_output(self.output).map_err(err)?;
        for t in &self.tasks {
            let id = net.add_task(t.join, t.split).map_err(err)?;
            for &c in &t.pre {
                net.input_flow(c, id).map_err(err)?;
            }
            for b in &t.branches {
                net.output_flow(id, b.cond, b.guard.as_ref(), b.default)
                    .map_err(err)?;
            }
            for &c in &t.cancel_conds {
                net.add_cancel_condition(id, c).map_err(err)?;
            }
            for &v in &t.cancel_tasks {
                net.add_cancel_task(id, v).map_err(err)?;
            }
            if let Some(spec) = t.mi {
                net.set_mi(id, spec).map_err(err)?;
            }
        }
        net.seal()?;
        Ok(net)
    }
}

// ------------------------------------------------------------------------------------------
// A structured-net generator (sequence, AND, XOR, OR, loop, deferred choice, discriminator,
// cancel region) driven by a small deterministic RNG
// ------------------------------------------------------------------------------------------

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_guard(rng: &mut Rng) -> Guard {
    let ops = [
        GuardOp::Eq,
        GuardOp::Ne,
        GuardOp::Lt,
        GuardOp::Le,
        GuardOp::Gt,
        GuardOp::Ge,
        GuardOp::Bit,
        GuardOp::NBit,
        GuardOp::True,
        GuardOp::False,
    ];
    let term = |rng: &mut Rng| {
        let op = ops[rng.below(ops.len() as u64) as usize];
        let lhs = rng.below(4) as u8;
        if rng.below(4) == 0 {
            Term::register(lhs, op, rng.below(4) as u8)
        } else {
            Term::constant(lhs, op, rng.below(5) as i64 - 1)
        }
    };
    match rng.below(4) {
        0 => Guard::And(term(rng), term(rng)),
        1 => Guard::Or(term(rng), term(rng)),
        _ => Guard::Term(term(rng)),
    }
}

/// Conditions and tasks a block created, for cancel regions.
#[derive(Default)]
struct Region {
    conds: Vec<u32>,
    tasks: Vec<u32>,
}

/// Appends a block that starts at condition `c_in` and returns its exit condition.
fn block(m: &mut Model, rng: &mut Rng, depth: u32, c_in: u32, region: &mut Region) -> u32 {
    let kind = if depth == 0 { 0 } else { rng.below(10) };
    match kind {
        // a single task
        0 => {
            let t = m.task(Join::Xor, Split::And, vec![c_in]);
            let c = m.cond();
            m.out(t, c);
            region.tasks.push(t);
            region.conds.push(c);
            c
        }
        // sequence
        1 => {
            let mid = block(m, rng, depth - 1, c_in, region);
            block(m, rng, depth - 1, mid, region)
        }
        // AND split / AND join, or a discriminator join (6)
        2 | 6 => {
            let n = 2 + rng.below(2) as usize;
            let s = m.task(Join::Xor, Split::And, vec![c_in]);
            region.tasks.push(s);
            let mut ends = vec![];
            for _ in 0..n {
                let a = m.cond();
                region.conds.push(a);
                m.out(s, a);
                ends.push(block(m, rng, depth - 1, a, region));
            }
            let join = if kind == 2 {
                Join::And
            } else {
                Join::Discriminator
            };
            let j = m.task(join, Split::And, ends);
            let c = m.cond();
            m.out(j, c);
            region.tasks.push(j);
            region.conds.push(c);
            c
        }
        // XOR split (guards) / XOR join (simple merge), or OR split / OR join (4)
        3 | 4 => {
            let n = 2 + rng.below(2) as usize;
            let split = if kind == 3 { Split::Xor } else { Split::Or };
            let s = m.task(Join::Xor, split, vec![c_in]);
            region.tasks.push(s);
            let default = rng.below(n as u64) as usize;
            let mut ends = vec![];
            for k in 0..n {
                let a = m.cond();
                region.conds.push(a);
                m.tasks[s as usize].branches.push(Branch {
                    cond: a,
                    guard: Some(random_guard(rng)),
                    default: k == default,
                    or_expect: None,
                });
                ends.push(block(m, rng, depth - 1, a, region));
            }
            if split == Split::Or {
                for (k, &e) in ends.iter().enumerate() {
                    m.tasks[s as usize].branches[k].or_expect = Some(e);
                }
            }
            let join = if kind == 3 { Join::Xor } else { Join::Or };
            let j = m.task(join, Split::And, ends);
            let c = m.cond();
            m.out(j, c);
            region.tasks.push(j);
            region.conds.push(c);
            c
        }
        // loop: body, then an XOR split back to the entry (guarded) or on (default)
        5 => {
            let mid = block(m, rng, depth - 1, c_in, region);
            let x = m.task(Join::Xor, Split::Xor, vec![mid]);
            let c = m.cond();
            m.tasks[x as usize].branches.push(Branch {
                cond: c_in,
                guard: Some(random_guard(rng)),
                default: false,
                or_expect: None,
            });
            m.tasks[x as usize].branches.push(Branch {
                cond: c,
                guard: None,
                default: true,
                or_expect: None,
            });
            region.tasks.push(x);
            region.conds.push(c);
            c
        }
        // general (non-local) OR-join (WCP-37/38): an AND (or XOR) split into 2-3 branches
        // joined by an OR-join that no OR-split matches; sometimes one branch's entry races a canceller Z
        // (deferred choice) that empties another branch's region, so the join fires on fewer
        // inputs
        8 => {
            let n = 2 + rng.below(2) as usize;
            // an AND split, or an XOR split (then the join gets exactly one branch)
            let xor = rng.below(3) == 0;
            let s = m.task(
                Join::Xor,
                if xor { Split::Xor } else { Split::And },
                vec![c_in],
            );
            region.tasks.push(s);
            let default = rng.below(n as u64) as usize;
            let (mut starts, mut ends, mut regions) = (vec![], vec![], vec![]);
            for k in 0..n {
                let a = m.cond();
                m.tasks[s as usize].branches.push(Branch {
                    cond: a,
                    guard: xor.then(|| random_guard(rng)),
                    default: xor && k == default,
                    or_expect: None,
                });
                let mut sub = Region::default();
                sub.conds.push(a);
                let e = block(m, rng, depth - 1, a, &mut sub);
                starts.push(a);
                ends.push(e);
                regions.push(sub);
            }
            if rng.below(2) == 0 {
                let y = rng.below(n as u64) as usize;
                let x = (y + 1 + rng.below(n as u64 - 1) as usize) % n;
                let z = m.task(Join::Xor, Split::And, vec![starts[y]]);
                m.out(z, ends[y]);
                m.tasks[z as usize].cancel_conds = regions[x].conds.clone();
                m.tasks[z as usize].cancel_tasks = regions[x].tasks.clone();
                region.tasks.push(z);
            }
            for sub in regions {
                region.conds.extend(sub.conds);
                region.tasks.extend(sub.tasks);
            }
            let j = m.task(Join::Or, Split::And, ends);
            m.tasks[j as usize].general_or = true;
            let c = m.cond();
            m.out(j, c);
            region.tasks.push(j);
            region.conds.push(c);
            c
        }
        // a wide task (more flows than the 8 a task held before ABI 4): an AND split of 9..=40
        // flows into an AND join, an XOR split of 9..=40 guarded flows into an XOR join, or an
        // OR split of 9..=12 guarded flows into its structured OR-join (2^n - 1 choices for the
        // reference's and the seal's explorations); each branch goes straight to the join or
        // through one task
        9 => {
            let split = [Split::And, Split::Xor, Split::Or][rng.below(3) as usize];
            let n = if split == Split::Or {
                9 + rng.below(4) as usize
            } else {
                9 + rng.below(32) as usize
            };
            let s = m.task(Join::Xor, split, vec![c_in]);
            region.tasks.push(s);
            let default = rng.below(n as u64) as usize;
            let mut ends = vec![];
            for k in 0..n {
                let a = m.cond();
                region.conds.push(a);
                m.tasks[s as usize].branches.push(Branch {
                    cond: a,
                    guard: (split != Split::And).then(|| random_guard(rng)),
                    default: split != Split::And && k == default,
                    or_expect: None,
                });
                ends.push(if rng.below(3) == 0 {
                    block(m, rng, 0, a, region)
                } else {
                    a
                });
            }
            if split == Split::Or {
                for (k, &e) in ends.iter().enumerate() {
                    m.tasks[s as usize].branches[k].or_expect = Some(e);
                }
            }
            let join = match split {
                Split::And => Join::And,
                Split::Xor => Join::Xor,
                Split::Or => Join::Or,
            };
            let j = m.task(join, Split::And, ends);
            let c = m.cond();
            m.out(j, c);
            region.tasks.push(j);
            region.conds.push(c);
            c
        }
        // deferred choice: two tasks race for c_in, then an XOR join
        _ => {
            let mut ends = vec![];
            for _ in 0..2 {
                let t = m.task(Join::Xor, Split::And, vec![c_in]);
                let a = m.cond();
                m.out(t, a);
                region.tasks.push(t);
                region.conds.push(a);
                ends.push(block(m, rng, depth - 1, a, region));
            }
            let j = m.task(Join::Xor, Split::And, ends);
            let c = m.cond();
            m.out(j, c);
            region.tasks.push(j);
            region.conds.push(c);
            c
        }
    }
}

/// input -> start -> block -> end -> output, optionally with a cancel branch: start also
/// marks `cz`; task K (on cz) cancels the whole main region and marks the output.
fn generate(seed: u64) -> Model {
    let mut rng = Rng(seed | 1);
    loop {
        let mut m = Model::default();
        m.input = m.cond();
        m.output = m.cond();
        let start = m.task(Join::Xor, Split::And, vec![m.input]);
        let c0 = m.cond();
        m.out(start, c0);
        let mut region = Region {
            conds: vec![c0],
            tasks: vec![],
        };
        let depth = 1 + rng.below(4) as u32;
        let c1 = block(&mut m, &mut rng, depth, c0, &mut region);
        let end = m.task(Join::Xor, Split::And, vec![c1]);
        region.tasks.push(end);
        m.out(end, m.output);
        if rng.below(3) == 0 {
            let cz = m.cond();
            m.out(start, cz);
            let k = m.task(Join::Xor, Split::And, vec![cz]);
            m.out(k, m.output);
            m.tasks[k as usize].cancel_conds = region.conds.clone();
            m.tasks[k as usize].cancel_tasks = region.tasks.clone();
        }
        // multiple instances on some single tasks of about a third of the nets, from an RNG of
        // its own (the nets' shapes stay those of the seed)
        let mut mi_rng = Rng(seed.rotate_left(17) ^ 0x6d69_6d69_6d69_6d69 | 1);
        if mi_rng.below(3) == 0 {
            let singles: Vec<usize> = (0..m.tasks.len())
                .filter(|&t| {
                    let task = &m.tasks[t];
                    task.pre.len() == 1 && task.branches.len() == 1 && task.split == Split::And
                })
                .collect();
            for t in singles {
                let used = m.tasks.iter().filter(|t| t.mi.is_some()).count();
                if used >= MAX_MI_TASKS || mi_rng.below(2) == 0 {
                    continue;
                }
                let minimum = 1 + mi_rng.below(3) as u32;
                let maximum = minimum + mi_rng.below(3) as u32;
                let keep = mi_rng.below(3) == 0;
                let threshold = match mi_rng.below(4) {
                    0 if keep => 0,
                    0 | 1 => 1 + mi_rng.below(maximum as u64) as u32,
                    _ => maximum + mi_rng.below(2) as u32,
                };
                m.tasks[t].mi = Some(MiSpec {
                    minimum,
                    maximum,
                    threshold,
                    dynamic: mi_rng.below(2) == 0,
                    keep,
                    count_register: (mi_rng.below(3) == 0).then_some(mi_rng.below(4) as u8),
                });
            }
        }
        if m.nconds <= 64
            && m.tasks.len() <= 64
            && m.tasks.iter().all(|t| t.branches.len() <= MAX_BRANCHES)
        {
            // a general OR-join whose analysis passes the seal's caps is refused (OrJoinCap):
            // draw again
            match m.build() {
                Err(e) if e.error == Error::OrJoinCap => continue,
                _ => return m,
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// The reference interpreter
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
struct RefCase {
    tokens: BTreeMap<u32, u32>,
    busy: BTreeSet<u32>,
    or_expect: BTreeSet<u32>,
    absorb: BTreeSet<u32>,
    done: bool,
    completed: bool,
    cancelled: bool,
    explicit: bool,
    implicit: bool,
    seq: u64,
    regs: [i64; 8],
    /// Live MI tasks: their instances.
    mi: BTreeMap<u32, RefMi>,
}

#[derive(Debug, Clone, PartialEq, Default)]
struct RefMi {
    created: u32,
    started: BTreeSet<u32>,
    completed: BTreeSet<u32>,
}

fn term_holds(t: &Term, regs: &[i64; 8]) -> bool {
    let a = regs[t.lhs as usize];
    let b = match t.rhs {
        knhk_kernel::Operand::Const(k) => k,
        knhk_kernel::Operand::Reg(r) => regs[r as usize],
    };
    match t.op {
        GuardOp::Eq => a == b,
        GuardOp::Ne => a != b,
        GuardOp::Lt => a < b,
        GuardOp::Le => a <= b,
        GuardOp::Gt => a > b,
        GuardOp::Ge => a >= b,
        GuardOp::Bit => a & b != 0,
        GuardOp::NBit => a & b == 0,
        GuardOp::True => true,
        GuardOp::False => false,
    }
}

fn guard_holds(g: &Option<Guard>, regs: &[i64; 8]) -> bool {
    match g {
        None => true,
        Some(Guard::Term(t)) => term_holds(t, regs),
        Some(Guard::And(a, b)) => term_holds(a, regs) && term_holds(b, regs),
        Some(Guard::Or(a, b)) => term_holds(a, regs) || term_holds(b, regs),
    }
}

impl RefCase {
    fn new(m: &Model) -> RefCase {
        let mut tokens = BTreeMap::new();
        tokens.insert(m.input, 1);
        RefCase {
            tokens,
            busy: BTreeSet::new(),
            or_expect: BTreeSet::new(),
            absorb: BTreeSet::new(),
            done: false,
            completed: false,
            cancelled: false,
            explicit: false,
            implicit: false,
            seq: 0,
            regs: [0; 8],
            mi: BTreeMap::new(),
        }
    }

    fn marked(&self, c: u32) -> bool {
        self.tokens.get(&c).copied().unwrap_or(0) > 0
    }

    fn take(&mut self, c: u32) {
        self.tokens.remove(&c);
    }

    /// Effective join: a single input behaves as XOR, except the discriminator.
    fn join_of(task: &TaskM) -> Join {
        if task.join != Join::Discriminator && task.pre.len() == 1 {
            Join::Xor
        } else {
            task.join
        }
    }

    fn enabled(&self, m: &Model, t: u32) -> bool {
        if self.done || self.busy.contains(&t) || self.mi.contains_key(&t) {
            return false;
        }
        let task = &m.tasks[t as usize];
        match Self::join_of(task) {
            Join::And => task.pre.iter().all(|&c| self.marked(c)),
            Join::Xor | Join::Discriminator => task.pre.iter().any(|&c| self.marked(c)),
            Join::Or if task.general_or => self.yawl_or_join_enabled(m, t),
            Join::Or => {
                let need: Vec<u32> = task
                    .pre
                    .iter()
                    .copied()
                    .filter(|c| self.or_expect.contains(c))
                    .collect();
                !need.is_empty() && need.iter().all(|&c| self.marked(c))
            }
        }
    }

    /// The YAWL engine's OR-join rule, decided directly by exploring states at each call
    /// (Wynn et al. 2005; YAWL's E2WFOJNet): OR-join `j` is enabled when an input is marked
    /// and no state reachable from the current one without firing `j` marks the inputs marked
    /// now and a further one. As YAWL does, the question is asked of the net restricted to
    /// the conditions and tasks from which an input of `j` can be reached without passing
    /// `j`; busy tasks may complete (their outputs count); cancellation sets empty what they
    /// name; every XOR/OR split may take any flow / any non-empty set of flows (data is not
    /// known); other OR-joins and discriminators take one token from any one marked input;
    /// a completion that would put a token on a marked condition does not happen.
    fn yawl_or_join_enabled(&self, m: &Model, j: u32) -> bool {
        let join = &m.tasks[j as usize];
        let marked_inputs: BTreeSet<u32> = join
            .pre
            .iter()
            .copied()
            .filter(|&c| self.marked(c))
            .collect();
        if marked_inputs.is_empty() {
            return false;
        }
        if marked_inputs.len() == join.pre.len() {
            return true;
        }
        // the restricted net: backward from j's inputs, never through j
        let mut conds: BTreeSet<u32> = join.pre.iter().copied().collect();
        let mut tasks: BTreeSet<u32> = BTreeSet::new();
        loop {
            let before = (conds.len(), tasks.len());
            for (t, task) in m.tasks.iter().enumerate() {
                let t = t as u32;
                if t != j && task.branches.iter().any(|b| conds.contains(&b.cond)) {
                    tasks.insert(t);
                    conds.extend(task.pre.iter().copied());
                }
            }
            if (conds.len(), tasks.len()) == before {
                break;
            }
        }
        type State = (BTreeSet<u32>, BTreeSet<u32>);
        let start: State = (
            self.tokens
                .keys()
                .copied()
                .filter(|c| conds.contains(c) && self.marked(*c))
                .collect(),
            self.busy
                .iter()
                .copied()
                .filter(|t| tasks.contains(t))
                .collect(),
        );
        let mut seen: BTreeSet<State> = BTreeSet::new();
        let mut todo = vec![start.clone()];
        seen.insert(start);
        while let Some((marking, busy)) = todo.pop() {
            let mut next: Vec<State> = vec![];
            for &t in &tasks {
                let task = &m.tasks[t as usize];
                if !busy.contains(&t) {
                    let have: Vec<u32> = task
                        .pre
                        .iter()
                        .copied()
                        .filter(|c| marking.contains(c))
                        .collect();
                    let mut b2 = busy.clone();
                    b2.insert(t);
                    if Self::join_of(task) == Join::And {
                        if have.len() == task.pre.len() {
                            let mk = marking.iter().copied().filter(|c| !have.contains(c));
                            next.push((mk.collect(), b2));
                        }
                    } else {
                        for &c in &have {
                            let mut mk = marking.clone();
                            mk.remove(&c);
                            next.push((mk, b2.clone()));
                        }
                    }
                    continue;
                }
                let mut mk = marking.clone();
                let mut b2 = busy.clone();
                for c in &task.cancel_conds {
                    mk.remove(c);
                }
                for v in &task.cancel_tasks {
                    b2.remove(v);
                }
                b2.remove(&t);
                let n = task.branches.len();
                let choices: Vec<Vec<usize>> = match task.split {
                    Split::And => vec![(0..n).collect()],
                    Split::Xor => (0..n).map(|k| vec![k]).collect(),
                    Split::Or => (1u64..1 << n)
                        .map(|set| (0..n).filter(|&k| set & (1u64 << k) != 0).collect())
                        .collect(),
                };
                for choice in choices {
                    let out: Vec<u32> = choice
                        .iter()
                        .map(|&k| task.branches[k].cond)
                        .filter(|c| conds.contains(c))
                        .collect();
                    if out.iter().any(|c| mk.contains(c)) {
                        continue; // the kernel refuses it (SAFETY_VIOLATION)
                    }
                    let mut m2 = mk.clone();
                    m2.extend(out);
                    next.push((m2, b2.clone()));
                }
            }
            for state in next {
                let inputs: BTreeSet<u32> = join
                    .pre
                    .iter()
                    .copied()
                    .filter(|c| state.0.contains(c))
                    .collect();
                if inputs.is_superset(&marked_inputs) && inputs.len() > marked_inputs.len() {
                    return false; // a further input can still be marked: wait
                }
                if seen.insert(state.clone()) {
                    todo.push(state);
                }
            }
        }
        true
    }

    fn enabled_set(&self, m: &Model) -> u64 {
        (0..m.tasks.len() as u32)
            .filter(|&t| self.enabled(m, t))
            .fold(0, |acc, t| acc | 1 << t)
    }

    /// Consumes the tokens of starting `t` (caller checked enabled) and marks it busy.
    fn do_start(&mut self, m: &Model, t: u32) {
        let task = &m.tasks[t as usize];
        match Self::join_of(task) {
            Join::And => {
                for &c in &task.pre {
                    self.take(c);
                }
            }
            Join::Xor => {
                let lowest = task.pre.iter().copied().filter(|&c| self.marked(c)).min();
                if let Some(c) = lowest {
                    self.take(c);
                }
            }
            Join::Or if task.general_or => {
                for &c in &task.pre {
                    self.take(c); // every marked input
                }
            }
            Join::Or => {
                for &c in &task.pre {
                    if self.or_expect.remove(&c) {
                        self.take(c);
                    }
                }
            }
            Join::Discriminator => {
                for &c in &task.pre {
                    if self.marked(c) {
                        self.take(c);
                    } else {
                        self.absorb.insert(c);
                    }
                }
            }
        }
        self.busy.insert(t);
    }

    /// The branches a completing task produces into.
    fn chosen_branches(m: &Model, t: u32, bits: u64) -> Vec<usize> {
        let task = &m.tasks[t as usize];
        let n = task.branches.len();
        let default = task.branches.iter().position(|b| b.default);
        match task.split {
            Split::And => (0..n).collect(),
            Split::Xor => {
                let first = (0..n).find(|&k| Some(k) != default && bits & (1u64 << k) != 0);
                vec![first
                    .or(default)
                    .expect("validated XOR split has a default")]
            }
            Split::Or => {
                let on: Vec<usize> = (0..n).filter(|&k| bits & (1u64 << k) != 0).collect();
                if on.is_empty() {
                    vec![default.expect("validated OR split has a default")]
                } else {
                    on
                }
            }
        }
    }

    fn guard_bits(&self, m: &Model, t: u32) -> u64 {
        let task = &m.tasks[t as usize];
        task.branches
            .iter()
            .enumerate()
            .filter(|(_, b)| guard_holds(&b.guard, &self.regs))
            .fold(0, |acc, (k, _)| acc | 1u64 << k)
    }

    /// Completes busy `t` on a copy; returns the new state or the refusal.
    fn do_complete(&self, m: &Model, t: u32, bits: u64) -> Result<RefCase, Error> {
        let task = &m.tasks[t as usize];
        let mut next = self.clone();
        for &c in &task.cancel_conds {
            next.take(c);
            next.or_expect.remove(&c);
            next.absorb.remove(&c);
        }
        for &v in &task.cancel_tasks {
            next.busy.remove(&v);
            next.mi.remove(&v);
        }
        next.busy.remove(&t);
        let chosen = Self::chosen_branches(m, t, bits);
        let mut produce = vec![];
        for &k in &chosen {
            let b = &task.branches[k];
            if next.absorb.remove(&b.cond) {
                continue; // a discriminator's late arrival, absorbed
            }
            produce.push(b.cond);
        }
        if produce.iter().any(|&c| next.marked(c)) {
            return Err(Error::SafetyViolation);
        }
        for c in produce {
            *next.tokens.entry(c).or_insert(0) += 1;
        }
        for &k in &chosen {
            if let Some(e) = task.branches[k].or_expect {
                next.or_expect.insert(e);
            }
        }
        next.settle(m);
        Ok(next)
    }

    fn settle(&mut self, m: &Model) {
        if self.marked(m.output) {
            let others = self.tokens.keys().any(|&c| c != m.output)
                || !self.busy.is_empty()
                || !self.mi.is_empty();
            if others {
                self.explicit = true;
            }
            self.tokens.clear();
            self.tokens.insert(m.output, 1);
            self.busy.clear();
            self.mi.clear();
            self.or_expect.clear();
            self.absorb.clear();
            self.done = true;
            self.completed = true;
        } else if self.tokens.is_empty() && self.busy.is_empty() && self.mi.is_empty() {
            self.done = true;
            self.completed = true;
            self.implicit = true;
        }
    }

    fn admit(&self, m: &Model, t: u32) -> Result<(), Error> {
        if t as usize >= m.tasks.len() {
            return Err(Error::BadTask);
        }
        if self.done {
            return Err(Error::CaseComplete);
        }
        Ok(())
    }

    /// An MI task's start: the count (register or minimum) within [minimum, maximum], the
    /// instances created, and with threshold 0 the task's completion at once.
    fn start_mi(
        &self,
        m: &Model,
        t: u32,
        spec: MiSpec,
        count: Option<i64>,
    ) -> Result<RefCase, Error> {
        let count = count.unwrap_or_else(|| match spec.count_register {
            Some(r) => self.regs[r as usize],
            None => i64::from(spec.minimum),
        });
        if count < i64::from(spec.minimum) || count > i64::from(spec.maximum) {
            return Err(Error::MiLimit);
        }
        let mut n = self.clone();
        n.do_start(m, t);
        n.mi.insert(
            t,
            RefMi {
                created: count as u32,
                ..RefMi::default()
            },
        );
        if spec.threshold == 0 {
            let bits = self.guard_bits(m, t);
            n = n.do_complete(m, t, bits)?;
        }
        Ok(n)
    }

    /// Admission of an instance step: the task exists, is MI and has live instances.
    fn admit_mi(&self, m: &Model, t: u32) -> Result<MiSpec, Error> {
        self.admit(m, t)?;
        let spec = m.tasks[t as usize].mi.ok_or(Error::NotMiTask)?;
        if !self.mi.contains_key(&t) {
            return Err(Error::NotStarted);
        }
        Ok(spec)
    }

    fn apply(&mut self, m: &Model, op: &Step) -> Result<(), Error> {
        let next = match *op {
            Step::Start(t) => {
                self.admit(m, t)?;
                if !self.enabled(m, t) {
                    return Err(Error::NotEnabled);
                }
                if let Some(spec) = m.tasks[t as usize].mi {
                    self.start_mi(m, t, spec, None)?
                } else {
                    let mut n = self.clone();
                    n.do_start(m, t);
                    n
                }
            }
            Step::StartInstance(t, i) => {
                self.admit_mi(m, t)?;
                let mi = &self.mi[&t];
                if i >= mi.created || mi.started.contains(&i) {
                    return Err(Error::BadInstance);
                }
                let mut n = self.clone();
                n.mi.get_mut(&t).expect("live").started.insert(i);
                n
            }
            Step::CompleteInstance(t, i, bits) => {
                let spec = self.admit_mi(m, t)?;
                let mi = &self.mi[&t];
                if i >= mi.created || !mi.started.contains(&i) || mi.completed.contains(&i) {
                    return Err(Error::BadInstance);
                }
                let mut n = self.clone();
                let slot = n.mi.get_mut(&t).expect("live");
                slot.completed.insert(i);
                let (completed, created) = (slot.completed.len() as u32, slot.created);
                if n.busy.contains(&t) {
                    if completed >= spec.threshold.min(created) {
                        if !spec.keep || completed == created {
                            n.mi.remove(&t);
                        }
                        let bits = bits.unwrap_or_else(|| self.guard_bits(m, t));
                        n = n.do_complete(m, t, bits)?;
                    }
                } else if completed == created {
                    n.mi.remove(&t);
                    n.settle(m);
                }
                n
            }
            Step::AddInstance(t) => {
                let spec = self.admit_mi(m, t)?;
                if !self.busy.contains(&t) {
                    return Err(Error::NotStarted);
                }
                if !spec.dynamic || self.mi[&t].created >= spec.maximum {
                    return Err(Error::MiLimit);
                }
                let mut n = self.clone();
                n.mi.get_mut(&t).expect("live").created += 1;
                n
            }
            Step::Complete(t, bits) => {
                self.admit(m, t)?;
                if m.tasks[t as usize].mi.is_some() {
                    return Err(Error::MiTask);
                }
                if !self.busy.contains(&t) {
                    return Err(Error::NotStarted);
                }
                let bits = bits.unwrap_or_else(|| self.guard_bits(m, t));
                self.do_complete(m, t, bits)?
            }
            Step::Fire(t, bits) => {
                self.admit(m, t)?;
                if m.tasks[t as usize].mi.is_some() {
                    return Err(Error::MiTask);
                }
                if !self.enabled(m, t) {
                    return Err(Error::NotEnabled);
                }
                let bits = bits.unwrap_or_else(|| self.guard_bits(m, t));
                let mut n = self.clone();
                n.do_start(m, t);
                n.do_complete(m, t, bits)?
            }
            Step::CancelTask(t) => {
                self.admit(m, t)?;
                let mut n = self.clone();
                if n.busy.contains(&t) || n.mi.contains_key(&t) {
                    n.busy.remove(&t);
                    n.mi.remove(&t);
                } else if n.enabled(m, t) {
                    n.do_start(m, t);
                    n.busy.remove(&t);
                } else {
                    return Err(Error::NotEnabled);
                }
                n.settle(m);
                n
            }
            Step::CancelCase => {
                if self.done {
                    return Err(Error::CaseComplete);
                }
                let mut n = self.clone();
                n.tokens.clear();
                n.busy.clear();
                n.or_expect.clear();
                n.absorb.clear();
                n.mi.clear();
                n.done = true;
                n.cancelled = true;
                n
            }
            Step::SetReg(..) => unreachable!("handled by the driver"),
        };
        *self = next;
        self.seq += 1;
        Ok(())
    }

    fn state(&self, m: &Model) -> CaseState {
        if self.cancelled {
            CaseState::Cancelled
        } else if self.completed {
            CaseState::Complete
        } else if self.busy.is_empty()
            && self.mi.is_empty()
            && !self.tokens.is_empty()
            && self.enabled_set(m) == 0
        {
            CaseState::Deadlocked
        } else {
            CaseState::Running
        }
    }

    fn flags(&self) -> u32 {
        let mut f = 0;
        if self.done {
            f |= flags::DONE;
        }
        if self.completed {
            f |= flags::COMPLETED;
        }
        if self.cancelled {
            f |= flags::CANCELLED;
        }
        if self.explicit {
            f |= flags::EXPLICIT_TERMINATION;
        }
        if self.implicit {
            f |= flags::IMPLICIT_TERMINATION;
        }
        f
    }

    fn assert_matches(&self, case: &Case, m: &Model, net: &Net, ctx: &str) {
        let set = |s: &BTreeSet<u32>| s.iter().fold(0u64, |a, &c| a | 1 << c);
        let marking = self
            .tokens
            .iter()
            .filter(|(_, &n)| n > 0)
            .fold(0u64, |a, (&c, _)| a | 1 << c);
        assert!(
            self.tokens.values().all(|&n| n <= 1),
            "{ctx}: reference holds two tokens"
        );
        assert_eq!(case.marking(), marking, "{ctx}: marking");
        assert_eq!(case.busy(), set(&self.busy), "{ctx}: busy");
        assert_eq!(case.or_expect(), set(&self.or_expect), "{ctx}: or_expect");
        assert_eq!(case.absorb(), set(&self.absorb), "{ctx}: absorb");
        assert_eq!(case.flags(), self.flags(), "{ctx}: flags");
        assert_eq!(case.seq(), self.seq, "{ctx}: seq");
        assert_eq!(case.regs(), &self.regs, "{ctx}: regs");
        assert_eq!(net.state(case), self.state(m), "{ctx}: state");
        assert_eq!(net.enabled(case), self.enabled_set(m), "{ctx}: enabled set");
        let live: BTreeSet<u32> = self.mi.keys().copied().collect();
        assert_eq!(case.mi_live(), set(&live), "{ctx}: mi_live");
        for (&t, mi) in &self.mi {
            let got = case.instances(net, t).expect("live instances");
            assert_eq!(got.created, mi.created, "{ctx}: task {t} instances created");
            for i in 0..mi.created + 1 {
                let want = if i >= mi.created {
                    InstanceState::None
                } else if mi.completed.contains(&i) {
                    InstanceState::Completed
                } else if mi.started.contains(&i) {
                    InstanceState::Started
                } else {
                    InstanceState::Created
                };
                assert_eq!(got.state(i), want, "{ctx}: task {t} instance {i}");
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Driving both
// ------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum Step {
    Start(u32),
    Complete(u32, Option<u64>),
    Fire(u32, Option<u64>),
    CancelTask(u32),
    CancelCase,
    SetReg(usize, i64),
    StartInstance(u32, u32),
    CompleteInstance(u32, u32, Option<u64>),
    AddInstance(u32),
}

/// Turns raw proptest bytes into a step, biased towards enabled and busy tasks so sequences
/// get deep into the net.
fn pick_step(
    raw: (u8, u8, u8, u8),
    m: &Model,
    enabled: u64,
    busy: u64,
    case: &Case,
    net: &Net,
) -> Step {
    let (kind, which, bits, val) = raw;
    let ntasks = m.tasks.len() as u32;
    let choose = |mask: u64| -> u32 {
        if mask == 0 || which % 8 == 0 {
            // sometimes any task, including out-of-range ones
            which as u32 % (ntasks + 2)
        } else {
            let n = mask.count_ones();
            let mut k = which as u32 % n;
            let mut rest = mask;
            loop {
                let t = rest.trailing_zeros();
                if k == 0 {
                    return t;
                }
                k -= 1;
                rest &= rest - 1;
            }
        }
    };
    // six bits from the byte, repeated every six flows (up to flow 63: wide tasks' caller bits
    // past 32 travel in the upper word)
    let supplied = if bits % 3 == 0 {
        Some(u64::from(bits >> 2) * 0x0041_0410_4104_1041)
    } else {
        None
    };
    // nets with MI tasks: while some have live instances, about half the steps are instance
    // steps on one of them (instance ids up to one past the created ones)
    let live = case.mi_live();
    if live != 0 && matches!(kind % 20, 11..=14 | 17..=19) {
        let t = choose(live);
        let created = case.instances(net, t).map_or(0, |x| x.created);
        let i = u32::from(val) % (created + 1);
        return match kind % 20 {
            11 | 12 | 17 => Step::StartInstance(t, i),
            13 | 14 | 18 => Step::CompleteInstance(t, i, supplied),
            _ => Step::AddInstance(t),
        };
    }
    match kind % 20 {
        0..=6 => Step::Fire(choose(enabled), supplied),
        7..=10 => Step::Start(choose(enabled)),
        11..=14 => Step::Complete(choose(busy), supplied),
        15 => Step::CancelTask(choose(enabled | busy)),
        16 if val % 4 == 0 => Step::CancelCase,
        _ => Step::SetReg(which as usize % 4, val as i64 % 5 - 1),
    }
}

fn kernel_apply(net: &Net, case: &mut Case, step: Step) -> Result<(), Error> {
    match step {
        Step::Start(t) => net.start(case, t),
        Step::Complete(t, None) => net.complete(case, t),
        Step::Complete(t, Some(b)) => net.complete_with64(case, t, b),
        Step::Fire(t, None) => net.fire(case, t),
        Step::Fire(t, Some(b)) => net.fire_with64(case, t, b),
        Step::CancelTask(t) => net.cancel_task(case, t),
        Step::CancelCase => net.cancel_case(case),
        Step::StartInstance(t, i) => net.start_instance(case, t, i),
        Step::CompleteInstance(t, i, None) => net.complete_instance(case, t, i),
        Step::CompleteInstance(t, i, Some(b)) => net.complete_instance_with64(case, t, i, b),
        Step::AddInstance(t) => net.add_instance(case, t).map(|_| ()),
        Step::SetReg(..) => unreachable!(),
    }
}

/// Instance steps have no beat op: the shadows run them through the single-case calls.
fn is_instance_step(step: Step) -> bool {
    matches!(
        step,
        Step::StartInstance(..) | Step::CompleteInstance(..) | Step::AddInstance(_)
    )
}

fn beat_event(step: Step) -> Event {
    let task = |t: u32| t.min(255) as u8;
    match step {
        Step::Start(t) => Event::new(0, Op::Start, task(t)),
        Step::Complete(t, None) => Event::new(0, Op::Complete, task(t)),
        Step::Complete(t, Some(b)) => Event::with_bits64(0, Op::Complete, task(t), b),
        Step::Fire(t, None) => Event::new(0, Op::Fire, task(t)),
        Step::Fire(t, Some(b)) => Event::with_bits64(0, Op::Fire, task(t), b),
        Step::CancelTask(t) => Event::new(0, Op::CancelTask, task(t)),
        Step::CancelCase => Event::new(0, Op::CancelCase, 0),
        Step::SetReg(..)
        | Step::StartInstance(..)
        | Step::CompleteInstance(..)
        | Step::AddInstance(_) => {
            unreachable!()
        }
    }
}

fn run_sequence(seed: u64, raw_steps: &[(u8, u8, u8, u8)]) {
    let model = generate(seed);
    let net = model
        .to_net()
        .unwrap_or_else(|e| panic!("seed {seed}: generated net refused: {e}\n{model:#?}"));
    let mut case = Case::new(&net).expect("case");
    let mut shadow = [case]; // the same events through Net::beat
                             // ... through the array beat on every path this CPU has (Best, Scalar, Avx2, Avx512):
                             // eight copies of the case, every lane the same event on its own copy, so that a fire
                             // goes through the vector rules (a full beat on distinct cases) ...
    let paths: Vec<BlockPath> = core::iter::once(BlockPath::Best)
        .chain(BlockPath::available())
        .collect();
    let mut arrays: Vec<[Case; 8]> = paths.iter().map(|_| [case; 8]).collect();
    // ... and through the block paths: per path, eight copies of the case side by side, every
    // lane given the same event, so a fire goes through the vector rules in lockstep
    let mut blocks: Vec<Block> = paths
        .iter()
        .map(|_| {
            let mut block = Block::new(&net).expect("block");
            for lane in 0..8 {
                block.set(lane, &case);
            }
            block
        })
        .collect();
    let has_mi = model.tasks.iter().any(|t| t.mi.is_some());
    let mut reference = RefCase::new(&model);
    reference.assert_matches(&case, &model, &net, "initial");
    for (i, &raw) in raw_steps.iter().enumerate() {
        let step = pick_step(raw, &model, net.enabled(&case), case.busy(), &case, &net);
        let ctx = format!("seed {seed} step {i} {step:?}");
        if let Step::SetReg(r, v) = step {
            case.regs_mut()[r] = v;
            shadow[0].regs_mut()[r] = v;
            reference.regs[r] = v;
            for block in &mut blocks {
                for lane in 0..8 {
                    let mut c = block.get(lane).expect("lane");
                    c.regs_mut()[r] = v;
                    block.set(lane, &c);
                }
            }
            for array in &mut arrays {
                for c in array.iter_mut() {
                    c.regs_mut()[r] = v;
                }
            }
            continue;
        }
        let before = case;
        // the case saved and restored before the step: the same case, and the same status
        // and bytes after it (so, step by step, a restored case runs as the original)
        let saved = before
            .save(&net)
            .unwrap_or_else(|e| panic!("{ctx}: save: {e}"));
        let mut restored =
            Case::restore(&net, &saved).unwrap_or_else(|e| panic!("{ctx}: restore: {e}"));
        assert_eq!(restored, before, "{ctx}: restored case");
        let got = kernel_apply(&net, &mut case, step);
        let want = reference.apply(&model, &step);
        assert_eq!(got, want, "{ctx}: status");
        if got.is_err() {
            assert_eq!(case, before, "{ctx}: a refusal changed the case");
        }
        reference.assert_matches(&case, &model, &net, &ctx);
        assert_eq!(case.check(&net), Ok(()), "{ctx}: the case stays valid");
        assert_eq!(
            kernel_apply(&net, &mut restored, step),
            got,
            "{ctx}: restored status"
        );
        assert_eq!(restored, case, "{ctx}: restored case after the step");

        if is_instance_step(step) {
            assert_eq!(
                kernel_apply(&net, &mut shadow[0], step),
                got,
                "{ctx}: shadow status"
            );
            assert_eq!(shadow[0], case, "{ctx}: shadow case");
            for array in &mut arrays {
                for c in array.iter_mut() {
                    assert_eq!(kernel_apply(&net, c, step), got, "{ctx}: array status");
                    assert_eq!(*c, case, "{ctx}: array case");
                }
            }
            continue;
        }
        // Tasks >= 256 cannot be expressed in a beat lane; they are refused above anyway.
        let mut statuses = [0u8; 8];
        net.beat(&mut shadow, &[beat_event(step)], &mut statuses)
            .expect("beat");
        let beat_status = if statuses[0] == 0 {
            Ok(())
        } else {
            Err(Error::from_raw(statuses[0] as u32))
        };
        assert_eq!(beat_status, got, "{ctx}: beat status");
        assert_eq!(shadow[0], case, "{ctx}: beat case");

        let lane_status = |st: u8| {
            if st == 0 {
                Ok(())
            } else {
                Err(Error::from_raw(u32::from(st)))
            }
        };
        for (&path, array) in paths.iter().zip(arrays.iter_mut()) {
            let mut events = [beat_event(step); 8];
            for (lane, e) in events.iter_mut().enumerate() {
                *e = e.with_case_index(lane as u32);
            }
            let mut st = [0u8; 8];
            net.beat_on(array, &events, &mut st, path).expect("beat_on");
            for (lane, c) in array.iter().enumerate() {
                assert_eq!(
                    lane_status(st[lane]),
                    got,
                    "{ctx}: beat {path:?} lane {lane} status"
                );
                assert_eq!(*c, case, "{ctx}: beat {path:?} lane {lane} case");
            }
        }

        for (&path, block) in paths.iter().zip(blocks.iter_mut()) {
            if has_mi {
                break; // a block holds no MI slots
            }
            let mut lane_statuses = [0u8; 8];
            match step {
                Step::Fire(t, None) if t < u32::from(NO_TASK) => {
                    net.block_fire(
                        core::slice::from_mut(block),
                        &[t as u8; 8],
                        &mut lane_statuses,
                        path,
                    )
                    .expect("block_fire");
                }
                _ => net
                    .block_beat(block, &[beat_event(step); 8], 0xFF, &mut lane_statuses)
                    .expect("block_beat"),
            }
            for (lane, &st) in lane_statuses.iter().enumerate() {
                assert_eq!(
                    lane_status(st),
                    got,
                    "{ctx}: block {path:?} lane {lane} status"
                );
                assert_eq!(
                    block.get(lane),
                    Some(case),
                    "{ctx}: block {path:?} lane {lane} case"
                );
            }
        }
    }
}

/// The paths the differential test runs every step through: Best, Scalar and each vector path
/// this CPU has (printed, so a run says what it covered).
#[test]
fn paths_covered() {
    let paths: Vec<&str> = BlockPath::available().map(BlockPath::name).collect();
    println!(
        "differential paths on this CPU: best = {}, named = {paths:?}",
        BlockPath::best().name()
    );
    assert!(paths.contains(&"scalar"));
    assert!(BlockPath::best().supported());
    #[cfg(target_arch = "x86_64")]
    {
        assert_eq!(
            BlockPath::Avx2.supported(),
            std::arch::is_x86_feature_detected!("avx2")
        );
        assert_eq!(
            BlockPath::Avx512.supported(),
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512cd")
                && std::arch::is_x86_feature_detected!("avx512vl")
        );
    }
}

fn cases() -> u32 {
    std::env::var("KNHK_DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn kernel_matches_reference(
        seed in any::<u64>(),
        steps in proptest::collection::vec(any::<(u8, u8, u8, u8)>(), 1..60),
    ) {
        run_sequence(seed, &steps);
    }
}

/// Every kind of block appears in the generated nets (so the property covers them all).
#[test]
fn generator_covers_every_pattern() {
    let mut seen = BTreeSet::new();
    for seed in 0..2000u64 {
        let m = generate(seed * 7919 + 1);
        for t in &m.tasks {
            seen.insert(format!("join {:?}", RefCase::join_of(t)));
            seen.insert(format!("split {:?}", t.split));
            if !t.cancel_conds.is_empty() {
                seen.insert("cancel".to_string());
            }
            if t.branches
                .iter()
                .any(|b| b.cond <= t.pre.iter().copied().min().unwrap_or(0))
            {
                seen.insert("back edge".to_string());
            }
        }
        if m.tasks.iter().any(|t| t.general_or) {
            seen.insert("general or-join".to_string());
            // a canceller Z: cancels a region and does not end the case
            if m.tasks.iter().any(|z| {
                !z.cancel_conds.is_empty() && z.branches.iter().all(|b| b.cond != m.output)
            }) {
                seen.insert("general or-join with cancellation".to_string());
            }
        }
        for t in &m.tasks {
            if t.branches.len() > 8 {
                seen.insert(format!("wide split {:?}", t.split));
            }
            if t.branches.len() > 32 {
                seen.insert("split past 32 flows".to_string());
            }
            if t.pre.len() > 8 {
                seen.insert(format!("wide join {:?}", RefCase::join_of(t)));
            }
        }
        if m.tasks.iter().any(|t| {
            t.pre.len() == 1 && m.tasks.iter().filter(|u| u.pre.contains(&t.pre[0])).count() > 1
        }) {
            seen.insert("deferred choice".to_string());
        }
        for spec in m.tasks.iter().filter_map(|t| t.mi) {
            seen.insert("mi".to_string());
            if spec.dynamic {
                seen.insert("mi dynamic".to_string());
            }
            if spec.keep && spec.threshold > 0 {
                seen.insert("mi keep".to_string());
            }
            if spec.threshold == 0 {
                seen.insert("mi without sync".to_string());
            }
            if spec.threshold < spec.minimum && spec.threshold > 0 && !spec.keep {
                seen.insert("mi cancelling threshold".to_string());
            }
            if spec.count_register.is_some() {
                seen.insert("mi count register".to_string());
            }
        }
    }
    for want in [
        "join And",
        "join Xor",
        "join Or",
        "join Discriminator",
        "split And",
        "split Xor",
        "split Or",
        "cancel",
        "back edge",
        "deferred choice",
        "general or-join",
        "general or-join with cancellation",
        "wide split And",
        "wide split Xor",
        "wide split Or",
        "split past 32 flows",
        "wide join And",
        "wide join Xor",
        "wide join Or",
        "mi",
        "mi dynamic",
        "mi keep",
        "mi without sync",
        "mi cancelling threshold",
        "mi count register",
    ] {
        assert!(
            seen.contains(want),
            "generator never produced {want}: {seen:?}"
        );
    }
}

/// The general OR-joins of the generated nets are decided both ways, with inputs partly
/// marked: some waits (a further input can still be marked) and some fires (none can), so
/// the property above compares real decisions, not only the trivial ones.
#[test]
fn general_or_joins_decide_both_ways() {
    let (mut waits, mut fires) = (0u32, 0u32);
    for seed in 0..2000u64 {
        let model = generate(seed * 104_729 + 7);
        let Some(joins) = Some(
            (0..model.tasks.len() as u32)
                .filter(|&t| model.tasks[t as usize].general_or)
                .collect::<Vec<_>>(),
        )
        .filter(|j| !j.is_empty()) else {
            continue;
        };
        let net = model.to_net().expect("net");
        let mut case = Case::new(&net).expect("case");
        let mut reference = RefCase::new(&model);
        let mut rng = Rng(seed | 1);
        for _ in 0..80 {
            for &j in &joins {
                let pre = &model.tasks[j as usize].pre;
                let marked = pre.iter().filter(|&&c| reference.marked(c)).count();
                if marked > 0 && marked < pre.len() && !reference.busy.contains(&j) {
                    let kernel = net.enabled(&case) & (1 << j) != 0;
                    assert_eq!(kernel, reference.enabled(&model, j), "seed {seed} join {j}");
                    if kernel {
                        fires += 1;
                    } else {
                        waits += 1;
                    }
                }
            }
            let enabled = net.enabled(&case);
            let busy = case.busy();
            let raw = (
                rng.below(16) as u8,
                rng.below(256) as u8 | 1,
                rng.below(256) as u8,
                rng.below(256) as u8,
            );
            let step = match pick_step(raw, &model, enabled, busy, &case, &net) {
                Step::CancelCase | Step::CancelTask(_) => continue,
                s => s,
            };
            if let Step::SetReg(r, v) = step {
                case.regs_mut()[r] = v;
                reference.regs[r] = v;
                continue;
            }
            let got = kernel_apply(&net, &mut case, step);
            assert_eq!(got, reference.apply(&model, &step), "seed {seed}");
            if net.state(&case) != CaseState::Running {
                break;
            }
        }
    }
    println!("general OR-joins, partly marked: {waits} waits, {fires} fires");
    assert!(waits >= 200 && fires >= 100, "waits {waits}, fires {fires}");
}

/// Random runs of nets with MI tasks reach every MI outcome (so the property exercises them):
/// a threshold that withdraws instances, instances running on past a keep threshold and
/// draining, a task completing at its start (threshold 0), dynamic additions; each step agrees
/// with the reference.
#[test]
fn mi_outcomes_covered() {
    let mut seen = BTreeSet::new();
    let mut rng = Rng(0x5eed_0001);
    for seed in 0..3000u64 {
        let model = generate(seed * 104_729 + 3);
        if model.tasks.iter().all(|t| t.mi.is_none()) {
            continue;
        }
        let net = model.to_net().expect("net");
        let mut case = Case::new(&net).expect("case");
        let mut reference = RefCase::new(&model);
        for _ in 0..80 {
            let raw = (
                rng.below(20) as u8,
                rng.below(256) as u8 | 1,
                rng.below(256) as u8,
                rng.below(256) as u8,
            );
            let step = match pick_step(raw, &model, net.enabled(&case), case.busy(), &case, &net) {
                Step::CancelCase => continue,
                Step::SetReg(r, v) => {
                    case.regs_mut()[r] = v;
                    reference.regs[r] = v;
                    continue;
                }
                s => s,
            };
            let before = case;
            let got = kernel_apply(&net, &mut case, step);
            assert_eq!(got, reference.apply(&model, &step), "seed {seed} {step:?}");
            reference.assert_matches(&case, &model, &net, &format!("seed {seed} {step:?}"));
            if got.is_err() {
                continue;
            }
            match step {
                Step::CompleteInstance(t, ..) => {
                    let bit = 1u64 << t;
                    let was = before.instances(&net, t).expect("live");
                    if before.busy() & bit != 0 && case.busy() & bit == 0 {
                        if case.mi_live() & bit != 0 {
                            seen.insert("keep runs on");
                        } else if was.completed() + 1 < was.created {
                            seen.insert("threshold withdraws");
                        } else {
                            seen.insert("all complete");
                        }
                    } else if before.busy() & bit == 0 && case.mi_live() & bit == 0 {
                        seen.insert("drained");
                    }
                }
                Step::AddInstance(_) => {
                    seen.insert("added");
                }
                Step::Start(t)
                    if model.tasks[t as usize].mi.is_some()
                        && case.busy() & (1 << t) == 0
                        && case.mi_live() & (1 << t) != 0 =>
                {
                    seen.insert("completes at start");
                }
                _ => {}
            }
        }
    }
    for want in [
        "keep runs on",
        "threshold withdraws",
        "all complete",
        "drained",
        "added",
        "completes at start",
    ] {
        assert!(seen.contains(want), "never saw {want}: {seen:?}");
    }
}
