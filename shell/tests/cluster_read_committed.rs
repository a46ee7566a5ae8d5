//! `GetCase` with `committed`: while JetStream cannot acknowledge (every nats-server stopped
//! with SIGSTOP), a task fired on a case has run in its owner's engine, and a plain read shows
//! it; a committed read does not answer with it until the frame holding it is acknowledged.
//! Needs nats-server and etcd; skipped without them outside CI.

use std::time::{Duration, Instant};

use knhk_shell::proto;
use tonic::Code;

#[path = "support/cluster.rs"]
mod harness;
use harness::{client, cluster, servers_present, wait_settled, Cluster};

/// GetCase of `case_id` through node `n`, read-committed or not, within `deadline`.
async fn get(
    c: &Cluster,
    n: usize,
    case_id: u64,
    committed: bool,
    deadline: Duration,
) -> Result<proto::Case, tonic::Status> {
    let Some(mut k) = client(&c.grpc[n]).await else {
        return Err(tonic::Status::unavailable("no connection"));
    };
    let mut req = tonic::Request::new(proto::GetCaseRequest { case_id, committed });
    req.set_timeout(deadline);
    k.get_case(req).await.map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_read_never_shows_an_operation_jetstream_has_not_acknowledged() {
    if !servers_present() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("knhk-cluster-rc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut c = cluster(&dir, 4, 5, &[]);
    for p in c.nats.iter_mut().chain(c.etcd.iter_mut()) {
        p.start();
    }
    for p in c.knhk.iter_mut() {
        p.start();
    }
    wait_settled(&mut c, Duration::from_secs(90)).await;
    let model = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/corpus/yawl/WPC1Sequence.yawl"),
    )
    .expect("corpus model");
    let mut k = client(&c.grpc[0]).await.expect("node 0");
    k.register_workflow(proto::RegisterWorkflowRequest {
        model,
        workflow_id: "seq".into(),
        ..Default::default()
    })
    .await
    .expect("register");
    let t0 = Instant::now();
    let case = loop {
        match k
            .create_case(proto::CreateCaseRequest {
                workflow_id: "seq".into(),
                ..Default::default()
            })
            .await
        {
            Ok(r) => break r.into_inner(),
            Err(e) if e.code() == Code::Unavailable && t0.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("create: {e}"),
        }
    };
    let before = case.seq;
    // Committed already: the committed read answers at once with it.
    let read = get(&c, 1, case.case_id, true, Duration::from_secs(10))
        .await
        .expect("committed read of an acknowledged case");
    assert_eq!(read.seq, before);

    // JetStream stops answering; a task fired now runs but is not acknowledged.
    for p in c.nats.iter_mut() {
        p.kill("STOP");
    }
    let fire = {
        let mut k = k.clone();
        let task = case.enabled_tasks[0].clone();
        let case_id = case.case_id;
        tokio::spawn(async move {
            let mut req = tonic::Request::new(proto::TaskRequest {
                case_id,
                task,
                ..Default::default()
            });
            req.set_timeout(Duration::from_secs(60));
            k.fire_task(req).await.map(|r| r.into_inner())
        })
    };
    let t0 = Instant::now();
    loop {
        let plain = get(&c, 1, case.case_id, false, Duration::from_secs(2)).await;
        if plain.as_ref().is_ok_and(|x| x.seq > before) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the fired task never showed in a plain read: {plain:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for n in 0..3 {
        let committed = get(&c, n, case.case_id, true, Duration::from_secs(2)).await;
        assert!(
            !committed.as_ref().is_ok_and(|x| x.seq > before),
            "node {n}: a committed read showed an unacknowledged operation: {committed:?}"
        );
    }

    // JetStream back: the fire is acknowledged, and a committed read shows it.
    for p in c.nats.iter_mut() {
        p.kill("CONT");
    }
    let fired = fire.await.expect("join");
    if let Ok(after) = fired {
        let t0 = Instant::now();
        loop {
            match get(&c, 2, case.case_id, true, Duration::from_secs(10)).await {
                Ok(x) => {
                    assert!(x.seq >= after.seq, "{x:?} is older than {after:?}");
                    break;
                }
                Err(e) => assert!(
                    t0.elapsed() < Duration::from_secs(60),
                    "committed read after the acknowledgement: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    } else {
        // The owner gave up on the frame while JetStream was away: not acknowledged, so
        // nothing more to compare (the committed reads above are what this test is about).
        println!("the fire was not acknowledged: {fired:?}");
    }
    for p in c.knhk.iter_mut() {
        p.stop_and_wait("TERM");
    }
}
