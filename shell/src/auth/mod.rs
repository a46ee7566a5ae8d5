//! Authentication and authorization of the gRPC port (and of `/metrics` and `/health` on a
//! non-loopback HTTP port): docs/security.md.
//!
//! - Who: a bearer JWT (`authorization: Bearer <token>`, [`jwt`]) verified against an HS256
//!   secret file or a JWKS file of public keys, each key pinned to its algorithm, with `exp`,
//!   `iss`, `aud` and `sub` required; or the TLS client certificate's subject alternative
//!   names, mapped to permissions by a certificate map file ([`CertMap`]).
//! - What: [`policy::RPC_TABLE`] says what each RPC needs; permissions are `namespace:role`
//!   pairs; the namespace a call acts in is the `knhk-namespace` metadata (default `default`).
//!   The tower layer in [`layer`] decides before any handler runs and hands the handlers a
//!   [`Caller`] (principal and namespace) in the request's extensions.
//! - Without any of `--auth-*` configured nothing is checked (every call is allowed in the
//!   namespace it names); `knhk serve` refuses that on a non-loopback address unless
//!   `--insecure-no-auth` is given ([`check_bind`]).
//!
//! Tokens are never logged, traced or echoed: refusals name what was wrong ("token expired"),
//! the `authorization` header is removed from the request before the handlers see it.

pub mod jwt;
pub mod layer;
pub mod limits;
pub mod policy;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

pub use layer::AuthLayer;
pub use limits::{RateConfig, RateLimits, Throttled};
pub use policy::{Need, Permissions, Role, Scope, DEFAULT_NAMESPACE, NAMESPACE_HEADER, RPC_TABLE};

/// How a principal proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A bearer JWT.
    Token,
    /// A verified TLS client certificate.
    Certificate,
}

impl Via {
    pub fn name(self) -> &'static str {
        match self {
            Via::Token => "token",
            Via::Certificate => "certificate",
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`, or the certificate name that matched the map (`dns:...`, `uri:...`).
    pub subject: String,
    pub via: Via,
    pub permissions: Permissions,
    /// The token's `exp` (seconds since the epoch).
    pub expires_unix: Option<u64>,
}

/// The caller's `authorization` header, moved by the auth layer out of the headers the handlers
/// see (so that nothing logs it) into the request's extensions, for one use: a cluster node
/// that forwards the call to a partition's owner acts for the caller with it.
#[derive(Clone)]
pub struct ForwardCredential(pub http::HeaderValue);

impl std::fmt::Debug for ForwardCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ForwardCredential(<redacted>)")
    }
}

/// Who is calling and in which namespace: in every request's extensions once the auth layer
/// let it through. `principal` is `None` when no authentication is configured (or for an
/// open method).
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Option<Arc<Principal>>,
    pub namespace: String,
    /// The server's auth state, for the principal's bulk event budget.
    pub auth: Option<Arc<AuthState>>,
}

impl Caller {
    /// When a stream opened by this caller must end: its token's `exp` plus the leeway. `None`
    /// without a token (certificates and unauthenticated servers).
    pub fn stream_deadline(&self) -> Option<tokio::time::Instant> {
        let exp = self.principal.as_ref()?.expires_unix?;
        let leeway = self.auth.as_ref().map_or(0, |a| a.config().leeway_secs);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let left = exp.saturating_add(leeway).saturating_sub(now);
        Some(tokio::time::Instant::now() + std::time::Duration::from_secs(left))
    }

    /// Takes `n` bulk events from the principal's budget (`--rate-events`), waiting up to a
    /// second for it. Always Ok without a principal or an event limit.
    pub async fn admit_events(&self, n: usize) -> Result<(), Throttled> {
        match (&self.principal, &self.auth) {
            (Some(p), Some(a)) => a.limits.admit_events(&p.key(), n).await,
            _ => Ok(()),
        }
    }
}

impl Caller {
    /// The caller of a request (the default namespace when the layer did not run).
    pub fn of<T>(request: &tonic::Request<T>) -> Caller {
        request
            .extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or_else(|| Caller {
                principal: None,
                namespace: DEFAULT_NAMESPACE.to_string(),
                auth: None,
            })
    }
}

/// The names a verified client certificate carries (subject alternative names), as
/// `dns:NAME`, `uri:URI`, `email:ADDRESS`, `ip:ADDRESS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerIdentity {
    pub names: Vec<String>,
}

impl PeerIdentity {
    /// The subject alternative names of a DER certificate (one rustls verified). A certificate
    /// that does not parse, or has no names, gives an empty identity.
    pub fn from_der(der: &[u8]) -> PeerIdentity {
        use x509_parser::extensions::GeneralName;
        let mut names = Vec::new();
        if let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) {
            if let Ok(Some(san)) = cert.subject_alternative_name() {
                for n in &san.value.general_names {
                    match n {
                        GeneralName::DNSName(d) => names.push(format!("dns:{d}")),
                        GeneralName::URI(u) => names.push(format!("uri:{u}")),
                        GeneralName::RFC822Name(m) => names.push(format!("email:{m}")),
                        GeneralName::IPAddress(b) => {
                            let ip = match b.len() {
                                4 => <[u8; 4]>::try_from(*b)
                                    .ok()
                                    .map(|a| std::net::IpAddr::from(a).to_string()),
                                16 => <[u8; 16]>::try_from(*b)
                                    .ok()
                                    .map(|a| std::net::IpAddr::from(a).to_string()),
                                _ => None,
                            };
                            if let Some(ip) = ip {
                                names.push(format!("ip:{ip}"));
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        PeerIdentity { names }
    }
}

/// A file of the auth configuration that could not be used: which, and why.
#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {reason}", path.display())]
pub struct AuthFileError {
    pub what: &'static str,
    pub path: PathBuf,
    pub reason: String,
}

impl AuthFileError {
    fn new(what: &'static str, path: &Path, reason: impl Into<String>) -> AuthFileError {
        AuthFileError {
            what,
            path: path.to_path_buf(),
            reason: reason.into(),
        }
    }
}

const CERT_MAP_FILE: &str = "certificate map file";

/// Certificate names → permissions (`--auth-cert-map`). One entry a line:
///
/// ```text
/// # name                           permissions (namespace:role ...)
/// dns:worker-1.example.com         default:operator
/// uri:spiffe://example.com/admin   *:admin
/// ```
///
/// Lines are tried in order; the first whose name the certificate carries gives the
/// principal (its subject is that name). A verified certificate that matches no line is
/// authenticated with no permissions (PERMISSION_DENIED on everything but health).
#[derive(Debug, Clone, Default)]
pub struct CertMap {
    entries: Vec<(String, Permissions)>,
}

impl CertMap {
    /// Parses the file; errors name the file and the line.
    pub fn load(path: &Path) -> Result<CertMap, AuthFileError> {
        let meta = std::fs::metadata(path)
            .map_err(|e| AuthFileError::new(CERT_MAP_FILE, path, format!("cannot read: {e}")))?;
        if meta.len() > 1 << 20 {
            return Err(AuthFileError::new(
                CERT_MAP_FILE,
                path,
                "more than 1 MiB".to_string(),
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuthFileError::new(CERT_MAP_FILE, path, format!("cannot read: {e}")))?;
        CertMap::parse(&text).map_err(|r| AuthFileError::new(CERT_MAP_FILE, path, r))
    }

    /// Parses the text of a map file.
    pub fn parse(text: &str) -> Result<CertMap, String> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let name = words.next().unwrap_or("");
            let kind = name.split_once(':').map(|(k, _)| k);
            if !matches!(kind, Some("dns" | "uri" | "email" | "ip")) || name.len() <= 4 {
                return Err(format!(
                    "line {}: the name must start with dns:, uri:, email: or ip:",
                    i + 1
                ));
            }
            let mut perms = Vec::new();
            for w in words.flat_map(|w| w.split(',')).filter(|w| !w.is_empty()) {
                match policy::Permission::parse(w) {
                    Some(p) => perms.push(p),
                    None => {
                        return Err(format!(
                            "line {}: {w:?} is not namespace:role (roles: reader, operator, \
                             admin; namespace * for all)",
                            i + 1
                        ))
                    }
                }
            }
            if perms.is_empty() {
                return Err(format!("line {}: {name} has no permissions", i + 1));
            }
            entries.push((name.to_string(), Permissions(perms)));
        }
        Ok(CertMap { entries })
    }

    /// The principal of a certificate carrying `id`'s names.
    pub fn principal(&self, id: &PeerIdentity) -> Option<Principal> {
        self.entries
            .iter()
            .find(|(name, _)| id.names.iter().any(|n| n == name))
            .map(|(name, perms)| Principal {
                subject: name.clone(),
                via: Via::Certificate,
                permissions: perms.clone(),
                expires_unix: None,
            })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the map has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The `--auth-*` flags.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// `--auth-hs256-secret-file`.
    pub hs256_secret_file: Option<PathBuf>,
    /// `--auth-jwks-file`.
    pub jwks_file: Option<PathBuf>,
    /// `--auth-issuer`: required with a key.
    pub issuer: Option<String>,
    /// `--auth-audience`: required with a key.
    pub audience: Option<String>,
    /// `--auth-leeway-secs`.
    pub leeway_secs: u64,
    /// `--auth-permissions-claim` (default `permissions`).
    pub permissions_claim: String,
    /// `--auth-cert-map`.
    pub cert_map: Option<PathBuf>,
    /// `--rate-*`: per-principal limits.
    pub rates: RateConfig,
    /// `--auth-reload-interval-ms`: how often the files are checked for changes (`None`: on
    /// SIGHUP only).
    pub reload_interval: Option<std::time::Duration>,
}

impl AuthConfig {
    /// True when some way to authenticate is configured.
    pub fn enabled(&self) -> bool {
        self.hs256_secret_file.is_some() || self.jwks_file.is_some() || self.cert_map.is_some()
    }
}

/// The files of the auth configuration as last loaded: swapped whole on reload.
#[derive(Debug)]
struct Loaded {
    keys: Option<jwt::Keys>,
    cert_map: Option<CertMap>,
}

impl Loaded {
    fn load(cfg: &AuthConfig) -> Result<Loaded, String> {
        let keys = if cfg.hs256_secret_file.is_some() || cfg.jwks_file.is_some() {
            let issuer =
                cfg.issuer.clone().filter(|s| !s.is_empty()).ok_or(
                    "--auth-issuer is required with a token key (the iss tokens must carry)",
                )?;
            let audience = cfg.audience.clone().filter(|s| !s.is_empty()).ok_or(
                "--auth-audience is required with a token key (the aud tokens must carry)",
            )?;
            let settings = jwt::JwtSettings {
                issuer,
                audience,
                leeway_secs: cfg.leeway_secs,
                permissions_claim: if cfg.permissions_claim.is_empty() {
                    "permissions".into()
                } else {
                    cfg.permissions_claim.clone()
                },
            };
            Some(
                jwt::Keys::load(
                    cfg.hs256_secret_file.as_deref(),
                    cfg.jwks_file.as_deref(),
                    settings,
                )
                .map_err(|e| e.to_string())?,
            )
        } else {
            None
        };
        let cert_map = match &cfg.cert_map {
            Some(p) => Some(CertMap::load(p).map_err(|e| e.to_string())?),
            None => None,
        };
        Ok(Loaded { keys, cert_map })
    }
}

/// Tokens verified in the last minute, so that a client sending the same token on every call
/// pays for one signature check a minute, not one a call. Keyed by the whole `authorization`
/// value (tokens up to [`TokenCache::MAX_KEY`] bytes; at most [`TokenCache::MAX_ENTRIES`],
/// emptied when full): an entry lives until the token's `exp` or 60 s, whichever is first, and
/// only for the key generation it was verified with. Only successes are kept.
#[derive(Default)]
struct TokenCache {
    entries: Mutex<std::collections::HashMap<Vec<u8>, CachedToken>>,
}

struct CachedToken {
    principal: Principal,
    until: std::time::Instant,
    generation: u64,
}

impl TokenCache {
    const MAX_KEY: usize = 2048;
    const MAX_ENTRIES: usize = 1024;
    const TTL: std::time::Duration = std::time::Duration::from_secs(60);

    fn get(&self, value: &[u8], generation: u64) -> Option<Principal> {
        if value.len() > Self::MAX_KEY {
            return None;
        }
        let map = self.entries.lock().ok()?;
        let e = map.get(value)?;
        (e.generation == generation && std::time::Instant::now() < e.until)
            .then(|| e.principal.clone())
    }

    fn put(&self, value: &[u8], p: &Principal, generation: u64) {
        if value.len() > Self::MAX_KEY {
            return;
        }
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // Tokens always carry exp (required); without one, nothing is cached.
        let Some(left) = p.expires_unix.and_then(|e| e.checked_sub(now_unix)) else {
            return;
        };
        let ttl = Self::TTL.min(std::time::Duration::from_secs(left));
        if ttl.is_zero() {
            return;
        }
        if let Ok(mut map) = self.entries.lock() {
            if map.len() >= Self::MAX_ENTRIES {
                map.clear();
            }
            map.insert(
                value.to_vec(),
                CachedToken {
                    principal: p.clone(),
                    until: std::time::Instant::now() + ttl,
                    generation,
                },
            );
        }
    }

    fn clear(&self) {
        if let Ok(mut map) = self.entries.lock() {
            map.clear();
        }
    }
}

/// What identifies a file's version: size and modification time.
type Stamp = Option<(u64, SystemTime)>;

fn stamps(cfg: &AuthConfig) -> Vec<Stamp> {
    [&cfg.hs256_secret_file, &cfg.jwks_file, &cfg.cert_map]
        .into_iter()
        .flatten()
        .map(|p| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.len(), m.modified().unwrap_or(UNIX_EPOCH)))
        })
        .collect()
}

/// Loaded authentication: keys and certificate map (reloadable), rate limits, counters.
pub struct AuthState {
    cfg: AuthConfig,
    loaded: ArcSwap<Loaded>,
    /// The file versions last looked at (loaded or refused).
    seen: Mutex<Vec<Stamp>>,
    /// Successful reloads: also the generation of the keys, for the token cache.
    reloads: AtomicU64,
    /// Recently verified tokens.
    cache: TokenCache,
    /// Per-principal rate limits.
    pub limits: RateLimits,
    refused: AtomicU64,
    denied: AtomicU64,
    throttled: AtomicU64,
    /// Second (since the epoch) of the last refusal logged: at most one line a second.
    last_log: AtomicU64,
}

impl std::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthState")
            .field("loaded", &self.loaded.load())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Why a request was not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// UNAUTHENTICATED: no usable credentials.
    Unauthenticated(String),
    /// PERMISSION_DENIED: authenticated, but the role is missing.
    Denied(String),
    /// INVALID_ARGUMENT: the namespace metadata is not a namespace name.
    BadNamespace(String),
    /// RESOURCE_EXHAUSTED: the principal's call budget is spent.
    Throttled(Throttled),
}

impl AuthState {
    /// Loads the files of `cfg`. `None` when no authentication is configured. Errors name
    /// the file or flag.
    pub fn load(cfg: &AuthConfig) -> Result<Option<Arc<AuthState>>, String> {
        if !cfg.enabled() {
            return Ok(None);
        }
        let seen = stamps(cfg);
        let loaded = Loaded::load(cfg)?;
        Ok(Some(Arc::new(AuthState {
            cfg: cfg.clone(),
            loaded: ArcSwap::from_pointee(loaded),
            seen: Mutex::new(seen),
            reloads: AtomicU64::new(0),
            cache: TokenCache::default(),
            limits: RateLimits::new(cfg.rates),
            refused: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            last_log: AtomicU64::new(0),
        })))
    }

    /// Reads the key files and the certificate map again: on success new calls are checked
    /// against them; on failure the previous ones stay and the error (naming the file) is
    /// returned.
    pub fn reload(&self) -> Result<(), String> {
        let before = stamps(&self.cfg);
        if let Ok(mut s) = self.seen.lock() {
            *s = before;
        }
        let loaded = Loaded::load(&self.cfg)?;
        self.loaded.store(Arc::new(loaded));
        self.reloads.fetch_add(1, Ordering::AcqRel);
        self.cache.clear();
        Ok(())
    }

    /// The settings.
    pub fn config(&self) -> &AuthConfig {
        &self.cfg
    }

    /// Successful reloads so far.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Reloads when a file's size or modification time changed since it was last looked at;
    /// `None` when nothing changed.
    pub fn reload_if_changed(&self) -> Option<Result<(), String>> {
        let now = stamps(&self.cfg);
        let changed = self.seen.lock().map(|s| *s != now).unwrap_or(true);
        changed.then(|| self.reload())
    }

    fn reload_logged(&self, trigger: &str, r: Result<(), String>) {
        match r {
            Ok(()) => tracing::info!(
                trigger,
                auth = %self.describe(),
                "auth keys and certificate map reloaded (new calls use them)"
            ),
            Err(e) => tracing::error!(
                trigger,
                "auth reload failed, the previous keys and map stay in use: {e}"
            ),
        }
    }

    /// Reloads on SIGHUP and, every `interval` (when given), when a file changed; runs until
    /// aborted. The SIGHUP handler is installed when this is called (inside a runtime), not
    /// when the future first runs: a SIGHUP right after start cannot end the process.
    pub fn watch(
        self: Arc<Self>,
        interval: Option<std::time::Duration>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let triggers = crate::reload::Triggers::new(interval);
        self.watch_with(triggers)
    }

    async fn watch_with(self: Arc<Self>, mut triggers: crate::reload::Triggers) {
        loop {
            match triggers.next().await {
                crate::reload::Trigger::Hangup => {
                    let me = self.clone();
                    if let Ok(r) = tokio::task::spawn_blocking(move || me.reload()).await {
                        self.reload_logged("SIGHUP", r);
                    }
                }
                crate::reload::Trigger::Poll => {
                    let me = self.clone();
                    if let Ok(Some(r)) =
                        tokio::task::spawn_blocking(move || me.reload_if_changed()).await
                    {
                        self.reload_logged("file change", r);
                    }
                }
            }
        }
    }

    /// One line for the start-up log: what authenticates callers.
    pub fn describe(&self) -> String {
        let loaded = self.loaded.load();
        let mut parts = Vec::new();
        if let Some(k) = &loaded.keys {
            parts.push(format!("bearer tokens ({} keys)", k.len()));
        }
        if let Some(m) = &loaded.cert_map {
            parts.push(format!("client certificates ({} mapped names)", m.len()));
        }
        format!(
            "{}; rate limits {}",
            parts.join(" and "),
            self.limits.describe()
        )
    }

    /// True when bearer tokens are accepted.
    pub fn accepts_tokens(&self) -> bool {
        self.loaded.load().keys.is_some()
    }

    /// Calls refused as unauthenticated so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Calls refused for a missing role so far.
    pub fn denied(&self) -> u64 {
        self.denied.load(Ordering::Relaxed)
    }

    /// Calls and bulk batches refused by a rate limit so far.
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// The principal of a request: its bearer token (`authorization` values) when it has one,
    /// else its verified client certificate's names.
    pub fn authenticate(
        &self,
        authorization: &[&[u8]],
        peer: Option<&PeerIdentity>,
    ) -> Result<Principal, String> {
        // The generation before the keys: an entry verified with keys a reload replaced is
        // never found again.
        let generation = self.reloads.load(Ordering::Acquire);
        let loaded = self.loaded.load();
        match authorization {
            [] => {}
            [one] => {
                if let Some(p) = self.cache.get(one, generation) {
                    return Ok(p);
                }
                let r = bearer(&loaded, one);
                if let Ok(p) = &r {
                    self.cache.put(one, p, generation);
                }
                return r;
            }
            _ => return Err("more than one authorization header".into()),
        }
        if let Some(id) = peer {
            if let Some(map) = &loaded.cert_map {
                return Ok(map.principal(id).unwrap_or_else(|| Principal {
                    subject: id
                        .names
                        .first()
                        .cloned()
                        .unwrap_or_else(|| "certificate without names".into()),
                    via: Via::Certificate,
                    permissions: Permissions::default(),
                    expires_unix: None,
                }));
            }
        }
        Err(match (&loaded.keys, &loaded.cert_map) {
            (Some(_), Some(_)) => {
                "no credentials: send `authorization: Bearer <JWT>` or a client certificate"
            }
            (Some(_), None) => "no credentials: send `authorization: Bearer <JWT>`",
            _ => "no credentials: present a client certificate",
        }
        .into())
    }
}

/// The principal of an `authorization` header value.
fn bearer(loaded: &Loaded, value: &[u8]) -> Result<Principal, String> {
    let Some(keys) = &loaded.keys else {
        return Err(
            "bearer tokens are not accepted here (no token key configured): present a \
             client certificate"
                .into(),
        );
    };
    let value =
        std::str::from_utf8(value).map_err(|_| "authorization header is not ASCII".to_string())?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or("authorization header is not `Bearer <JWT>`")?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("authorization scheme is not Bearer".into());
    }
    let token = token.trim();
    if token.is_empty() {
        return Err("authorization header carries an empty token".into());
    }
    keys.verify(token)
}

impl AuthState {
    /// Decides a call to `path` acting in `namespace` by `who` (`Err` from authentication).
    pub fn authorize(
        &self,
        path: &str,
        namespace: &str,
        who: &Result<Principal, String>,
    ) -> Result<(), Refusal> {
        let need = policy::need(path);
        if need == Some(Need::Open) {
            return Ok(());
        }
        let p = who
            .as_ref()
            .map_err(|e| Refusal::Unauthenticated(e.clone()))?;
        let Some(Need::Role(role, scope)) = need else {
            return Err(Refusal::Denied(
                "this method is not in the server's access table".into(),
            ));
        };
        let held = match scope {
            Scope::Namespace => p.permissions.role_in(namespace),
            Scope::AnyNamespace => p.permissions.any_role(),
        };
        if held.is_some_and(|h| h >= role) {
            return Ok(());
        }
        Err(Refusal::Denied(match scope {
            Scope::Namespace => format!(
                "{} needs role {role} in namespace {namespace}; {} {} holds {}",
                method_name(path),
                p.via.name(),
                p.subject_escaped(),
                held.map_or("none".to_string(), |h| h.to_string())
            ),
            Scope::AnyNamespace => format!(
                "{} needs role {role} in some namespace; {} {} holds none",
                method_name(path),
                p.via.name(),
                p.subject_escaped()
            ),
        }))
    }

    /// Counts a refusal and logs it (at most one line a second; never the token).
    pub fn note_refusal(&self, r: &Refusal, path: &str, peer: Option<SocketAddr>) {
        let (counter, code) = match r {
            Refusal::Unauthenticated(_) => (&self.refused, "UNAUTHENTICATED"),
            Refusal::Denied(_) => (&self.denied, "PERMISSION_DENIED"),
            Refusal::BadNamespace(_) => (&self.denied, "INVALID_ARGUMENT"),
            Refusal::Throttled(_) => (&self.throttled, "RESOURCE_EXHAUSTED"),
        };
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        let sec = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if self.last_log.swap(sec, Ordering::Relaxed) != sec {
            let why = match r {
                Refusal::Unauthenticated(w) | Refusal::Denied(w) | Refusal::BadNamespace(w) => w,
                Refusal::Throttled(t) => &t.message,
            };
            tracing::warn!(
                peer = ?peer,
                rpc = %method_name(path),
                code,
                so_far = n,
                "access refused: {why} (at most one such line a second)"
            );
        }
    }
}

impl Principal {
    /// The key of the principal's rate limits: how it authenticated and its subject.
    pub fn key(&self) -> String {
        format!("{}:{}", self.via.name(), self.subject)
    }

    /// The subject for messages and logs: at most 64 characters, control characters escaped.
    pub fn subject_escaped(&self) -> String {
        let mut s: String = self
            .subject
            .chars()
            .take(64)
            .flat_map(char::escape_debug)
            .collect();
        if self.subject.chars().count() > 64 {
            s.push('…');
        }
        s
    }
}

/// `/pkg.Service/Method` → `pkg.Service/Method`, at most 128 characters, escaped (the path
/// comes from the client).
fn method_name(path: &str) -> String {
    path.trim_start_matches('/')
        .chars()
        .take(128)
        .flat_map(char::escape_debug)
        .collect()
}

/// The start-up rule of `knhk serve`: binding a non-loopback address (gRPC or HTTP) without
/// authentication is refused unless `insecure_no_auth`. The rule follows the configured bind
/// address, never a peer's. `Ok` carries warnings to log.
pub fn check_bind(
    grpc: SocketAddr,
    http: Option<SocketAddr>,
    auth: bool,
    insecure_no_auth: bool,
) -> Result<Vec<String>, String> {
    let exposed: Vec<String> = std::iter::once(("gRPC", grpc))
        .chain(http.map(|h| ("HTTP", h)))
        .filter(|(_, a)| !a.ip().is_loopback())
        .map(|(what, a)| format!("{what} {a}"))
        .collect();
    if exposed.is_empty() || auth {
        return Ok(Vec::new());
    }
    if insecure_no_auth {
        return Ok(vec![format!(
            "--insecure-no-auth: serving {} with NO authentication: anyone who can reach it \
             can register workflows, cancel any case and read every case",
            exposed.join(" and ")
        )]);
    }
    Err(format!(
        "refusing to serve {} without authentication: configure --auth-hs256-secret-file, \
         --auth-jwks-file or --auth-cert-map (docs/security.md), bind 127.0.0.1, or pass \
         --insecure-no-auth to accept the risk",
        exposed.join(" and ")
    ))
}

#[cfg(test)]
#[allow(clippy::expect_used)] // test code: a failed expectation is the test failing
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("addr")
    }

    #[test]
    fn bind_rule_follows_the_configured_address() {
        let lo = addr("127.0.0.1:1");
        let lo6 = addr("[::1]:1");
        let any = addr("0.0.0.0:1");
        assert_eq!(check_bind(lo, Some(lo6), false, false), Ok(vec![]));
        assert_eq!(check_bind(lo, None, false, false), Ok(vec![]));
        let e = check_bind(any, Some(lo), false, false).expect_err("refused");
        assert!(
            e.contains("--insecure-no-auth") && e.contains("gRPC 0.0.0.0:1"),
            "{e}"
        );
        let e = check_bind(lo, Some(addr("10.0.0.1:9")), false, false).expect_err("refused");
        assert!(e.contains("HTTP 10.0.0.1:9"), "{e}");
        assert_eq!(check_bind(any, Some(any), true, false), Ok(vec![]));
        let w = check_bind(any, None, false, true).expect("allowed");
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn token_cache_keeps_successes_per_generation_until_exp() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let p = |exp: Option<u64>| Principal {
            subject: "s".into(),
            via: Via::Token,
            permissions: Permissions::default(),
            expires_unix: exp,
        };
        let c = TokenCache::default();
        c.put(b"Bearer a", &p(Some(now + 3600)), 7);
        assert_eq!(c.get(b"Bearer a", 7), Some(p(Some(now + 3600))));
        assert_eq!(c.get(b"Bearer a", 8), None, "another key generation");
        assert_eq!(c.get(b"Bearer b", 7), None);
        c.put(b"Bearer old", &p(Some(now.saturating_sub(1))), 7);
        assert_eq!(c.get(b"Bearer old", 7), None, "expired: not kept");
        c.put(b"Bearer none", &p(None), 7);
        assert_eq!(c.get(b"Bearer none", 7), None, "no exp: not kept");
        let long = vec![b'x'; TokenCache::MAX_KEY + 1];
        c.put(&long, &p(Some(now + 3600)), 7);
        assert_eq!(c.get(&long, 7), None, "too long to keep");
        c.clear();
        assert_eq!(c.get(b"Bearer a", 7), None);
    }

    #[test]
    fn cert_map_parses_and_matches_in_order() {
        let m = CertMap::parse(
            "# comment\n\ndns:a.test default:operator,ns2:reader\nuri:spiffe://x/y *:admin # all\n",
        )
        .expect("parse");
        assert_eq!(m.len(), 2);
        let id = PeerIdentity {
            names: vec!["uri:spiffe://x/y".into(), "dns:a.test".into()],
        };
        let p = m.principal(&id).expect("mapped");
        assert_eq!(p.subject, "dns:a.test");
        assert_eq!(p.permissions.role_in("default"), Some(Role::Operator));
        assert_eq!(p.permissions.role_in("ns2"), Some(Role::Reader));
        assert!(m
            .principal(&PeerIdentity {
                names: vec!["dns:b.test".into()]
            })
            .is_none());
        for bad in [
            "a.test default:reader",
            "dns:a.test",
            "dns:a.test default:root",
        ] {
            let e = CertMap::parse(bad).expect_err(bad);
            assert!(e.starts_with("line 1:"), "{e}");
        }
    }
}
