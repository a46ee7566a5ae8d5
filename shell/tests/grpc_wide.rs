//! Wide tasks (issue 13 item 4) through `knhk check` and the server: the model written for the
//! import tests (`import/tests/models/WideSplit.yawl`: a 24-way AND split, a 24-input AND join
//! that XOR-splits 12 ways on `pick`), more flows per task than the 8 a task held before ABI 4.

use std::collections::HashMap;

use knhk_shell::{cli, proto};
use tonic::Code;

mod support;
use support::grpc::*;

fn wide_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../import/tests/models/WideSplit.yawl")
}

#[test]
fn knhk_check_accepts_wide_tasks() {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::check(&[wide_path()], &mut out, &mut err);
    let out = String::from_utf8_lossy(&out);
    assert_eq!(code, 0, "{out}{}", String::from_utf8_lossy(&err));
    assert!(!out.contains("outgoing flows"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_split_over_grpc() {
    let srv = start(config(1, 64, 64)).await;
    let mut c = srv.client().await;
    let model = std::fs::read(wide_path()).expect("model");
    let wf = c
        .register_workflow(proto::RegisterWorkflowRequest {
            model,
            format: 0,
            workflow_id: String::new(),
            // Its tasks have no decomposition: the test drives each one itself.
            manual_silent_tasks: true,
            ..Default::default()
        })
        .await
        .expect("register")
        .into_inner()
        .workflow
        .expect("workflow");
    let branches: Vec<String> = (0..24).map(|k| format!("T{k}")).collect();
    for (pick, x) in [(9, "X9"), (42, "X11")] {
        let id = c
            .create_case(proto::CreateCaseRequest {
                workflow_id: wf.workflow_id.clone(),
                data: HashMap::from([("pick".to_string(), int(pick))]),
                ..Default::default()
            })
            .await
            .expect("create")
            .into_inner()
            .case_id;
        let s = c.fire_task(task(id, "A")).await.expect("A").into_inner();
        let mut enabled = s.enabled_tasks.clone();
        enabled.sort();
        let mut want = branches.clone();
        want.sort();
        assert_eq!(enabled, want, "the 24 branches: {s:?}");
        for t in &branches[..23] {
            c.fire_task(task(id, t)).await.expect(t);
        }
        expect_code(
            c.fire_task(task(id, "J")).await,
            Code::FailedPrecondition,
            "'J'",
        );
        c.fire_task(task(id, "T23")).await.expect("T23");
        let s = c.fire_task(task(id, "J")).await.expect("J").into_inner();
        assert_eq!(s.enabled_tasks, [x], "pick {pick}: {s:?}");
        let s = c.fire_task(task(id, x)).await.expect("X").into_inner();
        assert_eq!(s.state, proto::CaseState::Complete as i32);
    }
    srv.shutdown().await;
}
