//! Helpers for tests that drive an engine and its event log directly (no server).

use std::collections::HashMap;
use std::sync::Arc;

use knhk_engine::engine::{now_ns, Engine};
use knhk_engine::workers::OpKind;
use knhk_engine::workflow::Workflow;
use knhk_log::EventLog;

/// Registers `model` under `id` (a new version when the id exists), logged in `log`.
pub fn register(log: &Arc<dyn EventLog>, engine: &Engine, id: &str, model: &[u8]) -> Arc<Workflow> {
    let compiled = knhk_engine::catalog::compile(model, None).expect("model compiles");
    engine
        .register(
            id,
            |index, id| {
                Ok(Workflow::new(
                    index,
                    id,
                    compiled.format,
                    &compiled.model,
                    *compiled.net,
                    now_ns(),
                ))
            },
            id,
            |wf| log.registered(wf, model),
        )
        .expect("register")
}

/// Runs one case of the newest version of `workflow` to completion: create, then fire the
/// first enabled task until none is.
pub async fn run_case(engine: &Engine, workflow: &str) -> u64 {
    let none = HashMap::new();
    let mut view = engine.create_case(workflow, &none).await.expect("create");
    let case = view.id;
    let mut steps = 0;
    while view.last.enabled != 0 {
        steps += 1;
        assert!(steps < 50, "case {case} does not finish");
        let t = view.last.enabled.trailing_zeros() as usize;
        let name = view.workflow.tasks[t].name.clone();
        view = engine
            .task_op(OpKind::Fire, case, &name, &none, None, None)
            .await
            .expect("fire");
    }
    case
}
