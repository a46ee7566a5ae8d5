//! The engine with the SQLite archive: finished cases are archived before their slots are
//! reused, reads of evicted cases come from the archive, and while the archive fails nothing
//! is evicted (creation is refused with a status that says why) and nothing is lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use knhk_archive::SqliteArchive;
use knhk_engine::archive::{ArchiveQuery, CaseArchive, FinishedCase, Retention};
use knhk_engine::workers::{OpKind, State};
use knhk_engine::{catalog, Data, Engine, EngineConfig, EngineError, Immediate};

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

/// The real SQLite archive behind a switch that makes its stores fail (the archive "down"):
/// a fault injected into the dependency, not a stand-in for it.
#[derive(Debug)]
struct Switchable {
    inner: SqliteArchive,
    down: AtomicBool,
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
    fn count(&self) -> Result<u64, String> {
        self.inner.count()
    }
    fn kind(&self) -> &'static str {
        "sqlite"
    }
}

fn scratch(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("knhk-archive-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
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
    engine
}

async fn finish(engine: &Engine) -> u64 {
    let data = Data::new();
    let id = engine.create_case("two", &data).await.expect("create").id;
    for t in ["a", "b"] {
        engine
            .task_op(OpKind::Fire, id, t, &data, None)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_cases_are_archived_before_eviction_and_read_back() {
    let dir = scratch("evict");
    let archive = Arc::new(Switchable {
        inner: SqliteArchive::open_in(&dir).expect("open"),
        down: AtomicBool::new(false),
    });
    let engine = start(archive.clone(), 4);
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(finish(&engine).await);
    }
    wait_archived(&engine, 40).await;
    assert_eq!(archive.count(), Ok(40));
    // 40 cases through 4 slots: the first ones were evicted, and are read back from the
    // archive.
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
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_archive_fails_nothing_is_evicted_and_creation_says_why() {
    let dir = scratch("down");
    let archive = Arc::new(Switchable {
        inner: SqliteArchive::open_in(&dir).expect("open"),
        down: AtomicBool::new(true),
    });
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
    // Every finished case is still readable from memory.
    for &id in &ids {
        assert_eq!(
            engine.get_case(id).expect("kept").last.state,
            State::Complete
        );
    }
    assert!(engine.archive_stats().failures.load(Ordering::Relaxed) > 0);
    // The archive comes back: the cases are stored, and creation goes on.
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
    let _ = std::fs::remove_dir_all(&dir);
}
