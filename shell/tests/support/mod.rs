//! The harness the shell's integration tests share: a real `knhk serve` child process on a
//! scratch data directory and a free port, with its log; corpus models; small helpers.
#![allow(dead_code)]

pub mod certs;
pub mod engine;
pub mod grpc;
pub mod tokens;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use knhk_shell::proto;
use knhk_shell::proto::knhk_client::KnhkClient;
use tonic::transport::Channel;

/// A gRPC client of the server.
pub type Client = KnhkClient<Channel>;

/// A model from `../shared/corpus/` (the path below it).
pub fn corpus(rel: &str) -> Vec<u8> {
    let p = corpus_path(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The path of a model in `../shared/corpus/`.
pub fn corpus_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpus")
        .join(rel)
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_knhk")
}

pub fn scratch(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let d = std::env::temp_dir().join(format!("knhk-dur-{}-{name}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: reproducible from the printed seed.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo).max(1)
    }
}

/// A `knhk serve` child process.
pub struct Proc {
    pub child: Child,
    pub url: String,
    pub log: PathBuf,
    /// What `spawn` was given, to start again on another port when the one picked was taken
    /// meanwhile (`free_port` releases its port before the server binds it; another server's
    /// `127.0.0.1:0` can land on it).
    spawned_with: (PathBuf, Vec<String>, Option<String>),
    port_retries: u32,
}

pub fn spawn(data: &Path, log: &Path, extra: &[&str], wrap_sh: Option<&str>) -> Proc {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--grpc-addr".into(),
        addr.clone(),
        "--workers".into(),
        "1".into(),
        "--no-pin".into(),
        "--io-threads".into(),
        "2".into(),
        "--case-capacity".into(),
        "8192".into(),
        "--drain-grace-ms".into(),
        "0".into(),
        "--data-dir".into(),
        data.display().to_string(),
    ];
    // A default the caller sets itself is dropped (clap refuses a flag given twice).
    for flag in [
        "--workers",
        "--case-capacity",
        "--io-threads",
        "--drain-grace-ms",
    ] {
        if extra.contains(&flag) {
            if let Some(i) = args.iter().position(|a| a == flag) {
                args.drain(i..i + 2);
            }
        }
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let logf = std::fs::File::create(log).expect("log file");
    let mut cmd = match wrap_sh {
        // The shell applies the prefix (ulimit, trap) and then execs the server.
        Some(prefix) => {
            let mut c = Command::new("sh");
            let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
            c.arg("-c")
                .arg(format!("{prefix}; exec '{}' {}", bin(), quoted.join(" ")));
            c
        }
        None => {
            let mut c = Command::new(bin());
            c.args(&args);
            c
        }
    };
    let child = cmd
        .env("KNHK_HTTP_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(logf.try_clone().expect("log"))
        .stderr(logf)
        .spawn()
        .expect("spawn knhk serve");
    Proc {
        child,
        url: format!("http://{addr}"),
        log: log.to_path_buf(),
        spawned_with: (
            data.to_path_buf(),
            extra.iter().map(|s| s.to_string()).collect(),
            wrap_sh.map(str::to_string),
        ),
        port_retries: 0,
    }
}

impl Proc {
    /// Waits until the server answers (after replay); Err with its log if it exited.
    pub async fn ready(&mut self) -> Result<Client, String> {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                if log.contains("Address already in use") && self.port_retries < 5 {
                    let (data, extra, wrap) = self.spawned_with.clone();
                    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
                    let retries = self.port_retries + 1;
                    *self = spawn(&data, &self.log.clone(), &extra, wrap.as_deref());
                    self.port_retries = retries;
                    continue;
                }
                return Err(format!(
                    "knhk serve exited ({status}): {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                ));
            }
            if let Ok(mut c) = KnhkClient::connect(self.url.clone()).await {
                if c.list_workflows(proto::ListWorkflowsRequest {})
                    .await
                    .is_ok()
                {
                    return Ok(c
                        .max_decoding_message_size(64 << 20)
                        .max_encoding_message_size(64 << 20));
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err("knhk serve did not become ready in 60 s".into())
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL on Unix
        let _ = self.child.wait();
    }

    /// The server's log, ANSI colours removed.
    pub fn log_text(&self) -> String {
        let raw = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(ch) = chars.next() {
            if ch == '\u{1b}' {
                // ESC [ ... letter
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                out.push(ch);
            }
        }
        out
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain HTTP/1.1 GET of `path` on `addr` (the server's HTTP side); the body.
pub async fn http_get(addr: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect http");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("send");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(text)
}

/// CreateCase of workflow `wf` without data.
pub async fn create_case(c: &mut Client, wf: &str) -> proto::Case {
    c.create_case(proto::CreateCaseRequest {
        workflow_id: wf.into(),
        ..Default::default()
    })
    .await
    .expect("create")
    .into_inner()
}

/// GetCase.
pub async fn get_case(c: &mut Client, id: u64) -> proto::Case {
    c.get_case(proto::GetCaseRequest {
        case_id: id,
        ..Default::default()
    })
    .await
    .expect("get case")
    .into_inner()
}

/// Every case the server lists (ListCases, all workflows), in its order.
pub async fn list_cases(c: &mut Client) -> Vec<proto::Case> {
    use tokio_stream::StreamExt;
    let mut s = c
        .list_cases(proto::ListCasesRequest::default())
        .await
        .expect("ListCases")
        .into_inner();
    let mut v = Vec::new();
    while let Some(case) = s.next().await {
        v.push(case.expect("ListCases item"));
    }
    v
}

/// The records of the audit log in `dir` (its server has stopped: the log is closed), after
/// `audit::verify` found no problem.
pub fn audit_records(dir: &Path) -> Vec<knhk_shell::audit::Record> {
    let mut recs = Vec::new();
    let report = knhk_shell::audit::verify(dir, |r, _| recs.push(r.clone()))
        .unwrap_or_else(|e| panic!("audit files of {}: {e}", dir.display()));
    assert!(
        report.problems.is_empty(),
        "{}: {:?}",
        dir.display(),
        report.problems
    );
    recs
}
