//! Resource limits that hold (issue 12, item 5): open watch streams are capped
//! (`--max-watchers`: RESOURCE_EXHAUSTED past it, room again once one closes) and so are open
//! connections (`--max-connections`: a connection past it is closed at once and the refusal
//! logged; room again once one closes); a handler past `--request-timeout-ms` is answered
//! DEADLINE_EXCEEDED; workflows and unfinished cases per namespace are capped; an address
//! that fails to authenticate too often is refused for a while. Each refusal of a watch, of a
//! message size or of the bytes in flight leaves an audit record.

use std::time::{Duration, Instant};

use knhk_shell::audit::{AuditConfig, Record};
use knhk_shell::proto;
use knhk_shell::proto::knhk_client::KnhkClient;
use knhk_shell::server::ServerConfig;
use tonic::Code;

mod support;
use support::grpc::{config, ev_create, expect_code, start};
use support::tokens::{claims, hs256, AUD, ISS, SECRET};
use support::{audit_records, scratch, spawn};

fn watch_all() -> proto::WatchCaseRequest {
    proto::WatchCaseRequest {
        case_id: 0,
        workflow_id: String::new(),
        from_start: false,
    }
}

/// `cfg` with an audit log in a scratch directory, returned too.
fn with_audit(name: &str, cfg: ServerConfig) -> (ServerConfig, std::path::PathBuf) {
    let dir = scratch(name).join("audit");
    let cfg = ServerConfig {
        audit: Some(AuditConfig::new(&dir)),
        ..cfg
    };
    (cfg, dir)
}

/// The one record of `rpc` (its method name) with `code`.
fn one_record(recs: &[Record], rpc: &str, code: &str) -> Record {
    let found: Vec<_> = recs
        .iter()
        .filter(|r| r.rpc == format!("/knhk.v1.Knhk/{rpc}") && r.code == code)
        .collect();
    assert_eq!(found.len(), 1, "{rpc} {code}: {recs:#?}");
    found[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_are_capped() {
    let (cfg, audit_dir) = with_audit(
        "watch-cap",
        ServerConfig {
            max_watchers: 2,
            ..config(1, 64, 64)
        },
    );
    let srv = start(cfg).await;
    let mut c = srv.client().await;
    let first = c.watch_case(watch_all()).await.expect("first watch");
    let _second = c.watch_case(watch_all()).await.expect("second watch");
    let e = c
        .watch_case(watch_all())
        .await
        .expect_err("a third watch is over the cap");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    assert!(e.message().contains("--max-watchers"), "{}", e.message());
    // Closing one gives its place back (once its forwarding task has ended).
    drop(first);
    let t0 = Instant::now();
    let mut refused = 1;
    loop {
        match c.watch_case(watch_all()).await {
            Ok(_) => break,
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted);
                refused += 1;
                assert!(
                    t0.elapsed() < Duration::from_secs(5),
                    "the place never came back"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    srv.shutdown().await;
    let recs = audit_records(&audit_dir);
    let watch: Vec<_> = recs
        .iter()
        .filter(|r| r.rpc.ends_with("/WatchCase"))
        .collect();
    assert_eq!(
        watch.len(),
        refused,
        "one record per refusal, none for a watch: {recs:#?}"
    );
    for r in watch {
        assert_eq!(r.code, "RESOURCE_EXHAUSTED");
        assert!(
            r.message
                .as_deref()
                .is_some_and(|m| m.contains("--max-watchers")),
            "{r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed_and_logged() {
    let dir = scratch("conn-cap");
    let mut p = spawn(
        &dir.join("data"),
        &dir.join("serve.log"),
        &["--max-connections", "2"],
        None,
    );
    // ready() holds one connection of its own while it polls: take it as the first.
    let mut a = p.ready().await.expect("server");
    let mut b = KnhkClient::connect(p.url.clone()).await.expect("second");
    b.list_workflows(proto::ListWorkflowsRequest {})
        .await
        .expect("second connection served");
    // A third connection is accepted and closed: its call fails.
    let third = async {
        let mut c = KnhkClient::connect(p.url.clone()).await?;
        c.list_workflows(proto::ListWorkflowsRequest {})
            .await
            .map_err(|e| e.into())
            .map(|_| ())
    };
    let r: Result<(), Box<dyn std::error::Error>> = third.await;
    assert!(r.is_err(), "a third connection was served");
    assert!(
        p.log_text()
            .contains("connection refused: the open-connection cap is reached"),
        "the refusal is logged: {}",
        p.log_text()
    );
    // The first two are still served; closing one makes room.
    a.list_workflows(proto::ListWorkflowsRequest {})
        .await
        .expect("first still served");
    drop(b);
    let t0 = Instant::now();
    loop {
        let ok = match KnhkClient::connect(p.url.clone()).await {
            Ok(mut c) => c
                .list_workflows(proto::ListWorkflowsRequest {})
                .await
                .is_ok(),
            Err(_) => false,
        };
        if ok {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no room after a close"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    p.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_messages_are_refused_except_models_up_to_their_own_limit() {
    let (cfg, audit_dir) = with_audit(
        "oversize",
        ServerConfig {
            max_message_bytes: 64 << 10,
            max_model_bytes: 8 << 20,
            ..config(1, 64, 64)
        },
    );
    let srv = start(cfg).await;
    let mut c = srv
        .client()
        .await
        .max_encoding_message_size(64 << 20)
        .max_decoding_message_size(64 << 20);
    // 100 KiB in an ordinary call: over the 64 KiB message limit.
    let e = c
        .get_workflow(proto::GetWorkflowRequest {
            workflow_id: "w".repeat(100 << 10),
            version: 0,
        })
        .await
        .expect_err("oversize");
    assert_eq!(e.code(), Code::OutOfRange, "{e}");
    assert!(e.message().contains("too large"), "{}", e.message());
    // A 1 MiB model is read (and refused for what it is, not for its size).
    let mut model = b"{\"name\":\"x\",".to_vec();
    model.extend(std::iter::repeat_n(b' ', 1 << 20));
    model.extend_from_slice(b"\"id\":\"Net\"}");
    let e = c
        .register_workflow(proto::RegisterWorkflowRequest {
            model,
            format: proto::ModelFormat::Json as i32,
            ..Default::default()
        })
        .await
        .expect_err("not a valid model");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    // Past the model limit: refused for its size.
    let e = c
        .register_workflow(proto::RegisterWorkflowRequest {
            model: vec![b' '; 9 << 20],
            ..Default::default()
        })
        .await
        .expect_err("oversize model");
    assert_eq!(e.code(), Code::OutOfRange, "{e}");
    assert!(e.message().contains("--max-model-bytes"), "{}", e.message());
    // The server goes on serving.
    c.list_workflows(proto::ListWorkflowsRequest {})
        .await
        .expect("still serving");
    srv.shutdown().await;
    // The size refusals are recorded; the invalid model too (a registration is a change).
    let recs = audit_records(&audit_dir);
    let get = one_record(&recs, "GetWorkflow", "OUT_OF_RANGE");
    assert!(
        get.message
            .as_deref()
            .is_some_and(|m| m.contains("--max-message-bytes")),
        "{get:?}"
    );
    let big = one_record(&recs, "RegisterWorkflow", "OUT_OF_RANGE");
    assert!(
        big.message
            .as_deref()
            .is_some_and(|m| m.contains(&(8u64 << 20).to_string())),
        "{big:?}"
    );
    one_record(&recs, "RegisterWorkflow", "INVALID_ARGUMENT");
}

/// `msg` acting in namespace `ns`.
fn in_ns<T>(msg: T, ns: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("knhk-namespace", ns.parse().expect("namespace"));
    r
}

fn register_req(id: &str) -> proto::RegisterWorkflowRequest {
    proto::RegisterWorkflowRequest {
        model: support::corpus("yawl/WPC1Sequence.yawl"),
        workflow_id: id.into(),
        ..Default::default()
    }
}

fn create_req(wf: &str) -> proto::CreateCaseRequest {
    proto::CreateCaseRequest {
        workflow_id: wf.into(),
        ..Default::default()
    }
}

/// A namespace registers at most its cap of workflows and holds at most its cap of unfinished
/// cases (unary and bulk creations alike); another namespace is unaffected; a cancelled case
/// makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_and_unfinished_cases_are_capped_per_namespace() {
    let srv = start(ServerConfig {
        namespace_limits: knhk_shell::grpc::service::NamespaceLimits {
            workflows: 2,
            live_cases: 3,
        },
        ..config(2, 64, 64)
    })
    .await;
    let mut c = srv.client().await;
    for id in ["w1", "w2"] {
        c.register_workflow(in_ns(register_req(id), "a"))
            .await
            .expect("under the cap");
    }
    expect_code(
        c.register_workflow(in_ns(register_req("w3"), "a")).await,
        Code::ResourceExhausted,
        "--max-workflows-per-namespace",
    );
    c.register_workflow(in_ns(register_req("w3"), "b"))
        .await
        .expect("another namespace has its own cap");

    let mut ids = Vec::new();
    for wf in ["w1", "w2", "w1"] {
        ids.push(
            c.create_case(in_ns(create_req(wf), "a"))
                .await
                .expect("under the cap")
                .into_inner()
                .case_id,
        );
    }
    expect_code(
        c.create_case(in_ns(create_req("w1"), "a")).await,
        Code::ResourceExhausted,
        "--max-live-cases-per-namespace",
    );
    c.create_case(in_ns(create_req("w3"), "b"))
        .await
        .expect("another namespace");
    c.cancel_case(in_ns(proto::CancelCaseRequest { case_id: ids[0] }, "a"))
        .await
        .expect("cancel");
    // Room for one: a bulk batch of two creations runs one and refuses the other.
    let batch = proto::SubmitEventsRequest {
        events: vec![ev_create("w1"), ev_create("w2")],
    };
    let mut out = c
        .submit_events(in_ns(tokio_stream::iter(vec![batch]), "a"))
        .await
        .expect("submit")
        .into_inner();
    let results = out.message().await.expect("answer").expect("one").results;
    let codes: Vec<i32> = results.iter().map(|r| r.code).collect();
    assert_eq!(
        codes,
        vec![0, Code::ResourceExhausted as i32],
        "{results:?}"
    );
    assert!(
        results[1]
            .message
            .contains("--max-live-cases-per-namespace"),
        "{results:?}"
    );
    srv.shutdown().await;
}

/// A handler that has not answered within `--request-timeout-ms` is answered
/// DEADLINE_EXCEEDED naming the flag (here a registration held by the test switch for 5 s);
/// other calls go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_the_request_timeout_is_deadline_exceeded() {
    let dir = scratch("req-timeout");
    let mut p = spawn(
        &dir.join("data"),
        &dir.join("serve.log"),
        &["--request-timeout-ms", "500"],
        Some("export KNHK_TESTING_HOLD_REGISTRATION=slow:5000"),
    );
    let mut c = p.ready().await.expect("server");
    let t0 = Instant::now();
    let e = c
        .register_workflow(register_req("slow"))
        .await
        .expect_err("held past the timeout");
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e}");
    assert!(
        e.message().contains("--request-timeout-ms"),
        "{}",
        e.message()
    );
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    // (Registrations are serialised: another one would wait for the held one.)
    c.list_workflows(proto::ListWorkflowsRequest {})
        .await
        .expect("a quick call is answered");
    p.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

/// An address that fails to authenticate more than its burst is refused RESOURCE_EXHAUSTED
/// (with `knhk-retry-after-ms`, naming the flag), even with a valid token, until its budget
/// has room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_fails_to_authenticate_too_often_is_refused_for_a_while() {
    let dir = scratch("auth-failures");
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).expect("secret");
    let secret = secret.display().to_string();
    let mut p = spawn(
        &dir.join("data"),
        &dir.join("serve.log"),
        &[
            "--auth-hs256-secret-file",
            &secret,
            "--auth-issuer",
            ISS,
            "--auth-audience",
            AUD,
            "--rate-auth-failures",
            "1",
            "--rate-auth-failures-burst",
            "3",
        ],
        None,
    );
    let good = hs256(&claims("alice", &["default:reader"]));
    let call = |token: String| {
        let url = p.url.clone();
        async move {
            let mut c = KnhkClient::connect(url)
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let mut r = tonic::Request::new(proto::ListWorkflowsRequest {});
            r.metadata_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("metadata"),
            );
            c.list_workflows(r).await
        }
    };
    let t0 = Instant::now();
    loop {
        if call(good.clone()).await.is_ok() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "{}", p.log_text());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The burst of failures is answered UNAUTHENTICATED; the one past it blocks the address.
    for _ in 0..4 {
        let e = call("not-a-token".into()).await.expect_err("bad token");
        assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    }
    let e = call(good.clone()).await.expect_err("blocked address");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e}");
    assert!(
        e.message().contains("--rate-auth-failures"),
        "{}",
        e.message()
    );
    let wait: u64 = e
        .metadata()
        .get("knhk-retry-after-ms")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .expect("retry hint");
    assert!(wait <= 1000, "{wait}");
    tokio::time::sleep(Duration::from_millis(wait + 50)).await;
    call(good).await.expect("room again");
    p.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A gRPC connection with no open call for `--idle-timeout-ms` is closed (here one that sent
/// the HTTP/2 preface and nothing more); one holding an open WatchCase stream is not, however
/// long the stream stays quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_open_streams_are_kept() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = scratch("idle");
    let mut p = spawn(
        &dir.join("data"),
        &dir.join("serve.log"),
        &["--idle-timeout-ms", "300"],
        None,
    );
    p.ready().await.expect("server");
    let addr = p.url.trim_start_matches("http://").to_string();
    let mut raw = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("preface");
    let t0 = Instant::now();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match raw.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an idle connection was kept 5 s");
    assert!(
        t0.elapsed() >= Duration::from_millis(250),
        "closed before the timeout: {:?}",
        t0.elapsed()
    );

    // A quiet watch stream keeps its connection past three timeouts. (`c` sat idle while the
    // raw connection was watched, so the server may have closed its connection too: a new one.)
    let mut c = KnhkClient::connect(p.url.clone()).await.expect("connect");
    c.register_workflow(register_req("idle"))
        .await
        .expect("register");
    let mut w = c.watch_case(watch_all()).await.expect("watch").into_inner();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut other = KnhkClient::connect(p.url.clone()).await.expect("connect");
    other.create_case(create_req("idle")).await.expect("create");
    let ev = tokio::time::timeout(Duration::from_secs(5), w.message())
        .await
        .expect("an event within 5 s")
        .expect("the stream is open");
    assert!(ev.is_some(), "the watch stream ended");
    p.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Opens a RegisterWorkflow call on `conn` whose message announces `announced` bytes and sends
/// `sent` of them, holding the rest back; the stream and the response to come.
async fn half_sent(
    conn: &mut h2::client::SendRequest<bytes::Bytes>,
    announced: u32,
    sent: usize,
) -> (h2::SendStream<bytes::Bytes>, h2::client::ResponseFuture) {
    let req = http::Request::builder()
        .method("POST")
        .uri("http://localhost/knhk.v1.Knhk/RegisterWorkflow")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let mut ready = conn.clone().ready().await.expect("h2 ready");
    let (resp, mut body) = ready.send_request(req, false).expect("send request");
    let mut data = vec![0u8];
    data.extend_from_slice(&announced.to_be_bytes());
    data.extend(std::iter::repeat_n(b' ', sent));
    body.send_data(bytes::Bytes::from(data), false)
        .expect("send data");
    *conn = ready;
    (body, resp)
}

/// The grpc-status of a response (trailers-only, or in its trailers), and its message.
async fn grpc_status(resp: h2::client::ResponseFuture) -> (String, String) {
    let resp = resp.await.expect("response");
    let get = |h: &http::HeaderMap| {
        (
            h.get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            h.get("grpc-message")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        )
    };
    if let (Some(s), m) = get(resp.headers()) {
        return (s, m.unwrap_or_default());
    }
    let mut body = resp.into_body();
    while let Some(d) = body.data().await {
        let _ = d.expect("data");
    }
    let t = body.trailers().await.expect("trailers").unwrap_or_default();
    let (s, m) = get(&t);
    (s.unwrap_or_default(), m.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partly_sent_requests_are_held_to_the_bytes_in_flight_budget() {
    let (cfg, audit_dir) = with_audit(
        "bytes-in-flight",
        ServerConfig {
            max_model_bytes: 8 << 20,
            max_request_bytes_in_flight: 1 << 20,
            ..config(1, 64, 64)
        },
    );
    let srv = start(cfg).await;
    let addr = srv.url.trim_start_matches("http://").to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await.expect("tcp");
    let (mut conn, driver) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = driver.await;
    });
    // A: 700 KiB of a 4 MiB model, held open.
    let (a, _a_resp) = half_sent(&mut conn, 4 << 20, 700 << 10).await;
    let budget = srv.running.request_budget.clone();
    let t0 = Instant::now();
    while budget.held() < 700 << 10 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the server holds {} bytes",
            budget.held()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // B: another 700 KiB would pass the 1 MiB budget: refused, naming the flag.
    let (_b, b_resp) = half_sent(&mut conn, 4 << 20, 700 << 10).await;
    let (code, message) = grpc_status(b_resp).await;
    assert_eq!(
        code,
        (Code::ResourceExhausted as i32).to_string(),
        "{message}"
    );
    assert!(message.contains("max-request-bytes-in-flight"), "{message}");
    assert!(budget.refused() >= 1);
    // Ordinary calls go on meanwhile.
    let mut c = srv.client().await;
    c.list_workflows(proto::ListWorkflowsRequest {})
        .await
        .expect("small calls pass");
    // A given up (reset): its bytes are freed, and a model of 900 KiB is read whole (and
    // refused for what it is, not for its size).
    let mut a = a;
    a.send_reset(h2::Reason::CANCEL);
    let t0 = Instant::now();
    while budget.held() > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{} held",
            budget.held()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut model = b"{\"name\":\"x\",".to_vec();
    model.extend(std::iter::repeat_n(b' ', 900 << 10));
    model.extend_from_slice(b"\"id\":\"Net\"}");
    let e = c
        .register_workflow(proto::RegisterWorkflowRequest {
            model,
            format: proto::ModelFormat::Json as i32,
            ..Default::default()
        })
        .await
        .expect_err("not a valid model");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert_eq!(budget.held(), 0, "a whole message holds nothing once read");
    srv.shutdown().await;
    let recs = audit_records(&audit_dir);
    let refused = one_record(&recs, "RegisterWorkflow", "RESOURCE_EXHAUSTED");
    assert!(
        refused
            .message
            .as_deref()
            .is_some_and(|m| m.contains("--max-request-bytes-in-flight")),
        "{refused:?}"
    );
}
