//! TLS and mutual TLS on the gRPC port, against the real `knhk serve` binary, with outside
//! clients: Python grpcio (`grpc.secure_channel`, Debian's python3-grpcio) and `openssl
//! s_client`, besides tonic and the `knhk` client commands. Certificates, keys and CRLs are made
//! here with rcgen (ring, the one crypto provider).
//!
//! Covered: TLS up with ALPN h2 and a verified chain; ListWorkflows over TLS; a plaintext client
//! refused while the server keeps serving; a client that never completes its handshake dropped
//! after `--tls-handshake-timeout-ms`; mTLS refusing no certificate, another CA's certificate
//! and a revoked one (CRL); reload of replaced files on SIGHUP (new serial presented), a broken
//! file keeping the old configuration, reload on file change; bad files stopping the start with
//! a line naming the file.
//!
//! grpcio and openssl are outside tools: when missing they are skipped with a note, except under
//! CI (`CI` set), where `.ci/run` installs them and a missing tool fails the test.

mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use knhk_shell::proto;
use knhk_shell::proto::knhk_client::KnhkClient;
use knhk_shell::tls::ClientTls;
use rcgen::{
    date_time_ymd, CertificateRevocationListParams, KeyIdMethod, RevocationReason,
    RevokedCertParams, SerialNumber,
};
use support::certs::{ca, leaf, Ca};

// ---------------------------------------------------------------- certificates

fn crl(ca: &Ca, revoked: &[u64]) -> String {
    CertificateRevocationListParams {
        this_update: date_time_ymd(2024, 1, 1),
        next_update: date_time_ymd(2099, 1, 1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|&s| RevokedCertParams {
                serial_number: SerialNumber::from(s),
                revocation_time: date_time_ymd(2024, 1, 2),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&ca.issuer)
    .expect("crl")
    .pem()
    .expect("crl pem")
}

fn put(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    // Write then rename: a reader never sees half a file.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, &p).expect("rename");
    p
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

// ---------------------------------------------------------------- server and clients

/// `knhk serve` with in-memory state and `extra` flags; its https:// URL.
fn serve(dir: &Path, name: &str, extra: &[&str]) -> (support::Proc, String) {
    let mut args = vec!["--durability", "off"];
    args.extend_from_slice(extra);
    let p = support::spawn(
        &dir.join(format!("{name}-data")),
        &dir.join(format!("{name}.log")),
        &args,
        None,
    );
    let url = p.url.replacen("http://", "https://", 1);
    (p, url)
}

async fn list(url: &str, tls: &ClientTls) -> Result<usize, String> {
    let ch = tls
        .channel(url)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        KnhkClient::new(ch).list_workflows(proto::ListWorkflowsRequest {}),
    )
    .await
    .map_err(|_| "timed out".to_string())?
    .map_err(|e| format!("{e}"))?;
    Ok(r.into_inner().workflows.len())
}

async fn ready(p: &mut support::Proc, url: &str, tls: &ClientTls) {
    let t0 = Instant::now();
    loop {
        if let Ok(Some(st)) = p.child.try_wait() {
            panic!("knhk serve exited ({st}): {}", p.log_text());
        }
        if list(url, tls).await.is_ok() {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "not ready in 60 s: {}",
            p.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ca_only(ca: &Path) -> ClientTls {
    ClientTls {
        ca: Some(ca.to_path_buf()),
        ..ClientTls::default()
    }
}

/// Runs an outside tool with a deadline: (exit success, stdout + stderr).
fn run_tool(cmd: &mut Command, secs: u64) -> (bool, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tool");
    let t0 = Instant::now();
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            let mut out = String::new();
            if let Some(mut o) = child.stdout.take() {
                let _ = o.read_to_string(&mut out);
            }
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut out);
            }
            return (st.success(), out);
        }
        if t0.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            return (false, format!("timed out after {secs} s"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether an outside tool is there; under CI a missing one is a failure.
fn have(tool: &str, probe: &mut Command) -> bool {
    let ok = probe
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but {tool} is missing (.ci/run installs it)"
        );
        eprintln!("{tool} not installed: its checks are skipped");
    }
    ok
}

fn python() -> Option<String> {
    let candidates = match std::env::var("KNHK_GRPC_PYTHON") {
        Ok(p) => vec![p],
        Err(_) => vec!["/usr/bin/python3".to_string(), "python3".to_string()],
    };
    for py in &candidates {
        let ok = Command::new(py)
            .args(["-c", "import grpc"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return Some(py.clone());
        }
    }
    have("python3 with grpcio", &mut Command::new("false"));
    None
}

/// ListWorkflows through Python grpcio over TLS (raw protobuf: no generated code). `cert` and
/// `key` are the client's, for mTLS.
const GRPCIO_LIST: &str = r#"
import sys, grpc
target, ca, cert, key = sys.argv[1:5]
rd = lambda p: None if p == '-' else open(p, 'rb').read()
creds = grpc.ssl_channel_credentials(rd(ca), rd(key), rd(cert))
ch = grpc.secure_channel(target, creds, options=[('grpc.ssl_target_name_override', 'localhost')])
call = ch.unary_unary('/knhk.v1.Knhk/ListWorkflows', request_serializer=None, response_deserializer=None)
try:
    reply = call(b'', timeout=5)
    print('OK', len(reply))
except grpc.RpcError as e:
    print('ERR', e.code().name, e.details())
    sys.exit(3)
"#;

fn grpcio_list(py: &str, url: &str, ca: &Path, cert: Option<(&Path, &Path)>) -> (bool, String) {
    let target = url.trim_start_matches("https://");
    let (c, k) = cert
        .map(|(c, k)| (s(c), s(k)))
        .unwrap_or(("-".into(), "-".into()));
    run_tool(
        Command::new(py).args(["-c", GRPCIO_LIST, target, &s(ca), &c, &k]),
        20,
    )
}

fn have_openssl() -> bool {
    have("openssl", Command::new("openssl").arg("version"))
}

/// `openssl s_client` to the server: its output (certificate chain, ALPN, verification).
fn s_client(url: &str, ca: &Path, extra: &[&str]) -> String {
    let target = url.trim_start_matches("https://");
    let mut c = Command::new("openssl");
    c.args(["s_client", "-connect", target, "-servername", "localhost"])
        .args(["-alpn", "h2", "-CAfile", &s(ca), "-verify_return_error"])
        .args(extra);
    run_tool(&mut c, 20).1
}

/// The serial of the certificate the server presents, as `openssl x509 -serial` prints it.
fn served_serial(url: &str, ca: &Path, dir: &Path) -> String {
    let out = s_client(url, ca, &[]);
    let pem = put(dir, "served.pem", &out);
    let (_, serial) = run_tool(
        Command::new("openssl").args(["x509", "-noout", "-serial", "-in", &s(&pem)]),
        10,
    );
    serial.trim().to_string()
}

/// Polls until the server presents the certificate with serial `want` (10 s at most).
fn wait_serial(url: &str, ca: &Path, dir: &Path, want: &str) {
    let t0 = Instant::now();
    loop {
        let got = served_serial(url, ca, dir);
        if got == want {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "server presents {got}, expected {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn file_serial(cert: &Path) -> String {
    let (_, serial) = run_tool(
        Command::new("openssl").args(["x509", "-noout", "-serial", "-in", &s(cert)]),
        10,
    );
    serial.trim().to_string()
}

fn knhk_cli(url: &str, flags: &[&str]) -> (bool, String) {
    let mut c = Command::new(support::bin());
    c.env_remove("KNHK_SERVER")
        .args(["--server", url])
        .args(flags)
        .arg("workflows");
    run_tool(&mut c, 20)
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_outside_clients_refuses_plaintext_and_drops_slow_handshakes() {
    let dir = support::scratch("tls-up");
    let ca = ca("knhk test CA");
    let (cert, key) = leaf(&ca, 7, true);
    let ca_pem = put(&dir, "ca.pem", &ca.pem);
    let cert_pem = put(&dir, "server.pem", &cert);
    let key_pem = put(&dir, "server.key", &key);
    let (mut p, url) = serve(
        &dir,
        "up",
        &[
            "--tls-cert",
            &s(&cert_pem),
            "--tls-key",
            &s(&key_pem),
            "--tls-handshake-timeout-ms",
            "300",
        ],
    );
    let tls = ca_only(&ca_pem);
    ready(&mut p, &url, &tls).await;

    // Python grpcio, an independent TLS and HTTP/2 stack.
    if let Some(py) = python() {
        let (ok, out) = grpcio_list(&py, &url, &ca_pem, None);
        assert!(ok && out.starts_with("OK"), "grpcio over TLS: {out}");
    }
    // openssl: chain verified against the CA, ALPN h2.
    if have_openssl() {
        let out = s_client(&url, &ca_pem, &[]);
        assert!(out.contains("ALPN protocol: h2"), "openssl: {out}");
        assert!(out.contains("Verify return code: 0 (ok)"), "openssl: {out}");
    }
    // The knhk client commands over TLS; without the CA the server's certificate is refused.
    let (ok, out) = knhk_cli(&url, &["--tls-ca", &s(&ca_pem)]);
    assert!(ok, "knhk workflows over TLS: {out}");
    let (ok, out) = knhk_cli(&url, &[]);
    assert!(!ok, "a certificate of an unknown CA was accepted: {out}");

    // Plaintext to the TLS port: refused, and the server keeps serving.
    let plain = url.replacen("https://", "http://", 1);
    assert!(
        list(&plain, &ClientTls::default()).await.is_err(),
        "plaintext call answered"
    );
    assert!(list(&url, &tls).await.is_ok());

    // A client that connects and never starts its handshake is dropped after 300 ms.
    let addr = url.trim_start_matches("https://").to_string();
    let t0 = Instant::now();
    let dropped = tokio::task::spawn_blocking(move || {
        let mut sock = std::net::TcpStream::connect(addr).expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut b = [0u8; 16];
        // 0 bytes (closed) or a reset: dropped; WouldBlock/TimedOut: still open after 5 s.
        match sock.read(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    })
    .await
    .expect("join");
    let took = t0.elapsed();
    assert!(dropped, "silent client still connected after 5 s");
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "silent client dropped after {took:?}, not after ~300 ms"
    );
    assert!(list(&url, &tls).await.is_ok(), "server stopped serving");
    let log = p.log_text();
    assert!(log.contains("TLS handshake refused"), "no log line: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_missing_foreign_and_revoked_client_certificates() {
    let dir = support::scratch("tls-mtls");
    let ca1 = ca("knhk test CA");
    let other = ca("some other CA");
    let (cert, key) = leaf(&ca1, 7, true);
    let ca_pem = put(&dir, "ca.pem", &ca1.pem);
    let cert_pem = put(&dir, "server.pem", &cert);
    let key_pem = put(&dir, "server.key", &key);
    let (good_c, good_k) = leaf(&ca1, 100, false);
    let (rev_c, rev_k) = leaf(&ca1, 101, false);
    let (for_c, for_k) = leaf(&other, 100, false);
    let good = (
        put(&dir, "good.pem", &good_c),
        put(&dir, "good.key", &good_k),
    );
    let revoked = (put(&dir, "rev.pem", &rev_c), put(&dir, "rev.key", &rev_k));
    let foreign = (put(&dir, "for.pem", &for_c), put(&dir, "for.key", &for_k));
    let crl_pem = put(&dir, "ca.crl.pem", &crl(&ca1, &[101]));
    let (mut p, url) = serve(
        &dir,
        "mtls",
        &[
            "--tls-cert",
            &s(&cert_pem),
            "--tls-key",
            &s(&key_pem),
            "--tls-client-ca",
            &s(&ca_pem),
            "--tls-crl",
            &s(&crl_pem),
        ],
    );
    let with = |c: &(PathBuf, PathBuf)| ClientTls {
        ca: Some(ca_pem.clone()),
        cert: Some(c.0.clone()),
        key: Some(c.1.clone()),
        server_name: None,
    };
    ready(&mut p, &url, &with(&good)).await;

    // tonic: good certificate in; none, another CA's, a revoked one: refused.
    assert!(list(&url, &with(&good)).await.is_ok());
    assert!(list(&url, &ca_only(&ca_pem)).await.is_err(), "no cert");
    assert!(list(&url, &with(&foreign)).await.is_err(), "other CA");
    assert!(list(&url, &with(&revoked)).await.is_err(), "revoked");

    if let Some(py) = python() {
        let (ok, out) = grpcio_list(&py, &url, &ca_pem, Some((&good.0, &good.1)));
        assert!(
            ok && out.starts_with("OK"),
            "grpcio with a good cert: {out}"
        );
        let (ok, out) = grpcio_list(&py, &url, &ca_pem, None);
        assert!(!ok && out.contains("UNAVAILABLE"), "grpcio, no cert: {out}");
        let (ok, out) = grpcio_list(&py, &url, &ca_pem, Some((&revoked.0, &revoked.1)));
        assert!(!ok && out.contains("UNAVAILABLE"), "grpcio, revoked: {out}");
        let (ok, out) = grpcio_list(&py, &url, &ca_pem, Some((&foreign.0, &foreign.1)));
        assert!(
            !ok && out.contains("UNAVAILABLE"),
            "grpcio, other CA: {out}"
        );
    }
    let (ok, out) = knhk_cli(
        &url,
        &[
            "--tls-ca",
            &s(&ca_pem),
            "--tls-client-cert",
            &s(&good.0),
            "--tls-client-key",
            &s(&good.1),
        ],
    );
    assert!(ok, "knhk workflows with a client cert: {out}");
    let (ok, _) = knhk_cli(&url, &["--tls-ca", &s(&ca_pem)]);
    assert!(!ok, "knhk workflows without a client cert answered");
    assert!(list(&url, &with(&good)).await.is_ok(), "server stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_reload_on_sighup_and_on_file_change() {
    if !have_openssl() {
        return;
    }
    let dir = support::scratch("tls-reload");
    let ca = ca("knhk test CA");
    let ca_pem = put(&dir, "ca.pem", &ca.pem);
    let (c1, k1) = leaf(&ca, 0x11, true);
    let cert_pem = put(&dir, "server.pem", &c1);
    let key_pem = put(&dir, "server.key", &k1);
    let first = file_serial(&cert_pem);
    let tls = ca_only(&ca_pem);

    // SIGHUP only (no file polling).
    let (mut p, url) = serve(
        &dir,
        "hup",
        &[
            "--tls-cert",
            &s(&cert_pem),
            "--tls-key",
            &s(&key_pem),
            "--tls-reload-interval-ms",
            "0",
        ],
    );
    ready(&mut p, &url, &tls).await;
    assert_eq!(served_serial(&url, &ca_pem, &dir), first);

    let hup = |p: &support::Proc| {
        let ok = Command::new("kill")
            .args(["-HUP", &p.child.id().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -HUP");
    };
    // New certificate and key, then SIGHUP: the new one is presented, no restart.
    let (c2, k2) = leaf(&ca, 0x22, true);
    put(&dir, "server.key", &k2);
    put(&dir, "server.pem", &c2);
    let second = file_serial(&cert_pem);
    assert_ne!(first, second);
    hup(&p);
    wait_serial(&url, &ca_pem, &dir, &second);
    assert!(list(&url, &tls).await.is_ok());

    // A broken certificate file, then SIGHUP: the reload fails, the old certificate stays.
    put(&dir, "server.pem", "not a certificate\n");
    hup(&p);
    let t0 = Instant::now();
    while !p.log_text().contains("TLS reload failed") {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no reload error logged: {}",
            p.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(p.child.try_wait().expect("wait").is_none(), "server died");
    assert_eq!(served_serial(&url, &ca_pem, &dir), second);
    assert!(list(&url, &tls).await.is_ok());
    let log = p.log_text();
    assert!(
        log.contains(&s(&cert_pem)) && log.contains("no certificate found"),
        "reload error names neither the file nor the fault: {log}"
    );
    drop(p);

    // With file polling (100 ms): replacing the files is enough.
    put(&dir, "server.pem", &c2);
    let (mut p, url) = serve(
        &dir,
        "poll",
        &[
            "--tls-cert",
            &s(&cert_pem),
            "--tls-key",
            &s(&key_pem),
            "--tls-reload-interval-ms",
            "100",
        ],
    );
    ready(&mut p, &url, &tls).await;
    assert_eq!(served_serial(&url, &ca_pem, &dir), second);
    let (c3, k3) = leaf(&ca, 0x33, true);
    put(&dir, "server.key", &k3);
    put(&dir, "server.pem", &c3);
    let third = file_serial(&cert_pem);
    wait_serial(&url, &ca_pem, &dir, &third);
    assert!(list(&url, &tls).await.is_ok());
}

/// `knhk serve` with `tls` flags: (exit code, stderr). It must exit by itself.
fn serve_fails(dir: &Path, tls: &[&str]) -> (Option<i32>, String) {
    let mut c = Command::new(support::bin());
    c.args(["serve", "--grpc-addr", "127.0.0.1:0", "--http-addr", "off"])
        .args(["--durability", "off", "--workers", "1", "--no-pin"])
        .args(["--data-dir", &s(&dir.join("data"))])
        .args(tls);
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let t0 = Instant::now();
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return (st.code(), err);
        }
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("knhk serve with bad TLS files {tls:?} is still running after 20 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn bad_tls_files_stop_the_start_naming_the_file() {
    let dir = support::scratch("tls-bad");
    let ca1 = ca("knhk test CA");
    let (cert, key) = leaf(&ca1, 7, true);
    let (_, other_key) = leaf(&ca1, 8, true);
    let cert_pem = put(&dir, "server.pem", &cert);
    let key_pem = put(&dir, "server.key", &key);
    let wrong_key = put(&dir, "wrong.key", &other_key);
    let garbage = put(&dir, "garbage.pem", "hello\n");
    let missing = dir.join("missing.pem");
    let ca_pem = put(&dir, "ca.pem", &ca1.pem);

    let cases: Vec<(Vec<String>, PathBuf, &str)> = vec![
        (
            vec![
                "--tls-cert".into(),
                s(&missing),
                "--tls-key".into(),
                s(&key_pem),
            ],
            missing.clone(),
            "cannot read",
        ),
        (
            vec![
                "--tls-cert".into(),
                s(&garbage),
                "--tls-key".into(),
                s(&key_pem),
            ],
            garbage.clone(),
            "no certificate found",
        ),
        (
            vec![
                "--tls-cert".into(),
                s(&cert_pem),
                "--tls-key".into(),
                s(&garbage),
            ],
            garbage.clone(),
            "no private key found",
        ),
        (
            vec![
                "--tls-cert".into(),
                s(&cert_pem),
                "--tls-key".into(),
                s(&wrong_key),
            ],
            wrong_key.clone(),
            "does not match the certificate",
        ),
        (
            vec![
                "--tls-cert".into(),
                s(&cert_pem),
                "--tls-key".into(),
                s(&key_pem),
                "--tls-client-ca".into(),
                s(&garbage),
            ],
            garbage.clone(),
            "no certificate found",
        ),
        (
            vec![
                "--tls-cert".into(),
                s(&cert_pem),
                "--tls-key".into(),
                s(&key_pem),
                "--tls-client-ca".into(),
                s(&ca_pem),
                "--tls-crl".into(),
                s(&cert_pem),
            ],
            cert_pem.clone(),
            "no CRL found",
        ),
    ];
    for (flags, file, fault) in cases {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let (code, err) = serve_fails(&dir, &flags);
        assert!(
            code.is_some_and(|c| c != 0),
            "{flags:?}: exit {code:?}: {err}"
        );
        assert!(
            err.contains(&s(&file)) && err.contains(fault),
            "{flags:?}: stderr names neither {} nor '{fault}': {err}",
            file.display()
        );
        assert!(!err.contains("panicked"), "{flags:?}: {err}");
    }
    // A key without a certificate is refused by the flag parser.
    let (code, err) = serve_fails(&dir, &["--tls-key", &s(&key_pem)]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--tls-cert"), "{err}");
}

/// One HTTP/1.1 GET of `path` over TLS (verified against `ca`, ALPN http/1.1 and h2 offered):
/// (negotiated ALPN, response head and body).
async fn https_get(port: u16, ca: &str, path: &str) -> Result<(Option<Vec<u8>>, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    knhk_shell::tls::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject as _;
    for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await;
    Ok((alpn, String::from_utf8_lossy(&out).into_owned()))
}

/// The HTTP port over TLS (issue 12 item 1): with the gRPC port's files (`--http-tls`) or its own
/// (`--http-tls-cert`, `--http-tls-key`), the probes answer over HTTPS with ALPN http/1.1 and a
/// plaintext request gets no HTTP answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_port_serves_tls_with_the_grpc_files_or_its_own() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = support::scratch("http-tls");
    let auth = ca("http test CA");
    let (cert, key) = leaf(&auth, 2, true);
    let (own_cert, own_key) = leaf(&auth, 9, true);
    let ca_pem = put(&dir, "ca.pem", &auth.pem);
    let (cert, key) = (put(&dir, "cert.pem", &cert), put(&dir, "key.pem", &key));
    let (own_cert, own_key) = (
        put(&dir, "own.pem", &own_cert),
        put(&dir, "own.key", &own_key),
    );
    for (name, flags) in [
        ("same", vec!["--http-tls".to_string()]),
        (
            "own",
            vec![
                "--http-tls-cert".to_string(),
                s(&own_cert),
                "--http-tls-key".into(),
                s(&own_key),
            ],
        ),
    ] {
        let http_port = support::free_port();
        let http = format!("127.0.0.1:{http_port}");
        let mut extra = vec!["--tls-cert", "", "--tls-key", "", "--http-addr", &http];
        let (c, k) = (s(&cert), s(&key));
        extra[1] = &c;
        extra[3] = &k;
        extra.extend(flags.iter().map(String::as_str));
        let (mut p, url) = serve(&dir, name, &extra);
        ready(&mut p, &url, &ca_only(&ca_pem)).await;
        let (alpn, resp) = https_get(http_port, &auth.pem, "/health/live")
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}\n{}", p.log_text()));
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]), "{name}");
        assert!(resp.starts_with("HTTP/1.1 200"), "{name}: {resp}");
        // Plaintext HTTP on the TLS port: no HTTP answer.
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", http_port))
            .await
            .expect("connect");
        tcp.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut buf)).await;
        assert!(
            !String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"),
            "{name}: plaintext was served"
        );
        p.kill();
    }
}
