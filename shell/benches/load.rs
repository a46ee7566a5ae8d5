//! Bounded load bench for the knhk server (not a test): an in-process server on loopback and a
//! real tonic client, measuring
//!
//! 1. the bulk stream (SubmitEvents): events per second end to end and per-batch round-trip
//!    latency (p50/p99/p999), with batches pipelined;
//! 2. unary FireTask: latency of sequential calls (p50/p99/p999) and throughput of concurrent
//!    callers.
//!
//! The workflow is the corpus's WPC10 arbitrary-cycles net: with `cond = 0` its tasks A, B, C
//! cycle forever, so every case can be fired indefinitely.
//!
//! `cargo bench -p knhk-shell --bench load` (bounded: a few seconds per phase). Environment:
//! `KNHK_BENCH_SECS` (per phase, default 5), `KNHK_BENCH_BATCH` (events per bulk message,
//! default 3072), `KNHK_BENCH_WORKERS` (kernel workers, default: the server's default),
//! `KNHK_BENCH_AUTH=es256` (the server checks an ES256 bearer token from a JWKS on every call,
//! the client sends one; rate limits off; default: no authentication).
//!
//! `KNHK_BENCH_AUTH=compare` (issue 12 item 9): the cost of the security layer, in one run.
//! Five servers take turns, `KNHK_BENCH_ROUNDS` rounds (default 2), each a fresh in-process
//! server on its own data directory: plaintext; TLS alone (rustls, an ECDSA P-256
//! certificate); an ES256 bearer token checked on every call alone; the audit log alone; and
//! all three.
//! `KNHK_BENCH_AUTH=audit`: the same, with plaintext and the audit log only.
//! Both run the event log as `KNHK_BENCH_JOURNAL` says (`sync`, the server's default;
//! `relaxed`; `off`: memory only), so the audit records ride the same group commit as the
//! changes they describe. A table of both modes ends the output.

#[path = "common/cpu.rs"]
mod cpu;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use knhk_shell::engine::EngineConfig;
use knhk_shell::proto::knhk_client::KnhkClient;
use knhk_shell::proto::{self, event::Task, EventOp};
use knhk_shell::server::{self, Running, ServerConfig};
use tokio_stream::StreamExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Adds the bearer token (when the bench runs with authentication) to every call.
#[derive(Clone)]
struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// `KNHK_BENCH_AUTH=es256`: an ES256 key in a JWKS file, the server's auth state and a token
/// (an hour, `*:admin`) for the client.
fn es256_auth() -> Result<(std::sync::Arc<knhk_shell::auth::AuthState>, Bearer), BoxError> {
    use jsonwebtoken::{encode, jwk::Jwk, jwk::JwkSet, Algorithm, EncodingKey, Header};
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let key = EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes())?;
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256)?;
    jwk.common.key_id = Some("bench".into());
    let path = std::env::temp_dir().join(format!("knhk-bench-jwks-{}.json", std::process::id()));
    std::fs::write(&path, serde_json::to_string(&JwkSet { keys: vec![jwk] })?)?;
    let cfg = knhk_shell::auth::AuthConfig {
        jwks_file: Some(path.clone()),
        issuer: Some("bench".into()),
        audience: Some("knhk".into()),
        leeway_secs: 30,
        rates: knhk_shell::auth::RateConfig {
            calls_per_second: 0,
            calls_burst: 0,
            events_per_second: 0,
            events_burst: 0,
            auth_failures_per_second: 0,
            auth_failures_burst: 0,
        },
        ..Default::default()
    };
    let state = knhk_shell::auth::AuthState::load(&cfg)?.ok_or("auth not configured")?;
    let _ = std::fs::remove_file(&path);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some("bench".into());
    let claims = serde_json::json!({ "sub": "bench", "iss": "bench", "aud": "knhk",
        "exp": now + 3600, "permissions": ["*:admin"] });
    let token = encode(&h, &claims, &key)?;
    Ok((state, Bearer(Some(format!("Bearer {token}").parse()?))))
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentiles(name: &str, unit_ns: &mut [u64]) {
    if unit_ns.is_empty() {
        println!("{name}: no samples");
        return;
    }
    unit_ns.sort_unstable();
    let at = |q: f64| {
        let i = ((unit_ns.len() as f64 - 1.0) * q).round() as usize;
        unit_ns[i.min(unit_ns.len() - 1)] as f64 / 1000.0
    };
    println!(
        "{name}: n={} p50={:.1}us p99={:.1}us p999={:.1}us max={:.1}us",
        unit_ns.len(),
        at(0.50),
        at(0.99),
        at(0.999),
        at(1.0)
    );
}

/// What one mode measured (for the comparison table).
#[derive(Debug, Clone, Copy, Default)]
struct Summary {
    bulk_eps: f64,
    bulk_one_eps: f64,
    unary_p50_us: f64,
    unary_p99_us: f64,
    unary16_cps: f64,
}

/// How a bench server runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    /// TLS only.
    Tls,
    /// An ES256 bearer token on every call, no TLS, no audit (`KNHK_BENCH_AUTH=es256`).
    Token,
    /// The audit log only.
    Audit,
    /// TLS, an ES256 bearer token and the audit log.
    Secure,
}

impl Mode {
    fn tls(self) -> bool {
        matches!(self, Mode::Tls | Mode::Secure)
    }
    fn token(self) -> bool {
        matches!(self, Mode::Token | Mode::Secure)
    }
    fn audit(self) -> bool {
        matches!(self, Mode::Audit | Mode::Secure)
    }
    fn name(self) -> &'static str {
        match self {
            Mode::Plain => "plaintext",
            Mode::Tls => "TLS",
            Mode::Token => "ES256 token",
            Mode::Audit => "audit log",
            Mode::Secure => "TLS + token + audit",
        }
    }
}

/// Quantile `q` of sorted nanosecond samples, in microseconds.
fn quantile_us(sorted_ns: &[u64], q: f64) -> f64 {
    if sorted_ns.is_empty() {
        return 0.0;
    }
    let i = ((sorted_ns.len() as f64 - 1.0) * q).round() as usize;
    sorted_ns[i.min(sorted_ns.len() - 1)] as f64 / 1000.0
}

fn main() -> Result<(), BoxError> {
    let secs = env_or("KNHK_BENCH_SECS", 5).clamp(1, 60);
    let batch = env_or("KNHK_BENCH_BATCH", 3072).clamp(3, 1 << 16) as usize;
    let mut engine = EngineConfig {
        case_capacity: 1 << 16,
        ..EngineConfig::default()
    };
    if let Some(w) = std::env::var("KNHK_BENCH_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        engine.workers = w;
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let cpu = cpu::model_name();
    println!(
        "knhk load bench: {cpu}, {cores} cores, {} kernel worker(s), {secs}s per phase, {batch} events per bulk message",
        engine.workers
    );
    let journal = match std::env::var("KNHK_BENCH_JOURNAL").as_deref() {
        Ok("sync") => Some(knhk_log::Durability::Sync),
        Ok("relaxed") => Some(knhk_log::Durability::Relaxed),
        Ok("off") => None,
        Ok(other) => return Err(format!("KNHK_BENCH_JOURNAL={other}: sync, relaxed or off").into()),
        Err(_) => None,
    };
    match std::env::var("KNHK_BENCH_AUTH").as_deref() {
        Ok("es256") => {
            bench_mode(Mode::Token, journal, &engine, cores, secs, batch)?;
        }
        Ok("" | "off") | Err(_) => {
            bench_mode(Mode::Plain, journal, &engine, cores, secs, batch)?;
        }
        Ok(which @ ("compare" | "audit")) => {
            let journal = match std::env::var("KNHK_BENCH_JOURNAL") {
                Err(_) => Some(knhk_log::Durability::Sync),
                Ok(_) => journal,
            };
            let rounds = env_or("KNHK_BENCH_ROUNDS", 2).clamp(1, 20);
            let modes: &[Mode] = if which == "audit" {
                &[Mode::Plain, Mode::Audit]
            } else {
                &[
                    Mode::Plain,
                    Mode::Tls,
                    Mode::Token,
                    Mode::Audit,
                    Mode::Secure,
                ]
            };
            let mut runs: Vec<Vec<Summary>> = vec![Vec::new(); modes.len()];
            for r in 0..rounds {
                for (m, mode) in modes.iter().enumerate() {
                    println!("\n== round {} of {rounds}: {}", r + 1, mode.name());
                    runs[m].push(bench_mode(*mode, journal, &engine, cores, secs, batch)?);
                }
            }
            compare_table(modes, &runs, journal);
        }
        Ok(other) => {
            return Err(format!("KNHK_BENCH_AUTH={other}: off, es256, audit or compare").into())
        }
    }
    Ok(())
}

/// A row of the comparison table: what, which figure of a run, the unit.
type Row = (&'static str, fn(&Summary) -> f64, &'static str);

/// The comparison table: each run, and the median of each mode's runs.
fn compare_table(modes: &[Mode], runs: &[Vec<Summary>], journal: Option<knhk_log::Durability>) {
    fn median(v: &[Summary], f: fn(&Summary) -> f64) -> f64 {
        let mut x: Vec<f64> = v.iter().map(f).collect();
        x.sort_by(|a, b| a.total_cmp(b));
        x.get(x.len() / 2).copied().unwrap_or(0.0)
    }
    let rows: [Row; 5] = [
        ("bulk SubmitEvents, pipelined", |s| s.bulk_eps, "events/s"),
        (
            "bulk, one message in flight",
            |s| s.bulk_one_eps,
            "events/s",
        ),
        ("unary FireTask, 1 caller: p50", |s| s.unary_p50_us, "us"),
        ("unary FireTask, 1 caller: p99", |s| s.unary_p99_us, "us"),
        ("unary FireTask, 16 callers", |s| s.unary16_cps, "calls/s"),
    ];
    let log = match journal {
        Some(knhk_log::Durability::Sync) => "sync",
        Some(knhk_log::Durability::Relaxed) => "relaxed",
        None => "off",
    };
    println!("\nEach cell: the runs, then their median (and its change from plaintext's).");
    let head: Vec<&str> = modes.iter().map(|m| m.name()).collect();
    println!("\n| what (event log: {log}) | {} |", head.join(" | "));
    println!("|---|{}", "---|".repeat(modes.len()));
    for (name, f, unit) in rows {
        let base = runs.first().map_or(0.0, |r| median(r, f));
        let cells: Vec<String> = runs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let each = r
                    .iter()
                    .map(|s| format!("{:.0}", f(s)))
                    .collect::<Vec<_>>()
                    .join(", ");
                let m = median(r, f);
                if i == 0 {
                    format!("{each}; **{m:.0}**")
                } else {
                    format!("{each}; **{m:.0}** ({:+.1} %)", (m - base) / base * 100.0)
                }
            })
            .collect();
        println!("| {name} ({unit}) | {} |", cells.join(" | "));
    }
}

/// A self-signed CA and a server certificate for 127.0.0.1 it signs, written to `dir`:
/// (server cert path, server key path, CA path).
fn bench_certs(dir: &std::path::Path) -> Result<(PathBuf, PathBuf, PathBuf), BoxError> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);
    let leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
    let key = KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &issuer)?;
    let paths = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("ca.pem"),
    );
    std::fs::write(&paths.0, cert.pem())?;
    std::fs::write(&paths.1, key.serialize_pem())?;
    std::fs::write(&paths.2, ca_cert.pem())?;
    Ok(paths)
}

/// Starts a server in `mode`, runs every phase against it, stops it.
fn bench_mode(
    mode: Mode,
    journal: Option<knhk_log::Durability>,
    engine: &EngineConfig,
    cores: usize,
    secs: u64,
    batch: usize,
) -> Result<Summary, BoxError> {
    let dir = std::env::temp_dir().join(format!(
        "knhk-bench-load-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir)?;
    // The server has its own runtime, like `knhk serve`.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.max(1))
        .thread_name("server-io")
        .enable_all()
        .build()?;
    let listener = server_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Running>();
    let (auth, bearer) = if mode.token() {
        let (a, b) = es256_auth()?;
        (Some(a), b)
    } else {
        (None, Bearer(None))
    };
    let (tls, url, client_tls) = if mode.tls() {
        let (cert, key, ca) = bench_certs(&dir)?;
        let client = knhk_shell::tls::ClientTls {
            ca: Some(ca),
            ..Default::default()
        };
        (
            Some(knhk_shell::tls::TlsConfig::new(cert, key)),
            format!("https://127.0.0.1:{}", addr.port()),
            client,
        )
    } else {
        (
            None,
            format!("http://{addr}"),
            knhk_shell::tls::ClientTls::default(),
        )
    };
    println!(
        "security: {}; event log: {}",
        match mode {
            Mode::Plain => "none (plaintext, no authentication)",
            Mode::Tls => "TLS",
            Mode::Token => "ES256 bearer token on every call",
            Mode::Audit => "the audit log",
            Mode::Secure => "TLS + ES256 bearer token on every call + audit log",
        },
        match journal {
            Some(knhk_log::Durability::Sync) => "sync",
            Some(knhk_log::Durability::Relaxed) => "relaxed",
            None => "off (memory only)",
        }
    );
    let cfg = ServerConfig {
        engine: engine.clone(),
        auth,
        tls,
        audit: mode
            .audit()
            .then(|| knhk_shell::audit::AuditConfig::new(dir.join("audit"))),
        ..ServerConfig::default()
    };
    let jc = journal.map(|d| {
        let mut jc = knhk_log::JournalConfig::new(dir.join("data"));
        jc.durability = d;
        jc
    });
    let served = server_rt.spawn(server::serve_journaled(
        listener,
        cfg,
        None,
        jc,
        async move {
            let _ = stop_rx.await;
        },
        move |r| {
            let _ = ready_tx.send(r);
        },
    ));
    let running = ready_rx.recv_timeout(Duration::from_secs(30))?;

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("client")
        .enable_all()
        .build()?;
    let summary = client_rt.block_on(async {
        let channel = client_tls.channel(&url).await?;
        run(channel, bearer, secs, batch, running.clone()).await
    })?;

    let _ = stop_tx.send(());
    let _ = server_rt.block_on(served);
    drop(server_rt);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(summary)
}

async fn run(
    channel: tonic::transport::Channel,
    bearer: Bearer,
    secs: u64,
    batch: usize,
    running: Running,
) -> Result<Summary, BoxError> {
    let mut summary = Summary::default();
    let mut c = KnhkClient::with_interceptor(channel, bearer)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let model = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/corpus/yawl/WPC10AbitraryCycles.yawl"),
    )?;
    c.register_workflow(proto::RegisterWorkflowRequest {
        model,
        format: proto::ModelFormat::Yawl as i32,
        workflow_id: "cycles".into(),
        ..Default::default()
    })
    .await?;

    // Cases: one per 3 events of a batch, created in bulk.
    let ncases = (batch / 3).max(1);
    let creates: Vec<proto::Event> = (0..ncases)
        .map(|_| proto::Event {
            op: EventOp::CreateCase as i32,
            workflow_id: "cycles".into(),
            ..Default::default()
        })
        .collect();
    let mut s = c
        .submit_events(tokio_stream::iter([proto::SubmitEventsRequest {
            events: creates,
        }]))
        .await?
        .into_inner();
    let created = s.next().await.ok_or("no answer")??;
    let ids: Vec<u64> = created
        .results
        .iter()
        .filter(|r| r.code == 0)
        .map(|r| r.case_id)
        .collect();
    if ids.len() != ncases {
        return Err(format!("created {} of {ncases} cases", ids.len()).into());
    }

    // ---- 1. bulk stream: each message fires A, B, C on every case (one full cycle each).
    let mut template = Vec::with_capacity(ncases * 3);
    for &id in &ids {
        for t in 0..3u32 {
            template.push(proto::Event {
                op: EventOp::Fire as i32,
                case_id: id,
                task: Some(Task::TaskIndex(t)),
                ..Default::default()
            });
        }
    }
    let per_msg = template.len() as u64;
    let template = Arc::new(template);
    let (tx, rx) = tokio::sync::mpsc::channel::<proto::SubmitEventsRequest>(8);
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let mut responses = c
        .submit_events(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let deadline = Duration::from_secs(secs);
    let t0 = Instant::now();
    let tpl = template.clone();
    let sender = tokio::spawn(async move {
        let mut n = 0u64;
        while t0.elapsed() < deadline {
            let msg = proto::SubmitEventsRequest {
                events: tpl.as_ref().clone(),
            };
            let _ = sent_tx.send(Instant::now());
            if tx.send(msg).await.is_err() {
                break;
            }
            n += 1;
        }
        n
    });
    let mut lat = Vec::new();
    let mut events = 0u64;
    let mut failed = 0u64;
    // The stream ends once the sender has stopped and every message is answered.
    while let Some(r) = responses.next().await {
        let r = r?;
        let sent = sent_rx.recv().await.ok_or("send times")?;
        lat.push(sent.elapsed().as_nanos() as u64);
        events += r.results.len() as u64;
        failed += r.results.iter().filter(|x| x.code != 0).count() as u64;
    }
    let msgs = sender.await?;
    let el = t0.elapsed().as_secs_f64();
    println!(
        "bulk SubmitEvents: {events} events in {el:.2}s = {:.0} events/s ({msgs} messages of {per_msg} events, {failed} refused)",
        events as f64 / el
    );
    summary.bulk_eps = events as f64 / el;
    percentiles("bulk message round trip", &mut lat);

    // ---- 1b. bulk stream, one message in flight: the latency of a batch on its own.
    let (tx, rx) = tokio::sync::mpsc::channel::<proto::SubmitEventsRequest>(1);
    let mut responses = c
        .submit_events(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut lat = Vec::new();
    let mut events = 0u64;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        let msg = proto::SubmitEventsRequest {
            events: template.as_ref().clone(),
        };
        let t = Instant::now();
        tx.send(msg).await?;
        let r = responses.next().await.ok_or("bulk stream ended")??;
        lat.push(t.elapsed().as_nanos() as u64);
        events += r.results.len() as u64;
    }
    drop(tx);
    let el = t0.elapsed().as_secs_f64();
    println!(
        "bulk SubmitEvents, 1 message in flight: {events} events in {el:.2}s = {:.0} events/s",
        events as f64 / el
    );
    summary.bulk_one_eps = events as f64 / el;
    percentiles("bulk message round trip, unpipelined", &mut lat);

    // ---- 2. unary FireTask, sequential: latency.
    let id = ids[0];
    let names = ["A", "B", "C"];
    let mut lat = Vec::new();
    let t0 = Instant::now();
    let mut i = 0usize;
    while t0.elapsed() < Duration::from_secs(secs) {
        let t = Instant::now();
        c.fire_task(proto::TaskRequest {
            case_id: id,
            task: names[i % 3].into(),
            data: HashMap::new(),
            branch_bits: None,
            ..Default::default()
        })
        .await?;
        lat.push(t.elapsed().as_nanos() as u64);
        i += 1;
    }
    let el = t0.elapsed().as_secs_f64();
    println!(
        "unary FireTask, 1 caller: {i} calls in {el:.2}s = {:.0} calls/s",
        i as f64 / el
    );
    percentiles("unary FireTask latency", &mut lat);
    summary.unary_p50_us = quantile_us(&lat, 0.50);
    summary.unary_p99_us = quantile_us(&lat, 0.99);

    // ---- 3. unary FireTask, 16 concurrent callers on their own cases.
    let callers = 16usize.min(ids.len());
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..callers {
        let mut c = c.clone();
        let id = ids[(k + 1) % ids.len()];
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0usize;
            while t0.elapsed() < Duration::from_secs(secs) {
                let t = Instant::now();
                if c.fire_task(proto::TaskRequest {
                    case_id: id,
                    task: ["A", "B", "C"][i % 3].into(),
                    data: HashMap::new(),
                    branch_bits: None,
                    ..Default::default()
                })
                .await
                .is_err()
                {
                    break;
                }
                lat.push(t.elapsed().as_nanos() as u64);
                i += 1;
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let el = t0.elapsed().as_secs_f64();
    println!(
        "unary FireTask, {callers} callers: {} calls in {el:.2}s = {:.0} calls/s",
        lat.len(),
        lat.len() as f64 / el
    );
    percentiles("unary FireTask latency under load", &mut lat);
    summary.unary16_cps = lat.len() as f64 / el;

    for (i, s) in running.engine.worker_stats().iter().enumerate() {
        use std::sync::atomic::Ordering::Relaxed;
        let core = s.core.load(Relaxed);
        println!(
            "worker {i}: core {} jobs={} ops={} beats={} refused={} parks={} ring-full={}",
            if core == u64::MAX {
                "unpinned".to_string()
            } else {
                core.to_string()
            },
            s.jobs.load(Relaxed),
            s.ops.load(Relaxed),
            s.beats.load(Relaxed),
            s.refused.load(Relaxed),
            s.parks.load(Relaxed),
            s.in_full.load(Relaxed),
        );
    }
    Ok(summary)
}
