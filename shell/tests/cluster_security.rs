//! Cluster mode with tokens and the audit log (docs/cluster.md, docs/security.md): 3
//! `nats-server`, 3 `etcd`, 3 knhk nodes requiring HS256 bearer tokens. A call reaching a node
//! that does not own the case's partition is forwarded to the owner acting for the caller
//! (its token goes along), so it succeeds as on the owner; a reader is refused by the node it
//! reached. Every node keeps its own audit log: each change is recorded once, by the node
//! whose partition made it (or, for registrations and bulk messages, by the node the caller
//! reached), with the caller as principal; each refusal by the node that refused it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use knhk_shell::audit::Record;
use knhk_shell::proto;
use knhk_shell::proto::knhk_client::KnhkClient;
use tonic::Code;

#[path = "support/cluster.rs"]
mod harness;
use harness::{cluster, servers_present, Cluster};

mod support;
use support::tokens::{claims, hs256, AUD, ISS, SECRET};

const PARTITIONS: u16 = 6;
const CASES: usize = 12;

type Stamp = Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;
type Intercepted =
    KnhkClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Stamp>>;

/// A client of the node at `url` that sends `token` and acts in namespace `ns`.
async fn client(url: &str, token: &str, ns: &str) -> Option<Intercepted> {
    let ch = tonic::transport::Endpoint::from_shared(url.to_string())
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .ok()?;
    let auth: tonic::metadata::MetadataValue<_> =
        format!("Bearer {token}").parse().expect("metadata");
    let ns: tonic::metadata::MetadataValue<_> = ns.parse().expect("namespace");
    let f: Stamp = Box::new(move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", auth.clone());
        req.metadata_mut().insert("knhk-namespace", ns.clone());
        Ok(req)
    });
    Some(KnhkClient::with_interceptor(ch, f))
}

/// Waits until each node answers (with `token`), every partition has an owner and the nodes
/// serve every partition between them (`/metrics`), the same for 2 s (longer than the 1.2 s
/// after which a partition ranked first for a later node is handed over to it); a node that
/// exited meanwhile (etcd not up yet) is started again, as a supervisor would.
async fn settled(c: &mut Cluster, token: &str) {
    let t0 = Instant::now();
    let mut since: Option<Instant> = None;
    loop {
        for p in c.knhk.iter_mut() {
            if p.exited() {
                p.start();
            }
        }
        let mut all = true;
        for url in &c.grpc {
            let Some(mut k) = client(url, token, "team-a").await else {
                all = false;
                break;
            };
            match k.get_topology(proto::GetTopologyRequest {}).await {
                Ok(t) if t.get_ref().owners.len() == usize::from(PARTITIONS) => {}
                _ => {
                    all = false;
                    break;
                }
            }
        }
        if all {
            let mut served = 0.0;
            for h in &c.http {
                served +=
                    harness::sample(&harness::metrics(h).await, "knhk_cluster_partitions_owned");
            }
            all = served == f64::from(PARTITIONS);
        }
        if !all {
            since = None;
        } else if since.get_or_insert_with(Instant::now).elapsed() >= Duration::from_secs(2) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "the cluster did not settle within 90 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_calls_act_for_the_caller_and_every_node_audits_what_it_did() {
    if !servers_present() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("knhk-cluster-sec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).expect("secret file");
    let secret = secret.display().to_string();
    let mut c = cluster(
        &dir,
        PARTITIONS,
        5,
        &[
            "--auth-hs256-secret-file",
            &secret,
            "--auth-issuer",
            ISS,
            "--auth-audience",
            AUD,
        ],
    );
    for p in c.nats.iter_mut().chain(c.etcd.iter_mut()) {
        p.start();
    }
    for p in c.knhk.iter_mut() {
        p.start();
    }
    let alice = hs256(&claims("alice", &["team-a:admin"]));
    let bob = hs256(&claims("bob", &["team-a:reader"]));
    settled(&mut c, &alice).await;

    let mut a0 = client(&c.grpc[0], &alice, "team-a").await.expect("node 0");
    let mut a1 = client(&c.grpc[1], &alice, "team-a").await.expect("node 1");
    let mut a2 = client(&c.grpc[2], &alice, "team-a").await.expect("node 2");
    a0.register_workflow(proto::RegisterWorkflowRequest {
        model: support::corpus("yawl/WPC1Sequence.yawl"),
        workflow_id: "seq".into(),
        ..Default::default()
    })
    .await
    .expect("register through node 0");
    // RetireWorkflow reaches every node through the workflow stream: a case of "old" created
    // before runs on, a new one is refused on every node (each once it has applied the
    // record), and every node lists it retired. DeleteWorkflow counts the version's unfinished
    // cases over every partition: refused while the older case runs, then, once it completed,
    // the version goes with its history from every node.
    a0.register_workflow(proto::RegisterWorkflowRequest {
        model: support::corpus("yawl/WPC1Sequence.yawl"),
        workflow_id: "old".into(),
        ..Default::default()
    })
    .await
    .expect("register old through node 0");
    let patience = Duration::from_secs(20);
    let t0 = Instant::now();
    let running = loop {
        match a1
            .create_case(proto::CreateCaseRequest {
                workflow_id: "old".into(),
                business_key: "before-retirement".into(),
                ..Default::default()
            })
            .await
        {
            Ok(r) => break r.into_inner(),
            Err(e) if t0.elapsed() < patience && e.code() != Code::FailedPrecondition => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("create old through node 1: {e}"),
        }
    };
    let w = a2
        .retire_workflow(proto::RetireWorkflowRequest {
            workflow_id: "old".into(),
        })
        .await
        .expect("RetireWorkflow through node 2")
        .into_inner();
    assert!(w.retired);
    for (n, cl) in [(0, &mut a0), (1, &mut a1), (2, &mut a2)] {
        let t0 = Instant::now();
        loop {
            let listed = cl
                .get_workflow(proto::GetWorkflowRequest {
                    workflow_id: "old".into(),
                    ..Default::default()
                })
                .await
                .expect("GetWorkflow old")
                .into_inner();
            let created = cl
                .create_case(proto::CreateCaseRequest {
                    workflow_id: "old".into(),
                    business_key: format!("after-retirement-{n}"),
                    ..Default::default()
                })
                .await;
            match created {
                Err(e) if e.code() == Code::FailedPrecondition && listed.retired => {
                    assert!(e.message().contains("retired"), "{e}");
                    break;
                }
                other => {
                    assert!(
                        t0.elapsed() < patience,
                        "node {n} still takes cases of a retired workflow: {other:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }
    let t0 = Instant::now();
    loop {
        match a0
            .fire_task(proto::TaskRequest {
                case_id: running.case_id,
                task: running.enabled_tasks[0].clone(),
                ..Default::default()
            })
            .await
        {
            Ok(_) => break,
            Err(e) if e.code() == Code::Unavailable && t0.elapsed() < patience => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the case of the retired workflow runs on: {e}"),
        }
    }
    let delete_old = proto::DeleteWorkflowRequest {
        workflow_id: "old".into(),
        version: 1,
        delete_history: true,
    };
    // UNAVAILABLE (the count's listing met a partition changing hands) is retried, as a
    // client would.
    let t0 = Instant::now();
    let e = loop {
        match a1.delete_workflow(delete_old.clone()).await {
            Err(e) if e.code() == Code::Unavailable && t0.elapsed() < patience => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => break other.expect_err("DeleteWorkflow with a case running"),
        }
    };
    assert_eq!(e.code(), Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("1 unfinished case"), "{e}");
    // the older case runs to its end
    let mut view = a0
        .get_case(proto::GetCaseRequest {
            case_id: running.case_id,
            ..Default::default()
        })
        .await
        .expect("the older case")
        .into_inner();
    let mut old_fires = 1;
    while let Some(task) = view.enabled_tasks.first().cloned() {
        old_fires += 1;
        view = a0
            .fire_task(proto::TaskRequest {
                case_id: running.case_id,
                task,
                ..Default::default()
            })
            .await
            .expect("fire the older case's next task")
            .into_inner();
    }
    assert_eq!(view.state, proto::CaseState::Complete as i32);
    let t0 = Instant::now();
    let w = loop {
        match a1.delete_workflow(delete_old.clone()).await {
            Err(e) if e.code() == Code::Unavailable && t0.elapsed() < patience => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => break other.expect("DeleteWorkflow through node 1").into_inner(),
        }
    };
    assert!(w.deleted);
    for (n, cl) in [(0, &mut a0), (1, &mut a1), (2, &mut a2)] {
        let t0 = Instant::now();
        loop {
            let version = cl
                .get_workflow(proto::GetWorkflowRequest {
                    workflow_id: "old".into(),
                    version: 1,
                })
                .await;
            let case = cl
                .get_case(proto::GetCaseRequest {
                    case_id: running.case_id,
                    ..Default::default()
                })
                .await;
            match (version, case) {
                (Err(v), Err(c)) if c.code() == Code::NotFound => {
                    assert!(v.message().contains("deleted"), "node {n}: {v}");
                    break;
                }
                other => {
                    assert!(
                        t0.elapsed() < patience,
                        "node {n} still shows the deleted version or its case: {other:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    // Cases created through node 1 and their first task fired through node 2: their business
    // keys spread them over the partitions, most of them on another node's, so both calls are
    // forwarded with alice's token.
    let mut cases = Vec::new();
    // UNAVAILABLE ("retry": a partition changing hands) is retried, as a client would; the
    // audit counts below take only the OK records.
    for i in 0..CASES {
        let t0 = Instant::now();
        let case = loop {
            match a1
                .create_case(proto::CreateCaseRequest {
                    workflow_id: "seq".into(),
                    business_key: format!("order-{i}"),
                    ..Default::default()
                })
                .await
            {
                Ok(r) => break r.into_inner(),
                Err(e) if e.code() == Code::Unavailable && t0.elapsed() < patience => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("create {i} through node 1: {e}"),
            }
        };
        let task = case.enabled_tasks.first().expect("an enabled task").clone();
        let t0 = Instant::now();
        loop {
            match a2
                .fire_task(proto::TaskRequest {
                    case_id: case.case_id,
                    task: task.clone(),
                    expected_seq: Some(case.seq),
                    ..Default::default()
                })
                .await
            {
                Ok(_) => break,
                Err(e) if e.code() == Code::Unavailable && t0.elapsed() < patience => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("fire {task} of case {} through node 2: {e}", case.case_id),
            }
        }
        cases.push(case.case_id);
    }

    // A reader is refused by the node it reached, forwarded or not.
    let mut b0 = client(&c.grpc[0], &bob, "team-a").await.expect("node 0");
    let e = b0
        .fire_task(proto::TaskRequest {
            case_id: cases[0],
            task: "x".into(),
            ..Default::default()
        })
        .await
        .expect_err("a reader cannot fire");
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");

    // One bulk message through node 0.
    let events: Vec<proto::Event> = (0..CASES)
        .map(|_| proto::Event {
            op: proto::EventOp::CreateCase as i32,
            workflow_id: "seq".into(),
            ..Default::default()
        })
        .collect();
    let mut answers = a0
        .submit_events(tokio_stream::iter(vec![proto::SubmitEventsRequest {
            events,
        }]))
        .await
        .expect("SubmitEvents")
        .into_inner();
    let answer = answers
        .message()
        .await
        .expect("answer")
        .expect("one answer");
    let refused: Vec<_> = answer.results.iter().filter(|r| r.code != 0).collect();
    assert!(refused.is_empty(), "bulk creations refused: {refused:?}");
    drop(answers);

    // The verifier rebuilds every partition from the streams alone, the workflow stream's
    // retirement and deletion records included: it holds every case created here (CASES
    // through node 1, CASES in bulk), not the case of "old", deleted with its version.
    let (verified, _) = knhk_shell::cluster::verify(&c.nats_urls, "knhk", PARTITIONS, 65536)
        .await
        .expect("verifier replay");
    assert_eq!(verified.len(), 2 * CASES, "{verified:?}");
    assert!(!verified.iter().any(|v| v.case_id == running.case_id));

    for p in c.knhk.iter_mut() {
        p.stop_and_wait("TERM");
    }
    let mut all: Vec<(usize, Record)> = Vec::new();
    for i in 0..3 {
        for r in support::audit_records(&dir.join(format!("knhk{i}-data")).join("audit")) {
            all.push((i, r));
        }
    }
    let count = |rpc: &str, code: &str| {
        all.iter()
            .filter(|(_, r)| r.rpc == format!("/knhk.v1.Knhk/{rpc}") && r.code == code)
            .count()
    };
    // "seq" and "old"; the case of "old" created before its retirement and its fire
    assert_eq!(count("RegisterWorkflow", "OK"), 2, "{all:#?}");
    assert_eq!(count("CreateCase", "OK"), CASES + 1, "{all:#?}");
    // a retirement is recorded once, by the node the caller reached
    assert_eq!(count("RetireWorkflow", "OK"), 1, "{all:#?}");
    // a deletion too, refused or done
    assert_eq!(
        count("DeleteWorkflow", "FAILED_PRECONDITION"),
        1,
        "{all:#?}"
    );
    assert_eq!(count("DeleteWorkflow", "OK"), 1, "{all:#?}");
    // Recorded by the owners: creations sent to node 1 and executed elsewhere.
    let elsewhere = all
        .iter()
        .filter(|(node, r)| *node != 1 && r.rpc.ends_with("/CreateCase") && r.code == "OK")
        .count();
    assert!(
        elsewhere > 0,
        "no creation was forwarded: the test shows nothing; {all:#?}"
    );
    assert_eq!(count("FireTask", "OK"), CASES + old_fires, "{all:#?}");
    assert_eq!(count("FireTask", "PERMISSION_DENIED"), 1, "{all:#?}");
    let bulk: Vec<_> = all
        .iter()
        .filter(|(_, r)| r.rpc.ends_with("/SubmitEvents"))
        .collect();
    assert_eq!(bulk.len(), 1, "{bulk:#?}");
    assert_eq!(bulk[0].0, 0, "recorded by the node the caller reached");
    assert_eq!(
        (bulk[0].1.events, bulk[0].1.refused),
        (Some(CASES as u64), Some(0))
    );
    // Each change by alice, its creation and its fire recorded by the same (owning) node.
    let created_at: HashMap<u64, usize> = all
        .iter()
        .filter(|(_, r)| r.rpc.ends_with("/CreateCase") && r.code == "OK")
        .filter_map(|(node, r)| r.case.map(|c| (c, *node)))
        .collect();
    for (node, r) in all.iter().filter(|(_, r)| r.code == "OK") {
        assert_eq!(r.principal.as_deref(), Some("alice"), "{r:?}");
        assert_eq!(r.namespace, "team-a", "{r:?}");
        if r.rpc.ends_with("/FireTask") {
            let case = r.case.expect("a fire names its case");
            assert_eq!(created_at.get(&case), Some(node), "{r:?}");
        }
    }
    for p in c.nats.iter_mut().chain(c.etcd.iter_mut()) {
        p.stop_and_wait("TERM");
    }
}
