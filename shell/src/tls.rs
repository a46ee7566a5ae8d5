//! TLS and mutual TLS on the gRPC port (docs/operations.md, "TLS"), and the client side of it
//! for the `knhk` client commands.
//!
//! The server terminates TLS itself (tokio-rustls on each accepted TCP connection) rather than
//! through tonic's `ServerTlsConfig`, so that:
//!
//! - the certificate, key, client CA bundle and CRLs can be reloaded without a restart
//!   ([`TlsState::reload`], on SIGHUP and when the files change): new connections get the new
//!   configuration, open ones keep theirs; a reload that fails keeps the old configuration;
//! - every handshake runs in its own task under a deadline (`--tls-handshake-timeout-ms`): a
//!   client that connects and never finishes its handshake is dropped, and holds up no other;
//! - client certificates are checked against CRLs (rustls' `WebPkiClientVerifier`).
//!
//! One crypto provider is compiled in: ring (rustls, tonic `tls-ring`, rcgen in the tests).
//! [`install_crypto_provider`] installs it as the process default at start-up.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::auth::PeerIdentity;

/// PEM files larger than this are refused (a certificate bundle or CRL is far smaller).
const MAX_PEM_BYTES: u64 = 16 << 20;

/// Installs ring as the process-wide rustls crypto provider. Idempotent: a provider already
/// installed (by an earlier call) is kept.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// Whether a client certificate is demanded once `--tls-client-ca` is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// Every client must present a certificate that chains to the CA bundle (mTLS).
    #[default]
    Required,
    /// A client may present no certificate; one that it presents must verify.
    Optional,
}

/// TLS settings of the gRPC port (`knhk serve --tls-*`).
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first (`--tls-cert`).
    pub cert: PathBuf,
    /// PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC) (`--tls-key`).
    pub key: PathBuf,
    /// PEM bundle of CAs that client certificates must chain to (`--tls-client-ca`): mTLS.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: whether a client certificate is required.
    pub client_auth: ClientAuth,
    /// PEM certificate revocation lists checked against client certificates (`--tls-crl`).
    pub crls: Vec<PathBuf>,
    /// Deadline for a TLS handshake, counted from the TCP accept.
    pub handshake_timeout: Duration,
    /// How often the files are checked for changes (size or modification time); `None`: only
    /// on SIGHUP.
    pub reload_interval: Option<Duration>,
}

impl TlsConfig {
    /// A configuration with a certificate and key only (no client certificates), a 10 s
    /// handshake deadline and file checks every 10 s.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        TlsConfig {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
            client_auth: ClientAuth::Required,
            crls: Vec::new(),
            handshake_timeout: Duration::from_secs(10),
            reload_interval: Some(Duration::from_secs(10)),
        }
    }

    fn files(&self) -> Vec<&Path> {
        let mut v = vec![self.cert.as_path(), self.key.as_path()];
        v.extend(self.client_ca.as_deref());
        v.extend(self.crls.iter().map(PathBuf::as_path));
        v
    }
}

/// A TLS file that could not be used: which file, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {reason}", path.display())]
pub struct TlsError {
    /// Which file: "TLS certificate file", "TLS key file", "TLS client CA file", "TLS CRL file".
    pub what: &'static str,
    pub path: PathBuf,
    pub reason: String,
}

fn err(what: &'static str, path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError {
        what,
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

const CERT: &str = "TLS certificate file";
const KEY: &str = "TLS key file";
const CA: &str = "TLS client CA file";
const CRL: &str = "TLS CRL file";

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let meta = std::fs::metadata(path).map_err(|e| err(what, path, format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(err(what, path, "not a regular file"));
    }
    if meta.len() > MAX_PEM_BYTES {
        return Err(err(
            what,
            path,
            format!(
                "{} bytes, more than the {MAX_PEM_BYTES} allowed",
                meta.len()
            ),
        ));
    }
    std::fs::read(path).map_err(|e| err(what, path, format!("cannot read: {e}")))
}

fn pem_reason(e: &pem::Error, wanted: &str) -> String {
    match e {
        pem::Error::NoItemsFound => format!("no {wanted} found (expected PEM)"),
        other => format!("invalid PEM: {other:?}"),
    }
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_pem(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(what, path, pem_reason(&e, "certificate")))?;
    if certs.is_empty() {
        return Err(err(
            what,
            path,
            "no certificate found (expected PEM 'BEGIN CERTIFICATE')",
        ));
    }
    Ok(certs)
}

/// Loads and checks every file of `cfg` and builds the rustls configuration (ALPN `h2`).
/// Errors name the file and what is wrong with it.
pub fn load(cfg: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    load_alpn(cfg, b"h2")
}

/// [`load`] offering `alpn`.
fn load_alpn(cfg: &TlsConfig, alpn: &[u8]) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = provider();
    let certs = read_certs(CERT, &cfg.cert)?;
    let key_pem = read_pem(KEY, &cfg.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| err(KEY, &cfg.key, pem_reason(&e, "private key")))?;
    let signing = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| err(KEY, &cfg.key, format!("unusable private key: {e}")))?;
    match CertifiedKey::new(certs.clone(), signing).keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(err(
                KEY,
                &cfg.key,
                format!("does not match the certificate in {}", cfg.cert.display()),
            ))
        }
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => return Err(err(CERT, &cfg.cert, format!("invalid certificate: {e}"))),
    }

    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(CERT, &cfg.cert, format!("TLS versions: {e}")))?;
    let builder = match &cfg.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca_path) => {
            let mut roots = RootCertStore::empty();
            for (i, c) in read_certs(CA, ca_path)?.into_iter().enumerate() {
                roots.add(c).map_err(|e| {
                    err(
                        CA,
                        ca_path,
                        format!("certificate #{} is not a usable CA certificate: {e}", i + 1),
                    )
                })?;
            }
            let roots = Arc::new(roots);
            let mut crls = Vec::new();
            for p in &cfg.crls {
                let bytes = read_pem(CRL, p)?;
                let these = CertificateRevocationListDer::pem_slice_iter(&bytes)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| err(CRL, p, pem_reason(&e, "CRL")))?;
                if these.is_empty() {
                    return Err(err(CRL, p, "no CRL found (expected PEM 'BEGIN X509 CRL')"));
                }
                // Parse this file's CRLs on their own, so that an error names the file.
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                    .with_crls(these.iter().cloned())
                    .build()
                    .map_err(|e| err(CRL, p, format!("invalid CRL: {e}")))?;
                crls.extend(these);
            }
            let mut v = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                .with_crls(crls)
                // A certificate of a CA that no given CRL covers is accepted (a bundle may
                // hold CAs that publish no CRL); one listed in a CRL of its issuer is refused.
                .allow_unknown_revocation_status();
            if cfg.client_auth == ClientAuth::Optional {
                v = v.allow_unauthenticated();
            }
            let verifier = v
                .build()
                .map_err(|e| err(CA, ca_path, format!("cannot verify clients: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| err(CERT, &cfg.cert, format!("unusable with its key: {e}")))?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}

/// What identifies a file's version: size and modification time.
type Stamp = Option<(u64, SystemTime)>;

fn stamps(cfg: &TlsConfig) -> Vec<Stamp> {
    cfg.files()
        .into_iter()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.len(), m.modified().unwrap_or(UNIX_EPOCH)))
        })
        .collect()
}

/// The live TLS configuration of the gRPC port: swapped whole on reload.
pub struct TlsState {
    cfg: TlsConfig,
    /// ALPN offered: `h2` (the gRPC port) or `http/1.1` (the HTTP port).
    alpn: &'static [u8],
    current: ArcSwap<rustls::ServerConfig>,
    /// The file versions last looked at (loaded or refused).
    seen: Mutex<Vec<Stamp>>,
    reloads: AtomicU64,
    failed_handshakes: AtomicU64,
    /// Second (since the epoch) of the last handshake failure logged: at most one a second.
    last_failure_log: AtomicU64,
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState").field("cfg", &self.cfg).finish()
    }
}

impl TlsState {
    /// Loads the files of `cfg` ([`load`]).
    pub fn new(cfg: TlsConfig) -> Result<Arc<Self>, TlsError> {
        Self::with_alpn(cfg, b"h2")
    }

    /// [`TlsState::new`] for the HTTP port: ALPN `http/1.1`.
    pub fn new_http1(cfg: TlsConfig) -> Result<Arc<Self>, TlsError> {
        Self::with_alpn(cfg, b"http/1.1")
    }

    fn with_alpn(cfg: TlsConfig, alpn: &'static [u8]) -> Result<Arc<Self>, TlsError> {
        let seen = stamps(&cfg);
        let config = load_alpn(&cfg, alpn)?;
        Ok(Arc::new(TlsState {
            cfg,
            alpn,
            current: ArcSwap::new(config),
            seen: Mutex::new(seen),
            reloads: AtomicU64::new(0),
            failed_handshakes: AtomicU64::new(0),
            last_failure_log: AtomicU64::new(0),
        }))
    }

    /// The settings.
    pub fn config(&self) -> &TlsConfig {
        &self.cfg
    }

    /// Successful reloads so far.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Handshakes that failed or timed out so far.
    pub fn failed_handshakes(&self) -> u64 {
        self.failed_handshakes.load(Ordering::Relaxed)
    }

    /// Reads every file again; on success new connections use the new configuration, on
    /// failure the old one stays and the error is returned.
    pub fn reload(&self) -> Result<(), TlsError> {
        let before = stamps(&self.cfg);
        if let Ok(mut s) = self.seen.lock() {
            *s = before;
        }
        let config = load_alpn(&self.cfg, self.alpn)?;
        self.current.store(config);
        self.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Reloads when a file's size or modification time changed since it was last looked at.
    /// `None` when nothing changed.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let now = stamps(&self.cfg);
        let changed = self.seen.lock().map(|s| *s != now).unwrap_or(true);
        changed.then(|| self.reload())
    }

    fn reload_logged(&self, why: &str) {
        match self.reload() {
            Ok(()) => tracing::info!(
                trigger = why,
                cert = %self.cfg.cert.display(),
                "TLS configuration reloaded (new connections use it)"
            ),
            Err(e) => tracing::error!(
                trigger = why,
                "TLS reload failed, the previous configuration stays in use: {e}"
            ),
        }
    }

    /// Reloads on SIGHUP and, with `reload_interval`, when the files change; runs until
    /// aborted. The SIGHUP handler is installed when this is called, not when the returned
    /// future first runs: a SIGHUP between start-up and the first poll would otherwise meet
    /// the default action and end the process.
    pub fn watch(self: Arc<Self>) -> impl std::future::Future<Output = ()> + Send {
        let triggers = crate::reload::Triggers::new(self.cfg.reload_interval);
        self.watch_with(triggers)
    }

    async fn watch_with(self: Arc<Self>, mut triggers: crate::reload::Triggers) {
        loop {
            match triggers.next().await {
                crate::reload::Trigger::Hangup => self.reload_logged("SIGHUP"),
                crate::reload::Trigger::Poll => {
                    let me = self.clone();
                    // File reads off the runtime's threads.
                    let r = tokio::task::spawn_blocking(move || me.reload_if_changed()).await;
                    match r {
                        Ok(Some(Ok(()))) => tracing::info!(
                            trigger = "file change",
                            cert = %self.cfg.cert.display(),
                            "TLS configuration reloaded (new connections use it)"
                        ),
                        Ok(Some(Err(e))) => tracing::error!(
                            trigger = "file change",
                            "TLS reload failed, the previous configuration stays in use: {e}"
                        ),
                        _ => {}
                    }
                }
            }
        }
    }

    /// Spawns the handshake of `tcp` under the deadline.
    pub(crate) fn handshake(
        me: Arc<Self>,
        tcp: TcpStream,
    ) -> impl std::future::Future<Output = Option<Conn>> + Send + 'static {
        let acceptor = tokio_rustls::TlsAcceptor::from(me.current.load_full());
        let timeout = me.cfg.handshake_timeout;
        async move {
            let peer = tcp.peer_addr().ok();
            let why = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    // The verified client certificate's names, once per connection.
                    let peer = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|leaf| Arc::new(PeerIdentity::from_der(leaf.as_ref())));
                    return Some(Conn::Tls(Box::new(tls), peer));
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no handshake within {} ms", timeout.as_millis()),
            };
            let n = me.failed_handshakes.fetch_add(1, Ordering::Relaxed) + 1;
            let sec = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            if me.last_failure_log.swap(sec, Ordering::Relaxed) != sec {
                tracing::warn!(
                    peer = ?peer,
                    failed_so_far = n,
                    "TLS handshake refused: {why} (at most one such line a second)"
                );
            }
            None
        }
    }
}

/// Handshakes in progress at once per listener; past this, accepting waits (the kernel's
/// backlog holds new connections).
const MAX_PENDING_HANDSHAKES: usize = 4096;

/// A connection of the gRPC port: plain TCP, or TLS over TCP once the handshake is done
/// (with the names of the client certificate, when one was presented and verified).
pub enum Conn {
    Plain(TcpStream),
    Tls(
        Box<tokio_rustls::server::TlsStream<TcpStream>>,
        Option<Arc<PeerIdentity>>,
    ),
}

/// What every request of a connection carries in its extensions: the TCP addresses and the
/// verified client certificate's names (crate::auth).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub tcp: TcpConnectInfo,
    pub peer: Option<Arc<PeerIdentity>>,
    /// The connection's open calls, for the idle timeout (`--idle-timeout-ms`).
    pub activity: Option<Arc<Activity>>,
}

/// The calls a connection has open, and since when it has none: a connection with none for
/// longer than the idle timeout is closed.
#[derive(Debug)]
pub struct Activity {
    active: std::sync::atomic::AtomicUsize,
    /// Since when no call has been open (meaningful while `active` is 0).
    idle_since: Mutex<tokio::time::Instant>,
    /// The connection's reader, woken when the last call ends (to arm its timer).
    reader: atomic_waker::AtomicWaker,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            active: std::sync::atomic::AtomicUsize::new(0),
            idle_since: Mutex::new(tokio::time::Instant::now()),
            reader: atomic_waker::AtomicWaker::new(),
        })
    }

    /// One more open call, until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> ActiveCall {
        self.active.fetch_add(1, Ordering::AcqRel);
        ActiveCall(self.clone())
    }

    fn idle_since(&self) -> Option<tokio::time::Instant> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(*self.idle_since.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// An open call of a connection ([`Activity::enter`]).
#[derive(Debug)]
pub struct ActiveCall(Arc<Activity>);

impl Drop for ActiveCall {
    fn drop(&mut self) {
        let a = &self.0;
        // The time first: a reader that sees 0 open calls reads a fresh idle start.
        *a.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = tokio::time::Instant::now();
        if a.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            a.reader.wake();
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        match self {
            Conn::Plain(s) => ConnInfo {
                tcp: s.connect_info(),
                peer: None,
                activity: None,
            },
            Conn::Tls(s, peer) => ConnInfo {
                tcp: s.get_ref().0.connect_info(),
                peer: peer.clone(),
                activity: None,
            },
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(s) => s.is_write_vectored(),
            Conn::Tls(s, _) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Connections of a listener shared by the startup server and the full server, with TLS
/// terminated when `tls` is set: each accepted connection's handshake runs in its own task
/// (under the handshake deadline) and the connection is yielded once it is done.
pub struct Incoming {
    listener: Arc<tokio::net::TcpListener>,
    tls: Option<Arc<TlsState>>,
    pending: tokio::task::JoinSet<Option<Conn>>,
    limit: Arc<ConnLimit>,
}

/// The cap on open connections of a port (`--max-connections`): past it a new connection is
/// accepted and closed at once (left in the backlog it would only time out), and that is
/// logged, at most once a second.
#[derive(Debug)]
pub struct ConnLimit {
    open: std::sync::atomic::AtomicUsize,
    max: usize,
    /// A connection with no open call for this long is closed (`--idle-timeout-ms`).
    idle: Option<Duration>,
    refused: std::sync::atomic::AtomicU64,
    last_log_sec: std::sync::atomic::AtomicU64,
}

impl ConnLimit {
    pub fn new(max: usize) -> Arc<ConnLimit> {
        Self::with_idle_timeout(max, None)
    }

    /// At most `max` connections, each closed once it has had no open call for `idle`.
    pub fn with_idle_timeout(max: usize, idle: Option<Duration>) -> Arc<ConnLimit> {
        Arc::new(ConnLimit {
            open: std::sync::atomic::AtomicUsize::new(0),
            max: max.max(1),
            idle,
            refused: std::sync::atomic::AtomicU64::new(0),
            last_log_sec: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn take(self: &Arc<Self>) -> Option<ConnSlot> {
        let n = self.open.fetch_add(1, Ordering::AcqRel);
        if n < self.max {
            return Some(ConnSlot(self.clone()));
        }
        self.open.fetch_sub(1, Ordering::AcqRel);
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if self.last_log_sec.swap(now, Ordering::Relaxed) != now {
            tracing::warn!(
                open = n,
                max = self.max,
                refused_total = refused,
                "connection refused: the open-connection cap is reached (--max-connections)"
            );
        }
        None
    }
}

/// One open connection's place under the cap; given back when the connection is dropped.
#[derive(Debug)]
pub struct ConnSlot(Arc<ConnLimit>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection counted under its port's cap.
#[allow(missing_debug_implementations)] // the TLS stream has no Debug
pub struct Counted {
    conn: Conn,
    _slot: ConnSlot,
    idle: Option<Idle>,
}

/// The idle timeout of a connection: its open calls and a timer.
struct Idle {
    activity: Arc<Activity>,
    timeout: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Counted {
    fn new(conn: Conn, slot: ConnSlot) -> Counted {
        let idle = slot.0.idle.map(|timeout| Idle {
            activity: Activity::new(),
            timeout,
            timer: Box::pin(tokio::time::sleep(timeout)),
        });
        Counted {
            conn,
            _slot: slot,
            idle,
        }
    }
}

impl Connected for Counted {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        let mut info = self.conn.connect_info();
        info.activity = self.idle.as_ref().map(|i| i.activity.clone());
        info
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if let Some(idle) = &mut this.idle {
            idle.activity.reader.register(cx.waker());
            if let Some(since) = idle.activity.idle_since() {
                let deadline = since + idle.timeout;
                if idle.timer.deadline() != deadline {
                    idle.timer.as_mut().reset(deadline);
                }
                if idle.timer.as_mut().poll(cx).is_ready() {
                    tracing::debug!(
                        peer = ?this.conn.connect_info().tcp.remote_addr,
                        ms = idle.timeout.as_millis() as u64,
                        "connection closed: idle past --idle-timeout-ms"
                    );
                    // End of input: the HTTP/2 server closes the connection.
                    return Poll::Ready(Ok(()));
                }
            }
        }
        Pin::new(&mut this.conn).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().conn).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().conn).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.conn.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_shutdown(cx)
    }
}

impl Incoming {
    pub fn new(
        listener: Arc<tokio::net::TcpListener>,
        tls: Option<Arc<TlsState>>,
        limit: Arc<ConnLimit>,
    ) -> Self {
        Incoming {
            listener,
            tls,
            pending: tokio::task::JoinSet::new(),
            limit,
        }
    }
}

impl tokio_stream::Stream for Incoming {
    type Item = std::io::Result<Counted>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        // Accept while connections wait (and handshakes in progress are under the cap).
        while this.pending.len() < MAX_PENDING_HANDSHAKES {
            match this.listener.poll_accept(cx) {
                Poll::Ready(Ok((stream, _))) => {
                    // Small replies must not wait for Nagle's algorithm.
                    let _ = stream.set_nodelay(true);
                    match &this.tls {
                        None => match this.limit.take() {
                            Some(slot) => {
                                return Poll::Ready(Some(Ok(Counted::new(
                                    Conn::Plain(stream),
                                    slot,
                                ))))
                            }
                            // Over the cap: closed at once (dropped).
                            None => continue,
                        },
                        Some(tls) => {
                            this.pending.spawn(TlsState::handshake(tls.clone(), stream));
                        }
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                Poll::Pending => break,
            }
        }
        loop {
            match this.pending.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Some(conn)))) => match this.limit.take() {
                    Some(slot) => return Poll::Ready(Some(Ok(Counted::new(conn, slot)))),
                    None => continue,
                },
                // A failed or timed-out handshake (logged), or a cancelled task.
                Poll::Ready(Some(_)) => continue,
                // Nothing in progress (the listener's waker is registered) or all in progress.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// TLS options of the `knhk` client commands (for an `https://` `--server`).
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// PEM CA bundle the server's certificate must chain to (default: the system's roots).
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain, for a server that asks for one (mTLS).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// Name to verify the server's certificate against (default: the host of `--server`).
    pub server_name: Option<String>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A PEM file a TLS client reads, with the flag or variable that named it (errors name both).
pub type NamedPem<'a> = (&'a str, &'a Path);

/// The TLS of a client connection the server or the CLI makes (`knhk --server https://`, the
/// OTLP trace and log exporters): the CA that signs the server's certificate (`None`: the
/// system's roots) and a client certificate with its key (mutual TLS). The files are read
/// now; an error names the flag or variable and the file.
pub fn client_tls_config(
    ca: Option<NamedPem<'_>>,
    identity: Option<(NamedPem<'_>, NamedPem<'_>)>,
) -> Result<tonic::transport::ClientTlsConfig, String> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let read = |(name, path): NamedPem<'_>| {
        std::fs::read(path).map_err(|e| format!("{name}: cannot read {}: {e}", path.display()))
    };
    let tls = match ca {
        Some(ca) => ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)?)),
        None => ClientTlsConfig::new().with_native_roots(),
    };
    Ok(match identity {
        Some((cert, key)) => tls.identity(Identity::from_pem(read(cert)?, read(key)?)),
        None => tls,
    })
}

impl ClientTls {
    fn any(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some() || self.server_name.is_some()
    }

    /// A channel to `server`: TLS for `https://`, plaintext for `http://`.
    pub async fn channel(&self, server: &str) -> Result<tonic::transport::Channel, BoxError> {
        use tonic::transport::Endpoint;
        install_crypto_provider();
        let https = server
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
        if self.any() && !https {
            return Err(format!(
                "TLS options need an https:// server address (--server is {server})"
            )
            .into());
        }
        let mut ep = Endpoint::from_shared(server.to_string())?;
        if https {
            let identity = match (&self.cert, &self.key) {
                (Some(c), Some(k)) => Some((
                    ("--tls-client-cert", c.as_path()),
                    ("--tls-client-key", k.as_path()),
                )),
                (None, None) => None,
                _ => return Err("--tls-client-cert and --tls-client-key go together".into()),
            };
            let mut t = client_tls_config(self.ca.as_deref().map(|ca| ("--tls-ca", ca)), identity)?;
            if let Some(n) = &self.server_name {
                t = t.domain_name(n.clone());
            }
            ep = ep.tls_config(t)?;
        }
        Ok(ep.connect().await?)
    }
}
