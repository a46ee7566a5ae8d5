//! Memory per case slot, per live case and per history event, measured on a `knhk serve`
//! process's resident set (VmRSS) — the figures in docs/operations.md, "Capacity". A
//! measurement, not a check: run it explicitly, in release:
//!
//! `cargo test --release -p knhk-shell --test observability_memory -- --ignored --nocapture`

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use knhk_shell::proto::knhk_client::KnhkClient;
use knhk_shell::proto::{self, EventOp};
use tokio_stream::StreamExt;

mod support;
use support::grpc::{ev_create, ev_task, model, Client};
use support::{bin, free_port, scratch};

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve(capacity: u64) -> (Server, Client) {
    let dir = scratch(&format!("memory-{capacity}"));
    let addr = format!("127.0.0.1:{}", free_port());
    let child = Command::new(bin())
        .args(["serve", "--grpc-addr", &addr, "--http-addr", "off"])
        .args(["--durability", "off", "--workers", "1", "--no-pin"])
        .args(["--case-capacity", &capacity.to_string()])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn knhk serve");
    let server = Server {
        child,
        url: format!("http://{addr}"),
    };
    let t0 = Instant::now();
    loop {
        if let Ok(mut c) = KnhkClient::connect(server.url.clone()).await {
            if c.list_workflows(proto::ListWorkflowsRequest {})
                .await
                .is_ok()
            {
                return (server, c);
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "server not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn rss(s: &Server) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", s.child.id())).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// Sends `events` in messages of 4,096 on one bulk stream; returns the results' case ids.
async fn bulk(c: &mut Client, events: Vec<proto::Event>) -> Vec<u64> {
    let (tx, rx) = tokio::sync::mpsc::channel::<proto::SubmitEventsRequest>(4);
    let mut responses = c
        .submit_events(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("bulk")
        .into_inner();
    let batches: Vec<Vec<proto::Event>> = events.chunks(4096).map(<[_]>::to_vec).collect();
    let n = batches.len();
    let feeder = tokio::spawn(async move {
        for events in batches {
            if tx
                .send(proto::SubmitEventsRequest { events })
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut ids = Vec::new();
    for _ in 0..n {
        let r = responses.next().await.expect("response").expect("ok");
        for x in r.results {
            assert_eq!(x.code, 0, "{}", x.message);
            ids.push(x.case_id);
        }
    }
    let _ = feeder.await;
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement: run explicitly in release"]
async fn memory_per_slot_per_case_and_per_history_event() {
    const SMALL: u64 = 1_000;
    const LARGE: u64 = 1_000_000;
    const CASES: u64 = 200_000;
    let (small, _) = serve(SMALL).await;
    let base = rss(&small);
    drop(small);
    let (large, mut c) = serve(LARGE).await;
    let empty = rss(&large);
    let per_slot = (empty - base) as f64 / (LARGE - SMALL) as f64;

    c.register_workflow(proto::RegisterWorkflowRequest {
        model: model("yawl/WPC1Sequence.yawl"),
        format: 0,
        workflow_id: "seq".into(),
        ..Default::default()
    })
    .await
    .expect("register");
    let registered = rss(&large);
    let ids = bulk(&mut c, (0..CASES).map(|_| ev_create("seq")).collect()).await;
    let created = rss(&large);
    let per_case = (created - registered) as f64 / CASES as f64;
    // Fire A, then B, on every case: 2 history events each (start, complete), then 4.
    let fires = |t: &'static str| -> Vec<proto::Event> {
        ids.iter()
            .map(|&id| ev_task(EventOp::Fire, id, t))
            .collect()
    };
    bulk(&mut c, fires("A")).await;
    let two = rss(&large);
    bulk(&mut c, fires("B")).await;
    let four = rss(&large);
    let per_event_first = (two - created) as f64 / (2 * CASES) as f64;
    let per_event_next = (four - two) as f64 / (2 * CASES) as f64;
    println!(
        "VmRSS: capacity {SMALL}: {base} B; capacity {LARGE}: {empty} B -> {per_slot:.1} B per \
         slot (SLOT_BYTES = {}); {CASES} cases created: {per_case:.1} B per live case beyond \
         its slot; history: first 2 events {per_event_first:.1} B per event (buffer of 4 \
         allocated), next 2 {per_event_next:.1} B per event (HISTORY_EVENT_BYTES = {})",
        knhk_shell::engine::SLOT_BYTES,
        knhk_shell::engine::HISTORY_EVENT_BYTES
    );
}
