//! Sub-net cases in cluster mode: a composite task's child case lives in its parent's
//! partition, is reached through any node, and its link survives the SIGKILL of a node (the
//! partitions it owned are rebuilt from JetStream by another node, and the child's completion
//! still completes its parent's task). Needs nats-server and etcd; skipped without them
//! outside CI.

use std::time::{Duration, Instant};

use knhk_shell::proto;
use tonic::Code;

#[path = "support/cluster.rs"]
mod harness;
#[path = "support/subnet_models.rs"]
mod subnet_models;
use harness::{client, cluster, revive, servers_present, wait_settled, Cluster};
use subnet_models::NESTED;

/// Retries a call through node `n` (then the next nodes) while the cluster answers
/// UNAVAILABLE (a partition changing hands, a registration still on its way), as a client
/// would, for up to 60 s.
macro_rules! retrying {
    ($c:expr, $n:expr, |$k:ident| $call:expr) => {{
        let t0 = Instant::now();
        let mut node = $n;
        loop {
            revive($c);
            let r = match client(&$c.grpc[node % 3]).await {
                Some(mut $k) => $call.await.map(|r| r.into_inner()),
                None => Err(tonic::Status::unavailable("no connection")),
            };
            match r {
                Ok(v) => break v,
                Err(e)
                    if matches!(e.code(), Code::Unavailable | Code::NotFound)
                        && t0.elapsed() < Duration::from_secs(60) =>
                {
                    node += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("{e}"),
            }
        }
    }};
}

fn task(case_id: u64, task: &str) -> proto::TaskRequest {
    proto::TaskRequest {
        case_id,
        task: task.into(),
        ..Default::default()
    }
}

async fn get(c: &mut Cluster, n: usize, case_id: u64) -> proto::Case {
    retrying!(c, n, |k| k.get_case(proto::GetCaseRequest {
        case_id,
        ..Default::default()
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subnet_cases_live_in_their_parents_partition_and_survive_a_node() {
    if !servers_present() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("knhk-cluster-subnets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut c = cluster(&dir, 4, 3, &[]);
    for p in c.nats.iter_mut().chain(c.etcd.iter_mut()) {
        p.start();
    }
    for p in c.knhk.iter_mut() {
        p.start();
    }
    wait_settled(&mut c, Duration::from_secs(90)).await;
    retrying!(&mut c, 0, |k| k.register_workflow(
        proto::RegisterWorkflowRequest {
            model: NESTED.as_bytes().to_vec(),
            format: proto::ModelFormat::Json as i32,
            workflow_id: "nested".into(),
            subnet_cases: true,
            ..Default::default()
        }
    ));

    // Two cases: one run to completion through changing nodes, one left with its child
    // running when a node is killed.
    let mut ids = Vec::new();
    for n in 0..2 {
        let case = retrying!(&mut c, n, |k| k.create_case(proto::CreateCaseRequest {
            workflow_id: "nested".into(),
            ..Default::default()
        }));
        retrying!(&mut c, n + 1, |k| k.fire_task(task(case.case_id, "A")));
        ids.push(case.case_id);
    }
    let mut children = Vec::new();
    for &id in &ids {
        let p = get(&mut c, 2, id).await;
        assert_eq!(p.busy_tasks, vec!["C".to_string()], "{p:?}");
        assert_eq!(p.subnet_cases.len(), 1, "{p:?}");
        let child = get(&mut c, 1, p.subnet_cases[0].case_id).await;
        assert_eq!(
            (child.parent_case_id, child.parent_task.as_str()),
            (id, "C")
        );
        assert_eq!(child.workflow_id, "nested/Sub");
        children.push(child.case_id);
    }
    retrying!(&mut c, 0, |k| k.fire_task(task(children[0], "X")));
    retrying!(&mut c, 1, |k| k.fire_task(task(children[0], "Y")));
    let done = get(&mut c, 2, ids[0]).await;
    assert_eq!(done.enabled_tasks, vec!["B".to_string()], "{done:?}");

    retrying!(&mut c, 2, |k| k.fire_task(task(children[1], "X")));
    // The node that owns the cases' partition goes: another rebuilds it from JetStream.
    let partition = knhk_engine::ids::CaseId::decode(ids[1])
        .expect("a case id")
        .partition;
    assert_eq!(
        knhk_engine::ids::CaseId::decode(children[1]).map(|x| x.partition),
        Some(partition),
        "a child lives in its parent's partition"
    );
    let topology = retrying!(&mut c, 0, |k| k.get_topology(proto::GetTopologyRequest {}));
    let owner = topology
        .owners
        .iter()
        .find(|o| o.partition == u32::from(partition))
        .expect("an owner");
    let n = c
        .grpc
        .iter()
        .position(|g| g.ends_with(owner.address.trim_start_matches("http://")))
        .unwrap_or_else(|| panic!("owner {owner:?} is none of {:?}", c.grpc));
    c.knhk[n].kill("KILL");
    wait_settled(&mut c, Duration::from_secs(90)).await;
    let again = get(&mut c, n + 1, children[1]).await;
    assert_eq!(again.parent_case_id, ids[1], "{again:?}");
    assert_eq!(again.enabled_tasks, vec!["Y".to_string()], "{again:?}");
    retrying!(&mut c, n + 2, |k| k.fire_task(task(children[1], "Y")));
    let t0 = Instant::now();
    loop {
        let p = get(&mut c, n + 1, ids[1]).await;
        if p.enabled_tasks == vec!["B".to_string()] {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the parent's task did not follow its child after the node was killed: {p:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
