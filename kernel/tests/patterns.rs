//! One test per workflow control-flow pattern, through the safe Rust API.
use knhk_kernel::{
    flags, Case, CaseState, Element, Error, Event, Guard, GuardOp, InstanceState, Join, MiSpec,
    Net, Op, Split, Term, MI_MAX_INSTANCES, MI_WINDOW,
};

/// A small net-building helper: conditions by name order, tasks with pre/post lists.
struct B {
    net: Box<Net>,
}

impl B {
    fn new(conditions: u32) -> B {
        let mut net = Box::new(Net::new());
        for _ in 0..conditions {
            net.add_condition().unwrap();
        }
        net.set_input(0).unwrap();
        net.set_output(conditions - 1).unwrap();
        B { net }
    }
    fn task(&mut self, join: Join, split: Split, pre: &[u32], post: &[u32]) -> u32 {
        let t = self.net.add_task(join, split).unwrap();
        for &c in pre {
            self.net.input_flow(c, t).unwrap();
        }
        for (k, &c) in post.iter().enumerate() {
            // the last flow of an XOR/OR split is its default
            let default = split != Split::And && k == post.len() - 1;
            self.net.output_flow(t, c, None, default).unwrap();
        }
        t
    }
    fn guarded(
        &mut self,
        join: Join,
        split: Split,
        pre: &[u32],
        post: &[(u32, Guard)],
        default: u32,
    ) -> u32 {
        let t = self.net.add_task(join, split).unwrap();
        for &c in pre {
            self.net.input_flow(c, t).unwrap();
        }
        for (c, g) in post {
            self.net.output_flow(t, *c, Some(g), false).unwrap();
        }
        self.net.output_flow(t, default, None, true).unwrap();
        t
    }
    fn seal(mut self) -> (Box<Net>, Case) {
        self.net.seal().unwrap();
        let case = Case::new(&self.net).unwrap();
        (self.net, case)
    }
}

const fn bit(c: u32) -> u64 {
    1 << c
}

/// A refused operation leaves the case byte-for-byte unchanged.
fn refused(
    net: &Net,
    case: &mut Case,
    op: impl Fn(&Net, &mut Case) -> Result<(), Error>,
    want: Error,
) {
    let before = *case;
    assert_eq!(op(net, case), Err(want));
    assert_eq!(*case, before);
}

#[test]
fn wcp01_sequence() {
    let mut b = B::new(3);
    let a = b.task(Join::Xor, Split::And, &[0], &[1]);
    let t = b.task(Join::Xor, Split::And, &[1], &[2]);
    let (net, mut case) = b.seal();
    refused(&net, &mut case, |n, c| n.fire(c, t), Error::NotEnabled);
    net.fire(&mut case, a).unwrap();
    assert_eq!(case.marking(), bit(1));
    net.fire(&mut case, t).unwrap();
    assert_eq!(net.state(&case), CaseState::Complete);
    refused(&net, &mut case, |n, c| n.fire(c, a), Error::CaseComplete);
}

/// `Net::fire_sequence`: one call for a case's next steps; stops at the first refusal, naming
/// how many fired, with the case as after them.
#[test]
fn wcp01_sequence_in_one_call() {
    let mut b = B::new(4);
    let a = b.task(Join::Xor, Split::And, &[0], &[1]);
    let t = b.task(Join::Xor, Split::And, &[1], &[2]);
    let u = b.task(Join::Xor, Split::And, &[2], &[3]);
    let (net, case) = b.seal();
    let mut c = case;
    assert_eq!(net.fire_sequence(&mut c, &[a, t]), Ok(()));
    assert_eq!(c.marking(), bit(2));
    // u fires, then a is refused: the case completed
    assert_eq!(
        net.fire_sequence(&mut c, &[u, a, t]),
        Err((1, Error::CaseComplete))
    );
    assert_eq!(net.state(&c), CaseState::Complete);
    // a refusal first: nothing fired, nothing changed
    let mut d = case;
    assert_eq!(
        net.fire_sequence(&mut d, &[t, a]),
        Err((0, Error::NotEnabled))
    );
    assert_eq!(d, case);
    assert_eq!(net.fire_sequence(&mut d, &[]), Ok(()));
    // the same steps one call each end in the same bytes
    let mut e = case;
    for x in [a, t, u] {
        net.fire(&mut e, x).unwrap();
    }
    let mut f = case;
    net.fire_sequence(&mut f, &[a, t, u]).unwrap();
    assert_eq!(e, f);
}

#[test]
fn wcp02_parallel_split_and_wcp03_synchronization() {
    let mut b = B::new(6);
    let a = b.task(Join::Xor, Split::And, &[0], &[1, 2]);
    let x = b.task(Join::Xor, Split::And, &[1], &[3]);
    let y = b.task(Join::Xor, Split::And, &[2], &[4]);
    let j = b.task(Join::And, Split::And, &[3, 4], &[5]);
    let (net, mut case) = b.seal();
    net.fire(&mut case, a).unwrap();
    assert_eq!(net.enabled(&case), bit(x) | bit(y));
    net.fire(&mut case, y).unwrap();
    refused(&net, &mut case, |n, c| n.fire(c, j), Error::NotEnabled);
    net.fire(&mut case, x).unwrap();
    net.fire(&mut case, j).unwrap();
    assert_eq!(net.state(&case), CaseState::Complete);
}

#[test]
fn wcp04_exclusive_choice_and_wcp05_simple_merge() {
    let mut b = B::new(5);
    let small = Guard::Term(Term::constant(0, GuardOp::Lt, 100));
    let a = b.guarded(Join::Xor, Split::Xor, &[0], &[(1, small)], 2);
    let x = b.task(Join::Xor, Split::And, &[1], &[3]);
    let y = b.task(Join::Xor, Split::And, &[2], &[3]);
    let m = b.task(Join::Xor, Split::And, &[3], &[4]);
    let (net, case) = b.seal();
    for (amount, branch, other) in [(5, x, y), (500, y, x)] {
        let mut c = case;
        c.regs_mut()[0] = amount;
        net.fire(&mut c, a).unwrap();
        assert_eq!(net.enabled(&c), bit(branch), "amount {amount}");
        refused(&net, &mut c, |n, c| n.fire(c, other), Error::NotEnabled);
        net.fire(&mut c, branch).unwrap();
        assert_eq!(c.marking(), bit(3));
        net.fire(&mut c, m).unwrap();
        assert_eq!(net.state(&c), CaseState::Complete);
    }
}

#[test]
fn wcp06_multi_choice_and_wcp07_structured_synchronizing_merge() {
    let mut b = B::new(6);
    let g1 = Guard::Term(Term::constant(0, GuardOp::Bit, 1));
    let g2 = Guard::Term(Term::constant(0, GuardOp::Bit, 2));
    let t = b.net.add_task(Join::Xor, Split::Or).unwrap();
    b.net.input_flow(0, t).unwrap();
    b.net.output_flow(t, 1, Some(&g1), false).unwrap();
    b.net.output_flow(t, 2, Some(&g2), true).unwrap();
    let x = b.task(Join::Xor, Split::And, &[1], &[3]);
    let y = b.task(Join::Xor, Split::And, &[2], &[4]);
    let j = b.task(Join::Or, Split::And, &[3, 4], &[5]);
    let (net, case) = b.seal();
    // both branches: the join waits for both
    let mut c = case;
    c.regs_mut()[0] = 3;
    net.fire(&mut c, t).unwrap();
    assert_eq!(c.marking(), bit(1) | bit(2));
    net.fire(&mut c, x).unwrap();
    refused(&net, &mut c, |n, c| n.fire(c, j), Error::NotEnabled);
    net.fire(&mut c, y).unwrap();
    net.fire(&mut c, j).unwrap();
    assert_eq!(net.state(&c), CaseState::Complete);
    // one branch: the join does not wait for the other
    let mut c = case;
    c.regs_mut()[0] = 1;
    net.fire(&mut c, t).unwrap();
    net.fire(&mut c, x).unwrap();
    assert_eq!(net.enabled(&c), bit(j));
    net.fire(&mut c, j).unwrap();
    assert_eq!(net.state(&c), CaseState::Complete);
}

#[test]
fn wcp09_structured_discriminator() {
    let mut b = B::new(8);
    let a = b.task(Join::Xor, Split::And, &[0], &[1, 2]);
    let x = b.task(Join::Xor, Split::And, &[1], &[3]);
    let y = b.task(Join::Xor, Split::And, &[2], &[4]);
    let d = b.task(Join::Discriminator, Split::And, &[3, 4], &[5]);
    let e = b.task(Join::Xor, Split::And, &[5], &[6]);
    let f = b.task(Join::Xor, Split::And, &[6], &[7]);
    let (net, mut case) = b.seal();
    net.fire(&mut case, a).unwrap();
    net.fire(&mut case, y).unwrap();
    net.fire(&mut case, d).unwrap(); // first arrival fires the discriminator
    net.fire(&mut case, e).unwrap();
    assert_eq!(case.absorb(), bit(3));
    net.fire(&mut case, x).unwrap(); // late arrival absorbed
    assert_eq!(case.marking(), bit(6));
    assert_eq!(net.enabled(&case), bit(f));
    net.fire(&mut case, f).unwrap();
    assert_eq!(net.state(&case), CaseState::Complete);
}

#[test]
fn wcp10_arbitrary_cycles() {
    let mut b = B::new(4);
    let a = b.task(Join::Xor, Split::And, &[0], &[1]);
    let again = Guard::Term(Term::constant(0, GuardOp::Lt, 3));
    let l = b.guarded(Join::Xor, Split::Xor, &[1], &[(1, again)], 2);
    let z = b.task(Join::Xor, Split::And, &[2], &[3]);
    let (net, mut case) = b.seal();
    net.fire(&mut case, a).unwrap();
    for round in 0..3 {
        case.regs_mut()[0] = round;
        net.fire(&mut case, l).unwrap();
        assert_eq!(case.marking(), bit(1), "round {round} loops back");
    }
    case.regs_mut()[0] = 3;
    net.fire(&mut case, l).unwrap();
    net.fire(&mut case, z).unwrap();
    assert_eq!(net.state(&case), CaseState::Complete);
    assert_eq!(case.seq(), 6);
}

#[test]
fn wcp11_implicit_termination() {
    let mut b = B::new(3);
    let a = b.task(Join::Xor, Split::And, &[0], &[1]);
    b.task(Join::Xor, Split::And, &[1], &[2]);
    let (net, mut case) = b.seal();
    net.start(&mut case, a).unwrap();
    net.cancel_task(&mut case, a).unwrap(); // nothing marked, nothing busy
    assert_eq!(net.state(&case), CaseState::Complete);
    assert!(case.flags() & flags::IMPLICIT_TERMINATION != 0);
}

#[test]
fn wcp16_deferred_choice() {
    let mut b = B::new(3);
    let a = b.task(Join::Xor, Split::And, &[0], &[1]);
    let x = b.task(Join::Xor, Split::And, &[1], &[2]);
    let y = b.task(Join::Xor, Split::And, &[1], &[2]);
    let (net, mut case) = b.seal();
    net.fire(&mut case, a).unwrap();
    assert_eq!(net.enabled(&case), bit(x) | bit(y));
    net.start(&mut case, y).unwrap(); // first start wins
    refused(&net, &mut case, |n, c| n.start(c, x), Error::NotEnabled);
    net.complete(&mut case, y).unwrap();
    assert_eq!(net.state(&case), CaseState::Complete);
}

#[test]
fn wcp19_cancel_task() {
    let mut b = B::new(4);
    let a = b.task(Join::Xor, Split::And, &[0], &[1, 2]);
    let x = b.task(Join::Xor, Split::And, &[1], &[3]);
    let y = b.task(Join::Xor, Split::And, &[2], &[3]);
    let _ = y;
    // x and y both produce the output: the first to finish ends the case (WCP-43)
    let (net, mut case) = b.seal();
    net.fire(&mut case, a).unwrap();
    net.cancel_task(&mut case, x).unwrap(); // enabled: its token is withdrawn
    assert_eq!(case.marking(), bit(2));
    refused(
        &net,
        &mut case,
        |n, c| n.cancel_task(c, x),
        Error::NotEnabled,
    );
    net.start(&mut case, y).unwrap();
    net.cancel_task(&mut case, y).unwrap(); // busy: withdrawn
    assert_eq!(case.busy(), 0);
    assert_eq!(net.state(&case), CaseState::Complete);
}

#[test]
fn wcp20_cancel_case() {
    let mut b = B::new(3);
    let a = b.task(Join::Xor, Split::And, &[0], &[1]);
    b.task(Join::Xor, Split::And, &[1], &[2]);
    let (net, mut case) = b.seal();
    net.start(&mut case, a).unwrap();
    net.cancel_case(&mut case).unwrap();
    assert_eq!(net.state(&case), CaseState::Cancelled);
    assert_eq!((case.marking(), case.busy()), (0, 0));
    refused(
        &net,
        &mut case,
        |n, c| n.cancel_case(c),
        Error::CaseComplete,
    );
}

#[test]
fn wcp25_cancel_region_and_wcp43_explicit_termination() {
    let mut b = B::new(5);
    let a = b.task(Join::Xor, Split::And, &[0], &[1, 2]);
    let x = b.task(Join::Xor, Split::And, &[1], &[3]);
    let e = b.task(Join::Xor, Split::And, &[3], &[4]);
    let k = b.task(Join::Xor, Split::And, &[2], &[4]);
    b.net.add_cancel_condition(k, 1).unwrap();
    b.net.add_cancel_condition(k, 3).unwrap();
    b.net.add_cancel_task(k, x).unwrap();
    let (net, case) = b.seal();
    // K cancels the region {c1, c3, x} while x is busy
    let mut c = case;
    net.fire(&mut c, a).unwrap();
    net.start(&mut c, x).unwrap();
    net.fire(&mut c, k).unwrap();
    assert_eq!((c.marking(), c.busy()), (bit(4), 0));
    assert_eq!(c.flags() & flags::EXPLICIT_TERMINATION, 0);
    // the other way round: E ends the case while c2 is still marked
    let mut c = case;
    net.fire(&mut c, a).unwrap();
    net.fire(&mut c, x).unwrap();
    net.fire(&mut c, e).unwrap();
    assert_eq!(c.marking(), bit(4));
    assert_ne!(c.flags() & flags::EXPLICIT_TERMINATION, 0);
}

#[test]
fn wcp08_multi_merge_is_refused_at_seal() {
    let mut b = B::new(5);
    b.task(Join::Xor, Split::And, &[0], &[1, 2]);
    b.task(Join::Xor, Split::And, &[1], &[3]);
    b.task(Join::Xor, Split::And, &[2], &[3]);
    b.task(Join::Xor, Split::And, &[3], &[4]);
    let err = b.net.seal().unwrap_err();
    assert_eq!(err.error, Error::MultiMerge);
    assert_eq!(err.element, Element::Condition(3));
    assert_eq!(err.other, Some(0));
    assert!(!b.net.is_sealed());
}

/// WCP-37 local synchronizing merge with no matching OR-split: A AND-splits into three
/// branches; B may leave the join's region (c7, E ends the case). The OR-join D fires when an
/// input is marked and nothing upstream (tokens, busy tasks) can mark another one.
fn wcp37_net() -> (Box<Net>, Case, [u32; 6]) {
    let mut b = B::new(9);
    let a = b.task(Join::Xor, Split::And, &[0], &[1, 2, 3]);
    let bt = b.guarded(
        Join::Xor,
        Split::Xor,
        &[1],
        &[(4, Guard::Term(Term::constant(0, GuardOp::Eq, 0)))],
        7,
    );
    let c = b.task(Join::Xor, Split::And, &[2], &[5]);
    let f = b.task(Join::Xor, Split::And, &[3], &[6]);
    let d = b.task(Join::Or, Split::And, &[4, 5, 6], &[8]);
    let e = b.task(Join::Xor, Split::And, &[7], &[8]);
    let (net, case) = b.seal();
    assert_eq!(net.general_or_joins(), bit(d));
    (net, case, [a, bt, c, f, d, e])
}

#[test]
fn wcp37_local_synchronizing_merge() {
    let (net, case, [a, bt, c, f, d, _e]) = wcp37_net();
    // every branch arrives: D waits for each, a busy B included
    let mut k = case;
    net.fire(&mut k, a).unwrap();
    net.fire(&mut k, c).unwrap();
    refused(&net, &mut k, |n, x| n.start(x, d), Error::NotEnabled);
    net.fire(&mut k, f).unwrap();
    refused(&net, &mut k, |n, x| n.fire(x, d), Error::NotEnabled);
    net.start(&mut k, bt).unwrap();
    assert_eq!(net.enabled(&k) & bit(d), 0, "a busy B may still mark c3");
    net.complete(&mut k, bt).unwrap();
    assert_eq!(k.marking(), bit(4) | bit(5) | bit(6));
    net.fire(&mut k, d).unwrap();
    assert_eq!(net.state(&k), CaseState::Complete);
    assert_eq!(k.flags() & flags::EXPLICIT_TERMINATION, 0);
    assert_eq!(k.or_expect(), 0, "a general OR-join keeps no side words");

    // B leaves the region: D fires on c4 and c6 alone and consumes both
    let mut k = case;
    k.regs_mut()[0] = 1;
    net.fire(&mut k, a).unwrap();
    net.fire(&mut k, c).unwrap();
    net.fire(&mut k, bt).unwrap();
    refused(&net, &mut k, |n, x| n.fire(x, d), Error::NotEnabled); // c7 may still give c6
    net.fire(&mut k, f).unwrap();
    assert_ne!(net.enabled(&k) & bit(d), 0);
    net.start(&mut k, d).unwrap();
    assert_eq!(k.marking(), bit(7));

    // WCP-19: withdrawing F's token releases D
    let mut k = case;
    net.fire(&mut k, a).unwrap();
    net.fire(&mut k, bt).unwrap();
    net.fire(&mut k, c).unwrap();
    refused(&net, &mut k, |n, x| n.fire(x, d), Error::NotEnabled);
    net.cancel_task(&mut k, f).unwrap();
    net.fire(&mut k, d).unwrap();
    assert_eq!(net.state(&k), CaseState::Complete);
}

/// WCP-38 general synchronizing merge: D waits for a looping branch (B, L) and is released
/// when Z (a deferred choice against C) cancels that branch's region, busy tasks included.
#[test]
fn wcp38_general_synchronizing_merge() {
    let mut b = B::new(7);
    let a = b.task(Join::Xor, Split::And, &[0], &[1, 2]);
    let bt = b.guarded(
        Join::Xor,
        Split::Xor,
        &[1],
        &[(5, Guard::Term(Term::constant(0, GuardOp::Gt, 0)))],
        3,
    );
    let l = b.task(Join::Xor, Split::And, &[5], &[1]);
    let c = b.task(Join::Xor, Split::And, &[2], &[4]);
    let z = b.task(Join::Xor, Split::And, &[2], &[4]);
    for cond in [1, 5] {
        b.net.add_cancel_condition(z, cond).unwrap();
    }
    for victim in [bt, l] {
        b.net.add_cancel_task(z, victim).unwrap();
    }
    let d = b.task(Join::Or, Split::And, &[3, 4], &[6]);
    let (net, case) = b.seal();

    let mut k = case;
    k.regs_mut()[0] = 1;
    net.fire(&mut k, a).unwrap();
    net.fire(&mut k, c).unwrap();
    for _ in 0..3 {
        refused(&net, &mut k, |n, x| n.fire(x, d), Error::NotEnabled);
        net.fire(&mut k, bt).unwrap(); // loops: p5
        refused(&net, &mut k, |n, x| n.fire(x, d), Error::NotEnabled);
        net.start(&mut k, l).unwrap();
        refused(&net, &mut k, |n, x| n.fire(x, d), Error::NotEnabled);
        net.complete(&mut k, l).unwrap();
    }
    k.regs_mut()[0] = 0;
    net.fire(&mut k, bt).unwrap();
    net.fire(&mut k, d).unwrap();
    assert_eq!(net.state(&k), CaseState::Complete);

    // Z cancels the looping branch while B is busy: D fires on p4 alone
    let mut k = case;
    k.regs_mut()[0] = 1;
    net.fire(&mut k, a).unwrap();
    net.start(&mut k, bt).unwrap();
    net.fire(&mut k, z).unwrap();
    assert_eq!((k.marking(), k.busy()), (bit(4), 0));
    assert_eq!(net.enabled(&k), bit(d));
    net.fire(&mut k, d).unwrap();
    assert_eq!(net.state(&k), CaseState::Complete);
    assert_eq!(k.flags() & flags::EXPLICIT_TERMINATION, 0);
}

/// The OR-join fed by an AND-split that ABI 2 refused as non-local now runs; past the caps
/// seal refuses, naming the OR-join and the cap.
#[test]
fn nonlocal_or_join_runs_and_caps_refuse() {
    let mut b = B::new(4);
    let a = b.task(Join::Xor, Split::And, &[0], &[1, 2]);
    let j = b.task(Join::Or, Split::And, &[1, 2], &[3]);
    let (net, mut k) = b.seal();
    net.start(&mut k, a).unwrap();
    refused(&net, &mut k, |n, x| n.fire(x, j), Error::NotEnabled);
    net.complete(&mut k, a).unwrap();
    net.fire(&mut k, j).unwrap();
    assert_eq!(net.state(&k), CaseState::Complete);

    // 7 inputs
    let mut b = B::new(9);
    b.task(Join::Xor, Split::And, &[0], &[1, 2, 3, 4, 5, 6, 7]);
    let j = b.task(Join::Or, Split::And, &[1, 2, 3, 4, 5, 6, 7], &[8]);
    let err = b.net.seal().unwrap_err();
    assert_eq!(err.error, Error::OrJoinCap);
    assert_eq!(err.element, Element::Task(j));
    assert_eq!(err.or_join_cap(), Some(knhk_kernel::OrJoinCap::Inputs));
    assert!(err.to_string().contains("KNHK_OR_JOIN_CAP"), "{err}");
    assert!(err.to_string().contains("KNHK_ORJOIN_MAX_INPUTS"), "{err}");
    assert!(!b.net.is_sealed());

    // six branches of four tasks: 9^6 states, past ORJOIN_MAX_STATES
    let mut b = B::new(2 + 6 * 5);
    let mut ends = vec![];
    let firsts: Vec<u32> = (0..6).map(|k| 1 + 5 * k).collect();
    b.task(Join::Xor, Split::And, &[0], &firsts);
    for &first in &firsts {
        for n in 0..4 {
            b.task(Join::Xor, Split::And, &[first + n], &[first + n + 1]);
        }
        ends.push(first + 4);
    }
    let j = b.task(Join::Or, Split::And, &ends, &[31]);
    let err = b.net.seal().unwrap_err();
    assert_eq!(
        (err.error, err.element),
        (Error::OrJoinCap, Element::Task(j))
    );
    assert_eq!(err.or_join_cap(), Some(knhk_kernel::OrJoinCap::States));
    assert!(knhk_kernel::ORJOIN_MAX_STATES < 9usize.pow(6));
}

#[test]
fn beat_runs_lanes_in_order() {
    let mut b = B::new(3);
    let a = b.task(Join::Xor, Split::And, &[0], &[1]);
    let t = b.task(Join::Xor, Split::And, &[1], &[2]);
    let (net, case) = b.seal();
    let mut cases = [case; 4];
    let events = [
        Event::new(0, Op::Fire, a as u8),
        Event::new(0, Op::Fire, t as u8),
        Event::new(1, Op::Fire, t as u8),
        Event::new(9, Op::Fire, a as u8),
    ];
    let mut statuses = [0xFF; 8];
    net.beat(&mut cases, &events, &mut statuses).unwrap();
    assert_eq!(
        &statuses[..4],
        &[0, 0, Error::NotEnabled as u8, Error::BadArgument as u8]
    );
    assert_eq!(net.state(&cases[0]), CaseState::Complete);
    assert_eq!(cases[1], case);
    assert_eq!(
        net.beat(&mut cases, &[Event::default(); 9], &mut statuses),
        Err(Error::BadArgument)
    );
}

#[test]
fn unsealed_net_refuses_cases() {
    let net = Net::new();
    assert_eq!(Case::new(&net).unwrap_err(), Error::NotSealed);
}

/// Wide tasks: a 62-way AND split into a 62-input AND join (the widest that keeps the case
/// running in a 64-condition net: no flow enters the input, a flow onto the output ends the
/// case), 64 flows accepted by the builder and refused at seal only for the flow into the
/// input; a 20-way XOR split and a 20-way OR split (into a structured 20-input OR-join), each
/// flow guarded, the last the default.
#[test]
fn wide_and_split_and_join() {
    let mut b = B::new(64);
    let mid: Vec<u32> = (1..63).collect();
    let w = b.task(Join::Xor, Split::And, &[0], &mid);
    let j = b.task(Join::And, Split::And, &mid, &[63]);
    let (net, case) = b.seal();
    assert_eq!(net.task(w).unwrap().branch_count(), 62);
    assert_eq!(
        net.task(w).unwrap().branch_conditions().collect::<Vec<_>>(),
        mid
    );
    let all_mid = mid.iter().fold(0, |m, &c| m | bit(c));
    let mut c = case;
    refused(&net, &mut c, |n, c| n.fire(c, j), Error::NotEnabled);
    net.fire(&mut c, w).unwrap();
    assert_eq!(c.marking(), all_mid);
    assert_eq!(net.enabled(&c), bit(j));
    net.fire(&mut c, j).unwrap();
    assert_eq!(net.state(&c), CaseState::Complete);
    // two-phase (the general path): the same tokens
    let mut c = case;
    net.start(&mut c, w).unwrap();
    refused(&net, &mut c, |n, c| n.start(c, j), Error::NotEnabled);
    net.complete(&mut c, w).unwrap();
    assert_eq!(c.marking(), all_mid);
    net.start(&mut c, j).unwrap();
    net.complete(&mut c, j).unwrap();
    assert_eq!(net.state(&c), CaseState::Complete);

    // 64 flows on one task: the builder holds them; seal refuses the flow into the input
    let mut b = B::new(64);
    let all: Vec<u32> = (0..64).collect();
    let t = b.task(Join::Xor, Split::And, &[0], &all);
    assert_eq!(
        b.net.task(t).unwrap().branch_count(),
        knhk_kernel::MAX_BRANCHES
    );
    let err = b.net.seal().unwrap_err();
    assert_eq!(err.error, Error::InputHasInflow);
}

fn wide_choice(split: Split) -> (Box<Net>, Case, u32, Vec<u32>, Vec<u32>, u32) {
    // i(0) -> S -> c_k (1..=20) -> T_k -> d_k (21..=40) -> J -> o(41)
    let mut b = B::new(42);
    let s = b.net.add_task(Join::Xor, split).unwrap();
    b.net.input_flow(0, s).unwrap();
    for k in 0..20u32 {
        let g = match split {
            Split::Xor => Guard::Term(Term::constant(0, GuardOp::Eq, i64::from(k))),
            _ => Guard::Term(Term::constant(0, GuardOp::Bit, 1 << k)),
        };
        b.net.output_flow(s, 1 + k, Some(&g), k == 19).unwrap();
    }
    let tasks: Vec<u32> = (0..20u32)
        .map(|k| b.task(Join::Xor, Split::And, &[1 + k], &[21 + k]))
        .collect();
    let ins: Vec<u32> = (21..41).collect();
    let join = if split == Split::Xor {
        Join::Xor
    } else {
        Join::Or
    };
    let j = b.task(join, Split::And, &ins, &[41]);
    let (net, case) = b.seal();
    (net, case, s, tasks, ins, j)
}

#[test]
fn wide_xor_split_with_guards() {
    let (net, case, s, tasks, _, j) = wide_choice(Split::Xor);
    assert_eq!(net.task(s).unwrap().branch_count(), 20);
    assert_eq!(net.task(s).unwrap().default_branch(), Some(19));
    for (v, k) in [(0, 0), (7, 7), (18, 18), (19, 19), (-5, 19), (1000, 19)] {
        let mut c = case;
        c.regs_mut()[0] = v;
        net.fire(&mut c, s).unwrap();
        assert_eq!(c.marking(), bit(1 + k), "regs[0] = {v}");
        assert_eq!(net.enabled(&c), bit(tasks[k as usize]));
        net.fire(&mut c, tasks[k as usize]).unwrap();
        net.fire(&mut c, j).unwrap();
        assert_eq!(net.state(&c), CaseState::Complete);
    }
    // caller bits: the first true flow in order; none true: the default
    let mut c = case;
    net.fire_with64(&mut c, s, (1 << 12) | (1 << 15)).unwrap();
    assert_eq!(c.marking(), bit(13));
    let mut c = case;
    net.fire_with(&mut c, s, 0).unwrap();
    assert_eq!(c.marking(), bit(20));
}

#[test]
fn wide_or_split_with_guards_into_structured_or_join() {
    let (net, case, s, tasks, ins, j) = wide_choice(Split::Or);
    assert_eq!(
        net.general_or_joins(),
        0,
        "the 20-way split matches the join (WCP-7)"
    );
    for pick in [0u64, 1, 1 << 19, (1 << 3) | (1 << 7) | (1 << 18), 0xF_FFFF] {
        let mut c = case;
        c.regs_mut()[0] = pick as i64;
        let chosen = if pick == 0 { 1 << 19 } else { pick };
        net.fire(&mut c, s).unwrap();
        let want: u64 = (0..20)
            .filter(|k| chosen >> k & 1 == 1)
            .map(|k| bit(1 + k))
            .sum();
        assert_eq!(c.marking(), want, "pick {pick:#x}");
        let expected: u64 = (0..20)
            .filter(|&k| chosen >> k & 1 == 1)
            .map(|k| bit(ins[k]))
            .sum();
        assert_eq!(c.or_expect(), expected);
        let fired: Vec<usize> = (0..20).filter(|&k| chosen >> k & 1 == 1).collect();
        for (n, &k) in fired.iter().enumerate() {
            if n + 1 == fired.len() {
                refused(&net, &mut c, |net, c| net.fire(c, j), Error::NotEnabled);
            }
            net.fire(&mut c, tasks[k]).unwrap();
        }
        net.fire(&mut c, j).unwrap();
        assert_eq!(net.state(&c), CaseState::Complete);
    }
}

// ---- multiple-instance tasks (WCP-12..15, 34..36) ----

/// i -> A -> p -> M (multiple instances) -> c -> B -> o. Returns (net, case after A, M, B).
fn mi_net(spec: MiSpec) -> (Box<Net>, Case, u32, u32) {
    let mut b = B::new(4);
    let a = b.task(Join::Xor, Split::And, &[0], &[1]);
    let m = b.task(Join::Xor, Split::And, &[1], &[2]);
    let t = b.task(Join::Xor, Split::And, &[2], &[3]);
    b.net.set_mi(m, spec).unwrap();
    let (net, mut case) = b.seal();
    net.fire(&mut case, a).unwrap();
    (net, case, m, t)
}

fn run(net: &Net, case: &mut Case, m: u32, i: u32) {
    net.start_instance(case, m, i).unwrap();
    net.complete_instance(case, m, i).unwrap();
}

/// A refusal leaves the case unchanged.
fn refuse(
    net: &Net,
    case: &mut Case,
    want: Error,
    op: impl FnOnce(&Net, &mut Case) -> Result<(), Error>,
) {
    let before = *case;
    assert_eq!(op(net, case), Err(want));
    assert_eq!(*case, before);
}

#[test]
fn wcp13_mi_design_time() {
    let (net, mut case, m, t) = mi_net(MiSpec::fixed(3));
    assert_eq!(net.mi_spec(m), Some(MiSpec::fixed(3)));
    refuse(&net, &mut case, Error::MiTask, |n, c| n.fire(c, m));
    net.start(&mut case, m).unwrap();
    refuse(&net, &mut case, Error::MiTask, |n, c| n.complete(c, m));
    refuse(&net, &mut case, Error::BadInstance, |n, c| {
        n.complete_instance(c, m, 0)
    });
    refuse(&net, &mut case, Error::BadInstance, |n, c| {
        n.start_instance(c, m, 3)
    });
    refuse(&net, &mut case, Error::NotMiTask, |n, c| {
        n.start_instance(c, t, 0)
    });
    let inst = case.instances(&net, m).unwrap();
    assert_eq!((inst.created, inst.completed()), (3, 0));
    run(&net, &mut case, m, 1);
    run(&net, &mut case, m, 0);
    assert_eq!(
        case.instances(&net, m).unwrap().state(1),
        InstanceState::Completed
    );
    assert_eq!(case.busy(), bit(m));
    run(&net, &mut case, m, 2);
    assert_eq!(
        (case.busy(), case.mi_live(), case.marking()),
        (0, 0, bit(2))
    );
    assert!(case.instances(&net, m).is_none());
    net.fire(&mut case, t).unwrap();
    assert_eq!(net.state(&case), CaseState::Complete);
}

#[test]
fn wcp14_mi_run_time() {
    let spec = MiSpec {
        count_register: Some(2),
        ..MiSpec {
            minimum: 1,
            maximum: 50,
            threshold: 50,
            dynamic: false,
            keep: false,
            count_register: None,
        }
    };
    let (net, mut case, m, _) = mi_net(spec);
    case.regs_mut()[2] = 51;
    refuse(&net, &mut case, Error::MiLimit, |n, c| n.start(c, m));
    case.regs_mut()[2] = 7;
    net.start(&mut case, m).unwrap();
    assert_eq!(case.instances(&net, m).unwrap().created, 7);
    for i in (0..7).rev() {
        run(&net, &mut case, m, i);
    }
    assert_eq!(case.marking(), bit(2));
    // the caller's count
    let (net, mut case, m, _) = mi_net(spec);
    refuse(&net, &mut case, Error::MiLimit, |n, c| n.start_mi(c, m, 0));
    net.start_mi(&mut case, m, 2).unwrap();
    assert_eq!(case.instances(&net, m).unwrap().created, 2);
}

#[test]
fn wcp15_mi_no_a_priori_knowledge() {
    let spec = MiSpec {
        minimum: 1,
        maximum: 3,
        threshold: 3,
        dynamic: true,
        keep: false,
        count_register: None,
    };
    let (net, mut case, m, _) = mi_net(spec);
    net.start(&mut case, m).unwrap();
    net.start_instance(&mut case, m, 0).unwrap();
    assert_eq!(net.add_instance(&mut case, m), Ok(1));
    assert_eq!(net.add_instance(&mut case, m), Ok(2));
    refuse(&net, &mut case, Error::MiLimit, |n, c| {
        n.add_instance(c, m).map(|_| ())
    });
    net.complete_instance(&mut case, m, 0).unwrap();
    run(&net, &mut case, m, 2);
    assert_eq!(case.busy(), bit(m));
    run(&net, &mut case, m, 1);
    assert_eq!((case.busy(), case.marking()), (0, bit(2)));
}

#[test]
fn wcp35_cancelling_partial_join() {
    let spec = MiSpec {
        minimum: 4,
        maximum: 4,
        threshold: 2,
        dynamic: false,
        keep: false,
        count_register: None,
    };
    let (net, mut case, m, _) = mi_net(spec);
    net.start(&mut case, m).unwrap();
    for i in 0..4 {
        net.start_instance(&mut case, m, i).unwrap();
    }
    net.complete_instance(&mut case, m, 2).unwrap();
    net.complete_instance(&mut case, m, 0).unwrap();
    // the threshold: the task completes, instances 1 and 3 are withdrawn
    assert_eq!(
        (case.busy(), case.mi_live(), case.marking()),
        (0, 0, bit(2))
    );
    refuse(&net, &mut case, Error::NotStarted, |n, c| {
        n.complete_instance(c, m, 1)
    });
}

#[test]
fn wcp34_static_partial_join() {
    let spec = MiSpec {
        minimum: 3,
        maximum: 3,
        threshold: 1,
        dynamic: false,
        keep: true,
        count_register: None,
    };
    let (net, mut case, m, t) = mi_net(spec);
    net.start(&mut case, m).unwrap();
    run(&net, &mut case, m, 1);
    // the task completed; its other instances run on
    assert_eq!(
        (case.busy(), case.mi_live(), case.marking()),
        (0, bit(m), bit(2))
    );
    assert_eq!(net.state(&case), CaseState::Running);
    run(&net, &mut case, m, 0);
    run(&net, &mut case, m, 2);
    assert_eq!(case.mi_live(), 0);
    net.fire(&mut case, t).unwrap();
    assert_eq!(case.flags() & flags::EXPLICIT_TERMINATION, 0);
}

#[test]
fn wcp12_mi_without_synchronization() {
    let spec = MiSpec {
        minimum: 2,
        maximum: 2,
        threshold: 0,
        dynamic: false,
        keep: true,
        count_register: None,
    };
    let (net, mut case, m, t) = mi_net(spec);
    net.start(&mut case, m).unwrap();
    assert_eq!(
        (case.busy(), case.mi_live(), case.marking()),
        (0, bit(m), bit(2))
    );
    run(&net, &mut case, m, 0);
    // the case ends while instance 1 is unfinished: explicit termination withdraws it
    net.fire(&mut case, t).unwrap();
    assert_eq!(net.state(&case), CaseState::Complete);
    assert_ne!(case.flags() & flags::EXPLICIT_TERMINATION, 0);
    assert_eq!(case.mi_live(), 0);
}

#[test]
fn wcp36_dynamic_partial_join() {
    let spec = MiSpec {
        minimum: 1,
        maximum: 8,
        threshold: 2,
        dynamic: true,
        keep: false,
        count_register: None,
    };
    let (net, mut case, m, _) = mi_net(spec);
    net.start(&mut case, m).unwrap();
    net.add_instance(&mut case, m).unwrap();
    net.add_instance(&mut case, m).unwrap();
    run(&net, &mut case, m, 2);
    assert_eq!(case.busy(), bit(m));
    run(&net, &mut case, m, 0);
    assert_eq!(
        (case.busy(), case.mi_live(), case.marking()),
        (0, 0, bit(2))
    );
}

#[test]
fn mi_limits() {
    let mut b = B::new(2);
    let t = b.task(Join::Xor, Split::And, &[0], &[1]);
    let bad = MiSpec {
        maximum: MI_MAX_INSTANCES + 1,
        ..MiSpec::fixed(1)
    };
    assert_eq!(b.net.set_mi(t, bad), Err(Error::BadMi));
    assert_eq!(
        b.net.set_mi(
            t,
            MiSpec {
                threshold: 0,
                ..MiSpec::fixed(1)
            }
        ),
        Err(Error::BadMi)
    );
    // 2^16 instances, at most MI_WINDOW started past the oldest unfinished one
    let (net, mut case, m, _) = mi_net(MiSpec::fixed(MI_MAX_INSTANCES));
    net.start(&mut case, m).unwrap();
    for i in 0..MI_WINDOW {
        net.start_instance(&mut case, m, i).unwrap();
    }
    refuse(&net, &mut case, Error::MiWindow, |n, c| {
        n.start_instance(c, m, MI_WINDOW)
    });
    net.complete_instance(&mut case, m, 0).unwrap();
    net.start_instance(&mut case, m, MI_WINDOW).unwrap();
    for i in 1..=MI_WINDOW {
        net.complete_instance(&mut case, m, i).unwrap();
    }
    for i in MI_WINDOW + 1..MI_MAX_INSTANCES {
        run(&net, &mut case, m, i);
    }
    assert_eq!((case.busy(), case.marking()), (0, bit(2)));
}
