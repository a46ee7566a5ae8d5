//! The archive contract, one body for every implementation (tests/sqlite.rs and
//! tests/postgres.rs run it against a real SQLite file and a real PostgreSQL server):
//!
//! - the store: get, list in creation order with pages and filters, replace (idempotent by
//!   case id), retention by count and by age;
//! - the engine with the archive: finished cases are archived before their slots are reused
//!   and reads of evicted cases come from the archive; while the archive fails nothing is
//!   evicted (creation is refused with a status that says why) and nothing is lost.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use knhk_engine::archive::{ArchiveQuery, CaseArchive, FinishedCase, Retention};
use knhk_engine::engine::{Hist, Lifecycle};
use knhk_engine::workers::{OpKind, Outcome, State, Status, REGISTERS};
use knhk_engine::workflow::DEFAULT_NAMESPACE;
use knhk_engine::{catalog, Data, Engine, EngineConfig, EngineError, Immediate};

fn case(id: u64, created: u64, finished: u64, wf: u16) -> FinishedCase {
    let mut regs = [0i64; REGISTERS];
    regs[2] = -7;
    FinishedCase {
        case_id: id,
        workflow: wf,
        workflow_id: format!("wf{wf}"),
        namespace: "default".into(),
        created_ns: created,
        finished_ns: finished,
        last: Outcome {
            status: Status::Ok,
            state: State::Complete,
            flags: 3,
            seq: 4,
            marking: 1 << 63,
            busy_before: 0,
            busy: 0,
            enabled_before: 0,
            enabled: 0,
            ..Outcome::default()
        },
        regs,
        history: vec![
            Hist {
                time_ns: created + 1,
                task: 0,
                lifecycle: Lifecycle::Start,
                instance: knhk_engine::command::NO_INSTANCE,
            },
            Hist {
                time_ns: finished - 2,
                task: 3,
                lifecycle: Lifecycle::TimerSkip,
                instance: knhk_engine::command::NO_INSTANCE,
            },
            Hist {
                time_ns: finished - 1,
                task: 4,
                lifecycle: Lifecycle::TimerComplete,
                instance: knhk_engine::command::NO_INSTANCE,
            },
            Hist {
                time_ns: finished,
                task: 200,
                lifecycle: Lifecycle::Complete,
                instance: knhk_engine::command::NO_INSTANCE,
            },
        ],
        history_dropped: 1,
    }
}

/// Store, get, pages and filters, replace, retention.
pub fn store_get_list_page_replace_and_retention(a: &dyn CaseArchive) {
    let mut cases: Vec<_> = (1..=5)
        .map(|i| case(i, 100 * i, 100 * i + 50, (i % 2) as u16))
        .collect();
    cases[3].last.state = State::Cancelled;
    cases[3].namespace = "other".into();
    a.store(&cases).unwrap_or_else(|e| panic!("{e}"));
    // Storing again replaces: one row per case, the later copy kept.
    let mut again = cases[..2].to_vec();
    again[1].regs[0] = 42;
    a.store(&again).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.count(), Ok(5));
    assert_eq!(a.get(2).ok().flatten().map(|c| c.regs[0]), Some(42));
    let got = a
        .get(3)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("case 3"));
    assert_eq!(got.last.marking, 1 << 63);
    assert_eq!(got.last.state, State::Complete);
    assert_eq!((got.last.seq, got.last.flags), (4, 3));
    assert_eq!(got.regs[2], -7);
    assert_eq!((got.workflow, got.workflow_id.as_str()), (1, "wf1"));
    assert_eq!((got.created_ns, got.finished_ns), (300, 350));
    assert_eq!(got.history.len(), 4);
    assert_eq!(got.history[3].lifecycle, Lifecycle::Complete);
    assert_eq!(got.history[3].task, 200);
    assert_eq!(got.history[3].time_ns, 350);
    // a timer's events keep what they were
    assert_eq!(
        (got.history[1].lifecycle, got.history[1].task),
        (Lifecycle::TimerSkip, 3)
    );
    assert_eq!(
        (got.history[2].lifecycle, got.history[2].task),
        (Lifecycle::TimerComplete, 4)
    );
    assert_eq!(got.history_dropped, 1);
    assert!(matches!(a.get(99), Ok(None)));
    // Pages of 2 in creation order, then filters: workflow, state, namespace, time range.
    let mut q = ArchiveQuery {
        limit: 2,
        ..ArchiveQuery::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = a.list(&q).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            page.iter().all(|c| c.history.is_empty()),
            "listings leave histories out"
        );
        seen.extend(page.iter().map(|c| c.case_id));
        if page.len() < 2 {
            break;
        }
        q.after = page.last().map(|c| (c.created_ns, c.case_id));
    }
    assert_eq!(seen, vec![1, 2, 3, 4, 5]);
    let ids = |q: ArchiveQuery| -> Vec<u64> {
        a.list(&q)
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .map(|c| c.case_id)
            .collect()
    };
    let odd = a
        .list(&ArchiveQuery {
            workflow_id: Some("wf1".into()),
            with_history: true,
            ..ArchiveQuery::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        odd.iter().map(|c| c.case_id).collect::<Vec<_>>(),
        vec![1, 3, 5]
    );
    assert!(odd.iter().all(|c| c.history.len() == 4));
    assert_eq!(
        ids(ArchiveQuery {
            state: Some(State::Cancelled),
            ..ArchiveQuery::default()
        }),
        vec![4]
    );
    assert_eq!(
        ids(ArchiveQuery {
            namespace: Some("default".into()),
            ..ArchiveQuery::default()
        }),
        vec![1, 2, 3, 5]
    );
    assert_eq!(
        ids(ArchiveQuery {
            created: 200..400,
            ..ArchiveQuery::default()
        }),
        vec![2, 3]
    );
    // a range of case ids (an engine's partition), end excluded
    assert_eq!(
        ids(ArchiveQuery {
            case_ids: 2..4,
            ..ArchiveQuery::default()
        }),
        vec![2, 3]
    );
    // Retention: by count keeps the most recently finished, by age the younger ones.
    let n = a
        .prune(
            &Retention {
                max_age_secs: None,
                max_cases: Some(3),
            },
            0,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n, 2);
    assert!(matches!(a.get(1), Ok(None)));
    assert_eq!(a.count(), Ok(3));
    let n = a
        .prune(
            &Retention {
                max_age_secs: Some(1),
                max_cases: None,
            },
            1_000_000_000 + 400,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n, 1, "case 3 finished at 350 < 400");
    assert_eq!(a.count(), Ok(2));
    // A batch larger than one statement's rows, with a case named twice (the last copy wins).
    let mut big: Vec<_> = (1000..3500).map(|i| case(i, i, i + 1, 0)).collect();
    let mut twice = case(1000, 1000, 1001, 0);
    twice.regs[1] = 9;
    big.push(twice);
    a.store(&big).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.count(), Ok(2 + 2500));
    assert_eq!(a.get(1000).ok().flatten().map(|c| c.regs[1]), Some(9));
}

const MODEL: &str = r#"{
  "name": "two",
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

/// A real archive behind a switch that makes its stores fail (the archive "down"): a fault
/// injected into the dependency, not a stand-in for it.
#[derive(Debug)]
pub struct Switchable {
    pub inner: Arc<dyn CaseArchive>,
    pub down: AtomicBool,
}

impl Switchable {
    pub fn new(inner: Arc<dyn CaseArchive>, down: bool) -> Arc<Switchable> {
        Arc::new(Switchable {
            inner,
            down: AtomicBool::new(down),
        })
    }
}

impl CaseArchive for Switchable {
    fn store(&self, cases: &[FinishedCase]) -> Result<(), String> {
        if self.down.load(Ordering::SeqCst) {
            return Err("archive unreachable (injected)".into());
        }
        self.inner.store(cases)
    }
    fn get(&self, id: u64) -> Result<Option<FinishedCase>, String> {
        self.inner.get(id)
    }
    fn list(&self, q: &ArchiveQuery) -> Result<Vec<FinishedCase>, String> {
        self.inner.list(q)
    }
    fn prune(&self, r: &Retention, now: u64) -> Result<u64, String> {
        self.inner.prune(r, now)
    }
    fn delete_workflow(&self, workflow: u16) -> Result<u64, String> {
        self.inner.delete_workflow(workflow)
    }
    fn holds_workflow(&self, workflow: u16) -> Result<bool, String> {
        self.inner.holds_workflow(workflow)
    }
    fn count(&self) -> Result<u64, String> {
        self.inner.count()
    }
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}

fn start(archive: Arc<Switchable>, capacity: usize) -> Arc<Engine> {
    let cfg = EngineConfig {
        workers: 1,
        case_capacity: capacity,
        pin: false,
        archive: Some(archive),
        ..EngineConfig::default()
    };
    let engine = Engine::start(cfg, Arc::new(Immediate)).expect("engine");
    register(&engine);
    engine
}

/// Registers MODEL as "two" (a new version each time).
fn register(engine: &Engine) {
    let c = catalog::compile(MODEL.as_bytes(), None).expect("model");
    engine
        .register(
            "two",
            |index, id| {
                Ok(knhk_engine::workflow::Workflow::new(
                    index,
                    id,
                    c.format,
                    &c.model,
                    *c.net,
                    knhk_engine::engine::now_ns(),
                ))
            },
            "two",
            |_| Ok(()),
        )
        .expect("register");
}

async fn finish(engine: &Engine) -> u64 {
    let data = Data::new();
    let id = engine.create_case("two", &data).await.expect("create").id;
    for t in ["a", "b"] {
        engine
            .task_op(OpKind::Fire, id, t, &data, None, None)
            .await
            .expect("fire");
    }
    id
}

async fn wait_archived(engine: &Engine, n: u64) {
    let t0 = Instant::now();
    while engine.archive_stats().archived.load(Ordering::Relaxed) < n {
        assert!(t0.elapsed() < Duration::from_secs(10), "archiver stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// 40 cases through 4 slots: every one archived, the evicted ones read back from the archive.
pub async fn finished_cases_are_archived_before_eviction_and_read_back(a: Arc<dyn CaseArchive>) {
    let archive = Switchable::new(a, false);
    let engine = start(archive.clone(), 4);
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(finish(&engine).await);
    }
    wait_archived(&engine, 40).await;
    assert_eq!(archive.count(), Ok(40));
    let first = engine.get_case(ids[0]).expect("from the archive");
    assert!(first.archived);
    assert_eq!(first.last.state, State::Complete);
    assert_eq!(first.last.seq, 2);
    let h = engine.history(ids[0]).expect("history from the archive");
    assert_eq!(h.events.len(), 4, "start and complete of a and b");
    let last = engine.get_case(ids[39]).expect("in memory");
    assert!(!last.archived);
    let (listed, _) = engine
        .list_archived(&ArchiveQuery::default())
        .expect("list");
    assert_eq!(
        listed.len(),
        36,
        "the 4 cases still held are listed from memory, not twice"
    );
    engine.stop();
}

/// The archive down: no slot reused, creation refused naming the error, nothing lost; back
/// up: the cases are stored and creation goes on.
pub async fn while_the_archive_fails_nothing_is_evicted_and_creation_says_why(
    a: Arc<dyn CaseArchive>,
) {
    let archive = Switchable::new(a, true);
    let engine = start(archive.clone(), 4);
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(finish(&engine).await);
    }
    let t0 = Instant::now();
    let refused = engine
        .create_case("two", &Data::new())
        .await
        .expect_err("no slot may be reused");
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "it waited for the archive first"
    );
    match &refused {
        EngineError::Exhausted(m) => {
            assert!(m.contains("archive") && m.contains("injected"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    for &id in &ids {
        assert_eq!(
            engine.get_case(id).expect("kept").last.state,
            State::Complete
        );
    }
    assert!(engine.archive_stats().failures.load(Ordering::Relaxed) > 0);
    archive.down.store(false, Ordering::SeqCst);
    let id = engine
        .create_case("two", &Data::new())
        .await
        .expect("a slot frees once the archive stores")
        .id;
    assert!(!ids.contains(&id));
    wait_archived(&engine, 4).await;
    for &id in &ids {
        assert!(
            archive.get(id).expect("read").is_some(),
            "case {id} archived"
        );
    }
    engine.stop();
}

/// A version deleted with its history: its finished cases leave memory and the archive (a
/// read answers as for a case that never was), the other version's stay, and none of them is
/// archived again; deleting it again (a retry) changes nothing. A version deleted without it
/// first keeps its history until it is deleted again with it.
pub async fn a_version_deleted_with_its_history_leaves_memory_and_the_archive(
    a: Arc<dyn CaseArchive>,
) {
    let archive = Switchable::new(a, false);
    let engine = start(archive.clone(), 4);
    let mut v1 = Vec::new();
    for _ in 0..10 {
        v1.push(finish(&engine).await);
    }
    // version 2 of the same id: new cases start on it
    register(&engine);
    let mut v2 = Vec::new();
    for _ in 0..3 {
        v2.push(finish(&engine).await);
    }
    wait_archived(&engine, 13).await;
    let v1_index = engine
        .workflow_version_in(DEFAULT_NAMESPACE, "two", 1)
        .expect("version 1")
        .index;
    let v2_index = engine.workflow("two").expect("version 2").index;
    assert_eq!(archive.holds_workflow(v1_index), Ok(true));
    assert_eq!(archive.holds_workflow(v2_index), Ok(true));
    assert_eq!(archive.holds_workflow(v2_index + 1), Ok(false));
    // deleted without its history first: every case still readable
    engine
        .delete_in(DEFAULT_NAMESPACE, "two", 1, false)
        .expect("delete version 1");
    for &id in &v1 {
        assert!(engine.get_case(id).is_ok(), "case {id} kept");
    }
    // then with it
    engine
        .delete_in(DEFAULT_NAMESPACE, "two", 1, true)
        .expect("delete version 1 with its history");
    for &id in &v1 {
        assert!(
            matches!(engine.get_case(id), Err(EngineError::NoCase(_))),
            "case {id} of the deleted version is gone"
        );
        assert!(
            matches!(archive.get(id), Ok(None)),
            "case {id} archived no more"
        );
    }
    for &id in &v2 {
        assert_eq!(
            engine.get_case(id).expect("version 2 kept").last.state,
            State::Complete
        );
    }
    // every case of version 2 was archived before: only they are left there
    assert_eq!(archive.count(), Ok(v2.len() as u64));
    assert_eq!(archive.holds_workflow(v1_index), Ok(false));
    assert_eq!(archive.holds_workflow(v2_index), Ok(true));
    // a retry is a no-op; the freed slots take new cases, with new ids
    engine
        .delete_in(DEFAULT_NAMESPACE, "two", 1, true)
        .expect("again");
    let fresh = finish(&engine).await;
    assert!(!v1.contains(&fresh) && !v2.contains(&fresh));
    wait_archived(&engine, 14).await;
    assert_eq!(archive.count(), Ok(v2.len() as u64 + 1));
    engine.stop();
}
