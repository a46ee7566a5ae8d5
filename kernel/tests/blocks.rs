//! Blocks (eight cases side by side) through the safe Rust API, checked lane by lane against
//! the single-case operations on copies of the same cases.
use knhk_kernel::{
    Block, BlockPath, Case, Error, Event, Guard, GuardOp, Join, Net, Op, Split, Term, NO_TASK,
};

/// `i -> A -> (B || C) -> D (AND join) -> X (XOR on regs[1] > 10) -> G | H -> M (XOR join of
/// both branches) -> o`: every kind of task the short path takes.
fn net() -> Box<Net> {
    let mut net = Box::new(Net::new());
    let c: Vec<u32> = (0..10).map(|_| net.add_condition().unwrap()).collect();
    let mut task = |join, split, ins: &[u32], outs: &[(u32, Option<Guard>, bool)]| {
        let t = net.add_task(join, split).unwrap();
        for &x in ins {
            net.input_flow(c[x as usize], t).unwrap();
        }
        for (x, g, d) in outs {
            net.output_flow(t, c[*x as usize], g.as_ref(), *d).unwrap();
        }
    };
    task(Join::Xor, Split::And, &[0], &[(1, None, false)]);
    task(
        Join::Xor,
        Split::And,
        &[1],
        &[(2, None, false), (3, None, false)],
    );
    task(Join::Xor, Split::And, &[2], &[(4, None, false)]);
    task(Join::Xor, Split::And, &[3], &[(5, None, false)]);
    task(Join::And, Split::And, &[4, 5], &[(6, None, false)]);
    let gt = Guard::Term(Term::constant(1, GuardOp::Gt, 10));
    task(
        Join::Xor,
        Split::Xor,
        &[6],
        &[(7, Some(gt), false), (8, None, true)],
    );
    task(Join::Xor, Split::And, &[7, 8], &[(9, None, false)]);
    net.set_input(c[0]).unwrap();
    net.set_output(c[9]).unwrap();
    net.seal().unwrap();
    net
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 32) % n
    }
}

#[test]
fn get_and_set_copy_one_lane() {
    let net = net();
    let mut b = Block::new(&net).unwrap();
    let fresh = Case::new(&net).unwrap();
    assert!((0..8).all(|i| b.get(i) == Some(fresh)));
    let mut c = fresh;
    c.regs_mut()[1] = 42;
    net.fire(&mut c, 0).unwrap();
    assert!(b.set(5, &c));
    assert_eq!(b.get(5), Some(c));
    assert_eq!(b.get(4), Some(fresh));
    assert_eq!(b.get(8), None);
    assert!(!b.set(8, &c));
}

#[test]
fn block_fire_matches_fire_on_every_lane() {
    let net = net();
    let ntasks = net.task_count() as u64;
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let nblocks = 6;
    let mut refs: Vec<Case> = Vec::new();
    for _ in 0..nblocks * 8 {
        let mut c = Case::new(&net).unwrap();
        c.regs_mut()[1] = rng.below(21) as i64;
        refs.push(c);
    }
    let start: Vec<Block> = refs
        .chunks(8)
        .map(|lanes| {
            let mut b = Block::new(&net).unwrap();
            for (i, c) in lanes.iter().enumerate() {
                b.set(i, c);
            }
            b
        })
        .collect();
    let mut best = start.clone();
    let mut scalar = start;
    let (mut fired, mut idle, mut refused) = (0, 0, 0);
    for _ in 0..40 {
        // mostly an enabled task, sometimes none, a refused one or one out of range
        let tasks: Vec<u8> = refs
            .iter()
            .map(|c| {
                let en = net.enabled(c);
                match rng.below(10) {
                    0 => NO_TASK,
                    1 => (ntasks + rng.below(200)) as u8,
                    2 => rng.below(ntasks) as u8,
                    _ if en != 0 => en.trailing_zeros() as u8,
                    _ => rng.below(ntasks) as u8,
                }
            })
            .collect();
        let mut s_best = vec![0xEE; tasks.len()];
        let mut s_scalar = vec![0xEE; tasks.len()];
        net.block_fire(&mut best, &tasks, &mut s_best, BlockPath::Best)
            .unwrap();
        net.block_fire(&mut scalar, &tasks, &mut s_scalar, BlockPath::Scalar)
            .unwrap();
        assert_eq!(s_best, s_scalar);
        for (l, (c, &t)) in refs.iter_mut().zip(&tasks).enumerate() {
            let want = if t == NO_TASK {
                idle += 1;
                Err(Error::LaneIdle)
            } else {
                net.fire(c, u32::from(t))
            };
            let got = Error::check(s_best[l].into());
            assert_eq!(got, want, "lane {l}, task {t}");
            match want {
                Ok(()) => fired += 1,
                Err(Error::LaneIdle) => {}
                Err(_) => refused += 1,
            }
            assert_eq!(best[l / 8].get(l % 8).as_ref(), Some(&*c), "lane {l}");
            assert_eq!(scalar[l / 8].get(l % 8).as_ref(), Some(&*c), "lane {l}");
        }
    }
    assert!(
        fired > 300 && idle > 0 && refused > 0,
        "{fired} {idle} {refused}"
    );
    assert!(refs.iter().any(|c| c.is_done()));
}

#[test]
fn block_fire_refuses_mismatched_slices_and_touches_nothing() {
    let net = net();
    let mut blocks = vec![Block::new(&net).unwrap(); 2];
    let before = blocks.clone();
    let mut st = vec![0u8; 16];
    assert_eq!(
        net.block_fire(&mut blocks, &[0; 15], &mut st, BlockPath::Best),
        Err(Error::BadArgument)
    );
    assert_eq!(
        net.block_fire(&mut blocks, &[0; 16], &mut st[..8], BlockPath::Scalar),
        Err(Error::BadArgument)
    );
    assert_eq!(blocks, before);
    let unsealed = Net::new();
    assert_eq!(
        net.block_fire(&mut blocks, &[0; 16], &mut st, BlockPath::Best),
        Ok(())
    );
    assert_eq!(
        unsealed.block_fire(&mut blocks, &[0; 16], &mut st, BlockPath::Best),
        Err(Error::NotSealed)
    );
}

#[test]
fn block_beat_runs_any_operation_per_lane() {
    let net = net();
    let mut block = Block::new(&net).unwrap();
    let mut refs: Vec<Case> = (0..8).map(|i| block.get(i).unwrap()).collect();
    let ops = [
        Op::Start,
        Op::Complete,
        Op::Fire,
        Op::CancelTask,
        Op::CancelCase,
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..200 {
        let events: [Event; 8] = core::array::from_fn(|_| {
            let op = ops[rng.below(5) as usize];
            Event::new(7, op, rng.below(net.task_count() as u64) as u8)
        });
        let lanes = rng.below(256) as u8;
        let mut st = [0xEE; 8];
        net.block_beat(&mut block, &events, lanes, &mut st).unwrap();
        for i in 0..8 {
            let want = if lanes >> i & 1 == 0 {
                Err(Error::LaneIdle)
            } else {
                let mut one = [refs[i]];
                let mut s = [0u8; 8];
                let e = events[i];
                let e = Event::new(0, op_of(&e), e.task());
                net.beat(&mut one, &[e], &mut s).unwrap();
                refs[i] = one[0];
                Error::check(s[0].into())
            };
            assert_eq!(Error::check(st[i].into()), want, "round {round} lane {i}");
            assert_eq!(block.get(i), Some(refs[i]), "round {round} lane {i}");
        }
        if round % 20 == 19 {
            block = Block::new(&net).unwrap();
            refs = (0..8).map(|i| block.get(i).unwrap()).collect();
        }
    }
}

fn op_of(e: &Event) -> Op {
    match e.as_raw().op as u32 {
        knhk_kernel::sys::KNHK_OP_START => Op::Start,
        knhk_kernel::sys::KNHK_OP_COMPLETE => Op::Complete,
        knhk_kernel::sys::KNHK_OP_FIRE => Op::Fire,
        knhk_kernel::sys::KNHK_OP_CANCEL_TASK => Op::CancelTask,
        _ => Op::CancelCase,
    }
}
