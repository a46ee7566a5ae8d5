//! A cluster on loopback for tests and benches (docs/cluster.md): 3 `nats-server`
//! (JetStream), 3 `etcd` and 3 `knhk serve --nats … --etcd …` under a temporary directory,
//! each process started and stopped by its id. Included with `#[path]` by
//! `tests/cluster_faults.rs` and `benches/cluster.rs`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use knhk_shell::proto::{self, knhk_client::KnhkClient};
use tonic::transport::Channel;

/// A loopback port nothing listens on, below Linux's ephemeral range (32768 and up): a port
/// the kernel hands out for `:0` can be taken again, before its server binds it, as the source
/// port of another process's outgoing connection (a CI run lost a knhk node to "Address
/// already in use" that way). Never the same port twice in one test process.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    static STATE: AtomicU64 = AtomicU64::new(0);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id()) << 32;
    let _ = STATE.compare_exchange(0, seed | 1, Ordering::SeqCst, Ordering::SeqCst);
    for _ in 0..10_000 {
        // xorshift over a shared state: different ports across threads and calls
        let mut x = STATE.load(Ordering::SeqCst);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        STATE.store(x, Ordering::SeqCst);
        let port = 20_000 + (x % 12_000) as u16;
        let mut taken = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
        if taken.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            taken.push(port);
            return port;
        }
    }
    panic!("no free loopback port between 20000 and 32000");
}

pub fn on_path(bin: &str) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Whether nats-server and etcd are on PATH; without them a cluster test is skipped (with a
/// line saying so), or fails when `KNHK_CLUSTER_TESTS=require` (.ci/run sets it).
pub fn servers_present() -> bool {
    if on_path("nats-server") && on_path("etcd") {
        return true;
    }
    if std::env::var("KNHK_CLUSTER_TESTS").as_deref() == Ok("require") {
        panic!("nats-server and etcd must be on PATH (KNHK_CLUSTER_TESTS=require)");
    }
    println!("SKIPPED: cluster test (nats-server or etcd not on PATH)");
    false
}

pub fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status();
}

/// One supervised process: how to start it, and the running child.
pub struct Proc {
    pub name: String,
    pub cmd: Vec<String>,
    pub log: PathBuf,
    pub child: Option<Child>,
}

impl Proc {
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(&self.cmd[0])
            .args(&self.cmd[1..])
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.name));
        self.child = Some(child);
    }

    pub fn kill(&mut self, sig: &str) {
        if let Some(c) = &self.child {
            signal(c, sig);
        }
    }

    /// Reaps an exited child (a zombie knhk exits on its own once its lease is gone).
    pub fn exited(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(Some(_))),
            None => true,
        }
    }

    pub fn stop_and_wait(&mut self, sig: &str) {
        if let Some(mut c) = self.child.take() {
            signal(&c, sig);
            signal(&c, "CONT");
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub struct Cluster {
    pub nats: Vec<Proc>,
    pub etcd: Vec<Proc>,
    pub knhk: Vec<Proc>,
    /// The knhk nodes' gRPC endpoints (`http://…`).
    pub grpc: Vec<String>,
    /// The knhk nodes' HTTP addresses (metrics, probes).
    pub http: Vec<String>,
    pub nats_urls: Vec<String>,
    pub partitions: u16,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// A directory removed when dropped.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            if std::thread::panicking() {
                // A failed run leaves its story in the test's output: the end of every knhk
                // node's log (the directory itself goes, unless KNHK_HA_KEEP is set).
                for i in 0..3 {
                    let log = self.0.join(format!("knhk{i}.log"));
                    if let Ok(text) = std::fs::read_to_string(&log) {
                        let lines: Vec<&str> = text.lines().collect();
                        eprintln!("--- last lines of {}", log.display());
                        for l in &lines[lines.len().saturating_sub(40)..] {
                            eprintln!("{l}");
                        }
                    }
                }
            }
            if std::env::var_os("KNHK_HA_KEEP").is_none() {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}

/// The processes of a cluster (none started yet): 3 nats-server, 3 etcd, 3 knhk nodes with
/// `partitions` partitions and a `lease_ttl_s` lease, each node with `extra` flags.
pub fn cluster(dir: &Path, partitions: u16, lease_ttl_s: u64, extra: &[&str]) -> Cluster {
    let nats_ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let etcd_ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let knhk_ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
    let routes: Vec<String> = nats_ports
        .iter()
        .map(|(_, c)| format!("nats-route://127.0.0.1:{c}"))
        .collect();
    let mut nats = Vec::new();
    for (i, (client, route)) in nats_ports.iter().enumerate() {
        let store = dir.join(format!("nats{i}"));
        std::fs::create_dir_all(&store).expect("store dir");
        let conf = dir.join(format!("nats{i}.conf"));
        std::fs::write(
            &conf,
            format!(
                "server_name: n{i}\nlisten: 127.0.0.1:{client}\njetstream {{ store_dir: \"{}\" }}\n\
                 cluster {{ name: knhk, listen: 127.0.0.1:{route}, routes: [{}] }}\n",
                store.display(),
                routes.join(", ")
            ),
        )
        .expect("nats config");
        nats.push(Proc {
            name: format!("nats{i}"),
            cmd: vec![
                "nats-server".into(),
                "-c".into(),
                conf.display().to_string(),
            ],
            log: dir.join(format!("nats{i}.log")),
            child: None,
        });
    }
    let initial: Vec<String> = etcd_ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("e{i}=http://127.0.0.1:{peer}"))
        .collect();
    let mut etcd = Vec::new();
    for (i, (client, peer)) in etcd_ports.iter().enumerate() {
        etcd.push(Proc {
            name: format!("etcd{i}"),
            cmd: vec![
                "etcd".into(),
                "--name".into(),
                format!("e{i}"),
                "--data-dir".into(),
                dir.join(format!("etcd{i}")).display().to_string(),
                "--listen-client-urls".into(),
                format!("http://127.0.0.1:{client}"),
                "--advertise-client-urls".into(),
                format!("http://127.0.0.1:{client}"),
                "--listen-peer-urls".into(),
                format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls".into(),
                format!("http://127.0.0.1:{peer}"),
                "--initial-cluster".into(),
                initial.join(","),
                "--initial-cluster-state".into(),
                "new".into(),
            ],
            log: dir.join(format!("etcd{i}.log")),
            child: None,
        });
    }
    let nats_urls: Vec<String> = nats_ports
        .iter()
        .map(|(c, _)| format!("nats://127.0.0.1:{c}"))
        .collect();
    let etcd_urls: Vec<String> = etcd_ports
        .iter()
        .map(|(c, _)| format!("http://127.0.0.1:{c}"))
        .collect();
    let mut knhk = Vec::new();
    let mut grpc = Vec::new();
    let mut http = Vec::new();
    for (i, (g, h)) in knhk_ports.iter().enumerate() {
        let addr = format!("127.0.0.1:{g}");
        grpc.push(format!("http://{addr}"));
        http.push(format!("127.0.0.1:{h}"));
        let mut cmd: Vec<String> = vec![
            env!("CARGO_BIN_EXE_knhk").into(),
            "serve".into(),
            "--grpc-addr".into(),
            addr.clone(),
            "--http-addr".into(),
            format!("127.0.0.1:{h}"),
            "--nats".into(),
            nats_urls.join(","),
            "--etcd".into(),
            etcd_urls.join(","),
            "--node-id".into(),
            format!("k{i}"),
            "--advertise".into(),
            addr,
            "--partitions".into(),
            partitions.to_string(),
            "--durability".into(),
            "relaxed".into(),
            "--lease-ttl-s".into(),
            lease_ttl_s.to_string(),
            "--workers".into(),
            "1".into(),
            // Each node's own files (its audit log).
            "--data-dir".into(),
            dir.join(format!("knhk{i}-data")).display().to_string(),
        ];
        // a capacity in `extra` replaces the default
        if !extra.contains(&"--case-capacity") {
            cmd.extend(["--case-capacity".into(), "1048576".into()]);
        }
        cmd.extend(extra.iter().map(|s| s.to_string()));
        knhk.push(Proc {
            name: format!("knhk{i}"),
            cmd,
            log: dir.join(format!("knhk{i}.log")),
            child: None,
        });
    }
    Cluster {
        nats,
        etcd,
        knhk,
        grpc,
        http,
        nats_urls,
        partitions,
        _dir: tempdir::Dir(dir.to_path_buf()),
    }
}

pub async fn client(addr: &str) -> Option<KnhkClient<Channel>> {
    let ch = Channel::from_shared(addr.to_string())
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .ok()?;
    Some(KnhkClient::new(ch))
}

/// One connection per node, kept across calls (a channel reconnects by itself after its node
/// restarts): connecting for every call would load the nodes more than the calls do.
#[derive(Default)]
pub struct Clients(HashMap<String, KnhkClient<Channel>>);

impl Clients {
    pub async fn get(&mut self, addr: &str) -> Option<KnhkClient<Channel>> {
        if let Some(k) = self.0.get(addr) {
            return Some(k.clone());
        }
        let k = client(addr).await?;
        self.0.insert(addr.to_string(), k.clone());
        Some(k)
    }
}

/// Every node answers and every partition has an owner.
pub async fn settled(c: &Cluster) -> bool {
    for addr in &c.grpc {
        let Some(mut k) = client(addr).await else {
            return false;
        };
        match k.get_topology(proto::GetTopologyRequest {}).await {
            Ok(t) if t.get_ref().owners.len() == usize::from(c.partitions) => {}
            _ => return false,
        }
    }
    true
}

/// The supervisor's part: a knhk node that exited (a lost lease) is started again.
pub fn revive(c: &mut Cluster) {
    for p in c.knhk.iter_mut() {
        if p.exited() {
            p.start();
        }
    }
}

pub async fn wait_settled(c: &mut Cluster, within: Duration) {
    let t0 = Instant::now();
    while t0.elapsed() < within {
        revive(c);
        if settled(c).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the cluster did not settle (every node up, every partition owned) within {within:?}");
}

/// The `/metrics` text of a node's HTTP address (`Cluster::http`), by a plain HTTP/1.1 GET.
pub async fn metrics(addr: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return String::new();
    };
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf).into_owned()
}

/// The value of an unlabelled sample `name` in a metrics text (0 when absent).
pub fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}
