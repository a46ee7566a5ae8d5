//! The executed note (`with_executed_note`): a call's note is called once, on the reply
//! thread, with the case id and the op's result, before the batch hook (the event log) takes
//! the job; not at all for a call refused before its op reached a worker. The audit log queues
//! a change's record there (shell/src/grpc/service.rs, `audited_call`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use knhk_engine::workers::{Job, OpKind};
use knhk_engine::{
    catalog, with_executed_note, BatchHook, Data, Engine, EngineConfig, EngineError, ExecutedNote,
};

/// `a`, then the silent `s` (run by the engine), then `b`.
const MODEL: &str = r#"{
  "name": "noted",
  "id": "Net",
  "conditions": [
    { "id": "start", "kind": "input", "flows": [ { "to": "a" } ] },
    { "id": "end", "kind": "output" }
  ],
  "tasks": [
    { "id": "a", "flows": [ { "to": "s" } ] },
    { "id": "s", "silent": true, "flows": [ { "to": "b" } ] },
    { "id": "b", "flows": [ { "to": "end" } ] }
  ]
}"#;

/// What the notes saw, shared with the hook.
#[derive(Default)]
struct Seen {
    /// (case id, result) of every note call.
    calls: Mutex<Vec<(u64, Result<(), String>)>>,
    /// Set by a note, cleared by the hook: a job the hook took while a note's call was
    /// pending would find it set after the call.
    noted: AtomicBool,
    /// Jobs the hook took right after a note was called.
    after_note: AtomicUsize,
}

/// Releases at once, counting the jobs that arrive after a note ran.
struct Hook(Arc<Seen>);

impl BatchHook for Hook {
    fn executed(&self, _shard: usize, job: Box<Job>) {
        if self.0.noted.swap(false, Ordering::SeqCst) {
            self.0.after_note.fetch_add(1, Ordering::SeqCst);
        }
        job.release();
    }
}

fn note(seen: &Arc<Seen>) -> ExecutedNote {
    let seen = seen.clone();
    Box::new(move |case, r: Result<(), EngineError>| {
        seen.calls
            .lock()
            .unwrap()
            .push((case, r.map_err(|e| e.to_string())));
        seen.noted.store(true, Ordering::SeqCst);
    })
}

fn take(seen: &Seen) -> Vec<(u64, Result<(), String>)> {
    std::mem::take(&mut *seen.calls.lock().unwrap())
}

#[test]
fn a_note_is_called_once_with_the_ops_result_before_the_hook_takes_the_job() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let seen = Arc::new(Seen::default());
    let cfg = EngineConfig {
        workers: 1,
        case_capacity: 64,
        pin: false,
        ..EngineConfig::default()
    };
    let engine = Engine::start(cfg, Arc::new(Hook(seen.clone()))).expect("engine starts");
    let compiled = catalog::compile(MODEL.as_bytes(), None).expect("model compiles");
    engine
        .register(
            "noted",
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
            "noted",
            |_| Ok(()),
        )
        .expect("workflow registers");
    let data = Data::new();
    rt.block_on(async {
        // A creation: the new case's id, OK; the hook took the job after the note ran.
        let case = with_executed_note(note(&seen), engine.create_case("noted", &data))
            .await
            .expect("created");
        assert_eq!(take(&seen), [(case.id, Ok(()))]);
        assert_eq!(seen.after_note.swap(0, Ordering::SeqCst), 1);

        // A refusal by the kernel: `b` is not enabled yet.
        let e = with_executed_note(
            note(&seen),
            engine.task_op(OpKind::Complete, case.id, "b", &data, None, None),
        )
        .await
        .expect_err("b is not enabled");
        let calls = take(&seen);
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0].0, case.id);
        assert_eq!(calls[0].1.as_ref().expect_err("refused"), &e.to_string());

        // Firing `b` is refused as not enabled, which in a net with silent tasks is not final
        // (the engine looks for silent tasks that would enable it): no such path, so the
        // outcome came from a job that had already passed the hook, and the note is not
        // called; the caller learns it from the result.
        with_executed_note(
            note(&seen),
            engine.task_op(OpKind::Fire, case.id, "b", &data, None, None),
        )
        .await
        .expect_err("b is not enabled");
        assert_eq!(take(&seen), []);

        // Fire `a`: the engine runs `s` after it; one call, OK.
        with_executed_note(
            note(&seen),
            engine.task_op(OpKind::Fire, case.id, "a", &data, None, None),
        )
        .await
        .expect("a fired");
        assert_eq!(take(&seen), [(case.id, Ok(()))]);

        // Not called for a call refused before its op reached a worker.
        let e = with_executed_note(
            note(&seen),
            engine.task_op(OpKind::Fire, case.id, "nope", &data, None, None),
        )
        .await
        .expect_err("no such task");
        assert!(e.to_string().contains("nope"), "{e}");
        assert_eq!(take(&seen), []);
        let e = with_executed_note(note(&seen), engine.cancel_case(case.id ^ 0xffff))
            .await
            .expect_err("no such case");
        assert!(matches!(e, EngineError::NoCase(_)), "{e}");
        assert_eq!(take(&seen), []);

        // A cancellation.
        with_executed_note(note(&seen), engine.cancel_case(case.id))
            .await
            .expect("cancelled");
        assert_eq!(take(&seen), [(case.id, Ok(()))]);

        // Without a note, nothing is called.
        engine.create_case("noted", &data).await.expect("created");
        assert_eq!(take(&seen), []);
    });
    engine.stop();
}
