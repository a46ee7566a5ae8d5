//! `cargo bench -p knhk-benches --bench avx2_paths`: the batch benches on every code path this
//! CPU has (scalar, AVX2, AVX-512), side by side in one run, with the peers (statig, the
//! HashMap net) on the same 512-case workflow.
//!
//! Each bench is an iteration of the batch (reset, then every step), timed between two fenced
//! TSC reads over enough iterations for ~2 M ticks; one sample per bench per round, the benches
//! interleaved round by round (so drift on a shared host hits every path alike); the table
//! gives the median and the minimum over the rounds, in ticks per case-event, and the median in
//! ns. `KNHK_PATH=scalar|avx2|avx512|best` (comma-separated) restricts the knhk paths;
//! `KNHK_ROUNDS` sets the rounds (default 41).
#[path = "common/peers.rs"]
mod peers;

use knhk_benches::{coin_flips, BeatBatch, BlockBatch, Workflow};
use knhk_kernel::clock::{ticks_fenced, Calibration};
use knhk_kernel::{Block, BlockPath, Case};
use peers::{fsm, HashNet};
use std::hint::black_box;
use std::time::Duration;

const CASES: usize = 512;

struct Bench<'a> {
    name: String,
    path: &'static str,
    ops: u64,
    iters: u64,
    samples: Vec<f64>,
    f: Box<dyn FnMut() -> bool + 'a>,
}

fn add<'a>(
    benches: &mut Vec<Bench<'a>>,
    name: &str,
    path: &'static str,
    ops: u64,
    f: Box<dyn FnMut() -> bool + 'a>,
) {
    benches.push(Bench {
        name: name.to_string(),
        path,
        ops,
        iters: 1,
        samples: Vec::new(),
        f,
    })
}

fn main() {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    if let Some(last) = cores.last() {
        core_affinity::set_for_current(*last);
    }
    let cal = Calibration::measure(Duration::from_millis(200));
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let paths: Vec<BlockPath> = match std::env::var("KNHK_PATH") {
        Ok(v) => v
            .split(',')
            .map(|p| {
                p.trim().parse::<BlockPath>().unwrap_or_else(|_| {
                    eprintln!("avx2_paths: KNHK_PATH={v}: want scalar, avx2, avx512 or best");
                    std::process::exit(2)
                })
            })
            .filter(|p| {
                let ok = p.supported();
                if !ok {
                    eprintln!("avx2_paths: this CPU has no {} path; skipped", p.name());
                }
                ok
            })
            .collect(),
        Err(_) => BlockPath::available().collect(),
    };
    let rounds: usize = std::env::var("KNHK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(41);
    println!(
        "avx2_paths: CPU {cpu}; calibration {:.4} ticks/ns; best path {}; paths measured {:?}; \
         {rounds} rounds",
        cal.ticks_per_ns,
        BlockPath::best().name(),
        paths.iter().map(|p| p.name()).collect::<Vec<_>>()
    );

    let seq62 = BlockBatch::sequence(8);
    let seq16 = BlockBatch::sequence_of(16, 32);
    let ring = BlockBatch::ring_staggered(8);
    let beat = BeatBatch::sequence(64);
    let wf = Workflow::new();
    let flips = coin_flips(CASES, 0x5eed);
    let hashnet = HashNet::workflow();
    let starts: Vec<Case> = flips.iter().map(|&r| wf.case(r)).collect();
    let events: Vec<[u32; 8]> = flips.iter().map(|&r| wf.events_for(r)).collect();
    let mut start_blocks: Vec<Block> = vec![Block::new(&wf.net).expect("block"); CASES / 8];
    for (c, case) in starts.iter().enumerate() {
        start_blocks[c / 8].set(c % 8, case);
    }
    let steps: Vec<Vec<u8>> = (0..8)
        .map(|step| (0..CASES).map(|c| events[c][step] as u8).collect())
        .collect();

    let mut benches: Vec<Bench> = Vec::new();
    for &path in &paths {
        for (name, b) in [
            ("block_seq62_lockstep", &seq62),
            ("block_seq16_lockstep", &seq16),
            ("block_ring17_staggered", &ring),
        ] {
            let mut blocks = b.start.clone();
            let mut st = vec![0u8; blocks.len() * 8];
            add(
                &mut benches,
                name,
                path.name(),
                b.events(),
                Box::new(move || b.run(black_box(&mut blocks), &mut st, path)),
            );
        }
        let mut blocks = start_blocks.clone();
        let mut st = vec![0u8; CASES];
        let (sb, stp, net) = (&start_blocks, &steps, &wf.net);
        add(
            &mut benches,
            "peer_knhk_blocks512",
            path.name(),
            8 * CASES as u64,
            Box::new(move || {
                blocks.copy_from_slice(sb);
                let mut bad = 0u8;
                for tasks in stp {
                    if net
                        .block_fire(black_box(&mut blocks), tasks, &mut st, path)
                        .is_err()
                    {
                        return false;
                    }
                    bad |= st.iter().fold(0, |a, &s| a | s);
                }
                bad == 0
            }),
        );
        let mut cases = beat.start.clone();
        let bb = &beat;
        add(
            &mut benches,
            "array_beat_seq62",
            path.name(),
            beat.events(),
            Box::new(move || {
                cases.copy_from_slice(&bb.start);
                let mut st = [0u8; 8];
                let mut bad = 0u8;
                for b in &bb.beats {
                    if bb
                        .net
                        .beat_on(black_box(&mut cases), b, &mut st, path)
                        .is_err()
                    {
                        return false;
                    }
                    bad |= st.iter().fold(0, |a, &s| a | s);
                }
                bad == 0
            }),
        );
    }
    {
        // knhk, one case at a time (Net::fire), the same 512 cases
        let mut cases = starts.clone();
        let (st, ev, net) = (&starts, &events, &wf.net);
        add(
            &mut benches,
            "peer_knhk_single_fire512",
            "-",
            8 * CASES as u64,
            Box::new(move || {
                cases.copy_from_slice(st);
                let mut ok = true;
                for (c, e) in cases.iter_mut().zip(ev) {
                    for &t in e {
                        ok &= net.fire(black_box(c), t).is_ok();
                    }
                }
                ok
            }),
        );
    }
    {
        let evs: Vec<[fsm::Task; 8]> = flips.iter().map(|&r| fsm::events(r)).collect();
        let mut machines: Vec<_> = flips.iter().map(|&r| fsm::machine(r)).collect();
        let f2 = flips.clone();
        add(
            &mut benches,
            "peer_statig_batch512",
            "-",
            8 * CASES as u64,
            Box::new(move || {
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
        );
    }
    {
        let hn = &hashnet;
        let names: Vec<[&str; 8]> = flips.iter().map(|&r| peers::event_names(r)).collect();
        let mut cases: Vec<_> = flips.iter().map(|&r| hn.case(r)).collect();
        let f2 = flips.clone();
        add(
            &mut benches,
            "peer_hashmap_batch512",
            "-",
            8 * CASES as u64,
            Box::new(move || {
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
        );
    }

    // calibrate each bench's iterations to ~2 M ticks per sample, checking it succeeds
    for b in &mut benches {
        assert!((b.f)(), "{} ({}) refused a lane", b.name, b.path);
        let t0 = ticks_fenced();
        let mut n = 0u64;
        while ticks_fenced() - t0 < 2_000_000 {
            (b.f)();
            n += 1;
        }
        b.iters = n.max(1);
    }
    for _ in 0..rounds {
        for b in &mut benches {
            let t0 = ticks_fenced();
            for _ in 0..b.iters {
                black_box((b.f)());
            }
            let t1 = ticks_fenced();
            b.samples.push((t1 - t0) as f64 / (b.iters * b.ops) as f64);
        }
    }
    println!(
        "| {:<26} | {:<6} | {:>12} | {:>9} | {:>10} |",
        "bench", "path", "median ticks", "min ticks", "median ns"
    );
    println!(
        "|{:-<28}|{:-<8}|{:->14}|{:->11}|{:->12}|",
        "", "", "", "", ""
    );
    let mut medians = Vec::new();
    for b in &mut benches {
        b.samples.sort_by(|x, y| x.total_cmp(y));
        let med = b.samples[b.samples.len() / 2];
        let min = b.samples[0];
        println!(
            "| {:<26} | {:<6} | {:>12.3} | {:>9.3} | {:>10.3} |",
            b.name,
            b.path,
            med,
            min,
            cal.to_ns(med)
        );
        medians.push((b.name.clone(), b.path, med, min));
    }
    let find = |name: &str, path: &str| {
        medians
            .iter()
            .find(|m| m.0 == name && m.1 == path)
            .map(|m| (m.2, m.3))
    };
    if let (Some(statig), Some(hash)) = (
        find("peer_statig_batch512", "-"),
        find("peer_hashmap_batch512", "-"),
    ) {
        println!("\npeers, 512 cases x 8 events (ratio = peer / knhk; > 1: knhk faster):");
        for &path in &paths {
            if let Some(k) = find("peer_knhk_blocks512", path.name()) {
                println!(
                    "  knhk blocks on {:<6}: {:.3} ticks/event (min {:.3}); statig {:.3} \
                     ({:.2}x, by minima {:.2}x); HashMap net {:.3} ({:.1}x)",
                    path.name(),
                    k.0,
                    k.1,
                    statig.0,
                    statig.0 / k.0,
                    statig.1 / k.1,
                    hash.0,
                    hash.0 / k.0
                );
            }
        }
    }
}
