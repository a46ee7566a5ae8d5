//! Cluster mode with `--archive postgres`: one PostgreSQL database shared by every partition's
//! engine on every node. Finished cases leave memory through it, stay readable through any
//! node, are listed exactly once (each partition's owner lists its own), and stay readable
//! after a node is killed and its partitions move. Needs nats-server, etcd and the PostgreSQL
//! server of .ci/run (KNHK_TEST_POSTGRES_URL); skipped without them outside CI.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use knhk_shell::proto;
use knhk_shell::proto::knhk_client::KnhkClient;
use tonic::transport::Channel;
use tonic::Code;

#[path = "support/cluster.rs"]
mod harness;
use harness::{client, cluster, servers_present, wait_settled, Cluster};

#[path = "../../archive/tests/pg_scratch/mod.rs"]
mod pg_scratch;

const PARTITIONS: u16 = 4;
const CASES: usize = 40;

/// Runs `call` through node `first`, then the next ones, while the answer is UNAVAILABLE (a
/// partition changing hands) or no node answers, for at most 60 s.
async fn through_any<T, F, Fut>(c: &Cluster, first: usize, what: &str, call: F) -> T
where
    F: Fn(KnhkClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let t0 = Instant::now();
    let mut node = first;
    loop {
        let last = match client(&c.grpc[node % c.grpc.len()]).await {
            Some(k) => match call(k).await {
                Ok(r) => return r.into_inner(),
                Err(s) if s.code() == Code::Unavailable || s.code() == Code::NotFound => {
                    format!("{s:?}")
                }
                Err(s) => panic!("{what}: {s:?}"),
            },
            None => "no connection".into(),
        };
        assert!(t0.elapsed() < Duration::from_secs(60), "{what}: {last}");
        node += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every case the cluster lists with `include_archived`, through node `n`: id → archived.
async fn listed(c: &Cluster, n: usize) -> Vec<(u64, bool)> {
    let t0 = Instant::now();
    'again: loop {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "ListCases kept failing"
        );
        let Some(mut k) = client(&c.grpc[n]).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let Ok(s) = k
            .list_cases(proto::ListCasesRequest {
                include_archived: true,
                ..Default::default()
            })
            .await
        else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut s = s.into_inner();
        let mut out = Vec::new();
        loop {
            match s.message().await {
                Ok(Some(case)) => out.push((case.case_id, case.archived)),
                Ok(None) => return out,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue 'again;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_cases_go_to_the_shared_archive_and_are_read_through_any_node() {
    if !servers_present() {
        return;
    }
    let Some(db) = pg_scratch::fresh("cluster") else {
        return;
    };
    let url = db.url();
    let dir = std::env::temp_dir().join(format!("knhk-cluster-archive-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // 16 slots per node, 4 per partition: most finished cases must leave memory.
    let mut c = cluster(
        &dir,
        PARTITIONS,
        5,
        &[
            "--archive",
            "postgres",
            "--archive-url",
            &url,
            "--case-capacity",
            "16",
        ],
    );
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
    through_any(&c, 0, "register", |mut k| {
        let model = model.clone();
        async move {
            k.register_workflow(proto::RegisterWorkflowRequest {
                model,
                workflow_id: "seq".into(),
                ..Default::default()
            })
            .await
        }
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..CASES {
        let case = through_any(&c, i, "create", |mut k| async move {
            k.create_case(proto::CreateCaseRequest {
                workflow_id: "seq".into(),
                business_key: format!("case-{i}"),
                ..Default::default()
            })
            .await
        })
        .await;
        for task in ["A", "B"] {
            through_any(&c, i + 1, "fire", |mut k| async move {
                k.fire_task(proto::TaskRequest {
                    case_id: case.case_id,
                    task: task.into(),
                    ..Default::default()
                })
                .await
            })
            .await;
        }
        ids.push(case.case_id);
    }
    for round in [
        "all nodes up",
        "after node 0 was killed and its partitions moved",
    ] {
        let mut archived = 0;
        for (i, &id) in ids.iter().enumerate() {
            let case = through_any(&c, i, "get", |mut k| async move {
                k.get_case(proto::GetCaseRequest {
                    case_id: id,
                    ..Default::default()
                })
                .await
            })
            .await;
            assert_eq!(
                case.state,
                proto::CaseState::Complete as i32,
                "{round}: case {id}"
            );
            archived += usize::from(case.archived);
        }
        assert!(
            archived >= CASES - 16,
            "{round}: only {archived} of {CASES} cases came from the archive"
        );
        // Each case listed once: every owner lists its partitions' archived cases only.
        let mut seen: HashMap<u64, usize> = HashMap::new();
        for (id, _) in listed(&c, 1).await {
            *seen.entry(id).or_default() += 1;
        }
        let mut got: Vec<u64> = seen.keys().copied().collect();
        got.sort_unstable();
        let mut want = ids.clone();
        want.sort_unstable();
        assert_eq!(got, want, "{round}: the listing holds every case");
        assert!(
            seen.values().all(|&n| n == 1),
            "{round}: a case listed twice: {seen:?}"
        );
        if round.starts_with("all") {
            // /metrics: the slots and the archive counters of the partitions each node serves
            // (4 partitions of 4 slots over the nodes), not of its catalog engine.
            let (mut slots, mut stored, mut created) = (0.0, 0.0, 0.0);
            let mut partitions = Vec::new();
            for h in &c.http {
                let m = harness::metrics(h).await;
                slots += harness::sample(&m, "knhk_case_slots");
                stored += harness::sample(&m, "knhk_archive_stored_total");
                // one series per partition served: knhk_cases_created_total{partition="p"}
                for line in m.lines() {
                    if let Some(rest) = line.strip_prefix("knhk_cases_created_total{partition=\"") {
                        let (p, value) = rest.split_once("\"} ").expect("a labelled sample");
                        partitions.push(p.to_string());
                        created += value.trim().parse::<f64>().expect("a number");
                    }
                }
            }
            partitions.sort();
            assert_eq!(partitions, ["0", "1", "2", "3"], "a series per partition");
            assert_eq!(created, CASES as f64, "cases created over the partitions");
            assert_eq!(slots, 16.0, "case slots over the nodes");
            assert!(
                stored >= (CASES - 16) as f64,
                "{stored} cases archived by the nodes' counters"
            );
            c.knhk[0].kill("KILL");
            // its partitions move once its lease expires; the harness restarts it
            tokio::time::sleep(Duration::from_secs(7)).await;
            wait_settled(&mut c, Duration::from_secs(90)).await;
        }
    }
    // In PostgreSQL each case once.
    let (pg, conn) = db
        .config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let n: i64 = pg
        .query_one(
            "SELECT count(*) FROM knhk_cases WHERE case_id = ANY($1)",
            &[&ids.iter().map(|&i| i as i64).collect::<Vec<_>>()],
        )
        .await
        .expect("count")
        .get(0);
    assert!(n as usize >= CASES - 16, "{n} cases in PostgreSQL");
    for p in c.knhk.iter_mut() {
        p.stop_and_wait("TERM");
    }
}
