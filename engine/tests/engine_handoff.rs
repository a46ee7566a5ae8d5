//! The worker hand-off end to end, with real threads: submitters on several threads push jobs
//! into the workers' in rings, the workers run them and push them to the out rings, the reply
//! threads record them and release the submitters. Submitters pause now and then, so the
//! workers and reply threads go through the park handshake (park.rs) as well as the spinning
//! path. Written to run under ThreadSanitizer too (.ci/run):
//!
//! ```text
//! RUSTFLAGS="-Zsanitizer=thread" cargo +nightly test -Zbuild-std \
//!     --target x86_64-unknown-linux-gnu -p knhk-engine --test engine_handoff
//! ```

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::Duration;

use knhk_engine::workers::{OpKind, State};
use knhk_engine::{catalog, Data, Engine, EngineConfig, Immediate};

const MODEL: &str = r#"{
  "name": "handoff",
  "id": "Net",
  "conditions": [
    { "id": "start", "kind": "input", "flows": [ { "to": "a" } ] },
    { "id": "end", "kind": "output" }
  ],
  "tasks": [
    { "id": "a", "flows": [ { "to": "b" } ] },
    { "id": "b", "flows": [ { "to": "end" } ] }
  ]
}"#;

const SUBMITTERS: usize = 4;
const CASES_EACH: usize = 24;

/// Runs a future to completion on this thread (the engine's replies are tokio oneshots, which
/// need no runtime, only a waker).
fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        thread::park();
    }
}

#[test]
fn submitters_workers_and_reply_threads_hand_off() {
    let cfg = EngineConfig {
        workers: 2,
        case_capacity: 1024,
        pin: false,
        ..EngineConfig::default()
    };
    let engine = Engine::start(cfg, Arc::new(Immediate)).expect("engine starts");
    let compiled = catalog::compile(MODEL.as_bytes(), None).expect("model compiles");
    let wf = engine
        .register(
            "handoff",
            |index, id| {
                Ok(knhk_engine::workflow::Workflow::new(
                    index,
                    id,
                    compiled.format,
                    &compiled.model,
                    *compiled.net,
                    knhk_engine::engine::now_ns(),
                ))
            },
            "handoff",
            |_| Ok(()),
        )
        .expect("workflow registers");

    let submitters: Vec<_> = (0..SUBMITTERS)
        .map(|s| {
            let engine = engine.clone();
            thread::spawn(move || {
                let data = Data::new();
                let mut ids = Vec::with_capacity(CASES_EACH);
                for i in 0..CASES_EACH {
                    let case = block_on(engine.create_case("handoff", &data)).expect("created");
                    for task in ["a", "b"] {
                        block_on(engine.task_op(OpKind::Fire, case.id, task, &data, None, None))
                            .expect("fired");
                    }
                    ids.push(case.id);
                    // Let the worker and the reply thread go idle long enough to park.
                    if (i + s) % 6 == 0 {
                        thread::sleep(Duration::from_millis(3));
                    }
                }
                ids
            })
        })
        .collect();
    let mut ids: Vec<u64> = submitters
        .into_iter()
        .flat_map(|t| t.join().expect("submitter"))
        .collect();

    assert_eq!(ids.len(), SUBMITTERS * CASES_EACH);
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), SUBMITTERS * CASES_EACH, "case ids are unique");
    for &id in &ids {
        let view = engine.get_case(id).expect("case is in the book");
        assert_eq!(view.last.state, State::Complete, "case {id}");
    }
    assert_eq!(
        wf.cases_created.load(Ordering::Relaxed),
        (SUBMITTERS * CASES_EACH) as u64
    );
    let stats = engine.worker_stats();
    let jobs: u64 = stats.iter().map(|s| s.jobs.load(Ordering::Relaxed)).sum();
    assert_eq!(jobs, (SUBMITTERS * CASES_EACH * 3) as u64);

    // On a loaded machine (TSan, a busy CI core) the short pauses above may never let a
    // worker reach its park: wait until both have parked (idle workers must, within their
    // backoff), then wake them with new work, so the park-then-wake hand-off always runs.
    let parks = |stats: &[Arc<knhk_engine::workers::WorkerStats>]| -> Vec<u64> {
        stats
            .iter()
            .map(|s| s.parks.load(Ordering::Relaxed))
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while parks(&stats).contains(&0) {
        assert!(
            std::time::Instant::now() < deadline,
            "idle workers never parked within 30 s: {:?}",
            parks(&stats)
        );
        thread::sleep(Duration::from_millis(5));
    }
    let data = Data::new();
    for _ in 0..2 * stats.len() {
        let case = block_on(engine.create_case("handoff", &data)).expect("created after parking");
        for task in ["a", "b"] {
            let view = block_on(engine.task_op(OpKind::Fire, case.id, task, &data, None, None))
                .expect("a parked worker woke for the op");
            assert_eq!(view.id, case.id);
        }
        assert_eq!(
            engine.get_case(case.id).expect("case").last.state,
            State::Complete
        );
    }
    engine.stop();
}
