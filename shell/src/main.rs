//! `knhk`: the knhk workflow server and its command-line tools.
//!
//! ```text
//! knhk serve                      # gRPC on 127.0.0.1:50051 (flags or KNHK_* variables)
//! knhk check FILE...              # import and verify models
//! knhk compile FILE               # show the compiled net
//! knhk replay MODEL LOG           # replay an XES log on a model
//! knhk register FILE | create WF | fire CASE TASK | watch | export ...   # client commands
//! knhk serve --tls-cert C --tls-key K [--tls-client-ca CA [--tls-crl CRL]...]   # TLS, mTLS
//! knhk --server https://HOST:50051 --tls-ca CA [--tls-client-cert C --tls-client-key K] workflows
//! knhk serve --auth-jwks-file JWKS --auth-issuer I --auth-audience A   # bearer JWTs (docs/security.md)
//! knhk --token-file TOKEN --namespace NS cases                         # a client with a token
//! ```

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use knhk_shell::admin::ObserveConfig;
use knhk_shell::auth::{AuthConfig, AuthState, RateConfig};
use knhk_shell::client::{self, ClientCommand};
use knhk_shell::engine::{default_workers, EngineConfig};
use knhk_shell::journal::{Durability, JournalConfig};
use knhk_shell::server::{self, ServerConfig};
use knhk_shell::telemetry::{self, LogFormat};
use knhk_shell::tls::{ClientAuth, TlsConfig};

#[derive(Debug, Parser)]
#[command(
    name = "knhk",
    version,
    about = "knhk workflow kernel: server and tools"
)]
struct Cli {
    /// Server the client commands talk to.
    #[arg(
        long,
        env = "KNHK_SERVER",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    server: String,
    /// Client commands, https:// server: PEM CA bundle its certificate must chain to
    /// (default: the system's roots).
    #[arg(long, env = "KNHK_TLS_CA", global = true, value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// Client commands: PEM certificate chain to present to a server that asks for one (mTLS).
    #[arg(
        long,
        env = "KNHK_TLS_CLIENT_CERT",
        global = true,
        requires = "tls_client_key",
        value_name = "PEM"
    )]
    tls_client_cert: Option<PathBuf>,
    /// Client commands: PEM private key of --tls-client-cert.
    #[arg(
        long,
        env = "KNHK_TLS_CLIENT_KEY",
        global = true,
        requires = "tls_client_cert",
        value_name = "PEM"
    )]
    tls_client_key: Option<PathBuf>,
    /// Client commands: name the server's certificate must carry (default: the host of --server).
    #[arg(long, env = "KNHK_TLS_SERVER_NAME", global = true)]
    tls_server_name: Option<String>,
    /// Client commands: file holding a bearer JWT, sent as `authorization: Bearer <JWT>`
    /// (docs/security.md).
    #[arg(long, env = "KNHK_TOKEN_FILE", global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Client commands: the namespace to act in, sent as `knhk-namespace` (default: the
    /// server's `default`).
    #[arg(long, env = "KNHK_NAMESPACE", global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gRPC server until SIGINT/SIGTERM.
    Serve(Box<ServeArgs>),
    /// Import and verify model files; exit 0 when all are accepted.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Accept predicates outside the compiled XPath subset, as `RegisterWorkflow` with
        /// `client_predicates` does: the check lists the flows whose branch bits the client
        /// gives.
        #[arg(long)]
        client_predicates: bool,
        /// Refuse a model whose soundness exploration hits the state cap (not decided).
        #[arg(long)]
        refuse_undecided: bool,
        /// As `RegisterWorkflow` with `manual_silent_tasks`: tasks without a decomposition
        /// are ordinary tasks, and no task is listed as run by the server.
        #[arg(long)]
        manual_silent_tasks: bool,
        /// As `RegisterWorkflow` with `subnet_cases`: every composite task runs its
        /// decomposition as a sub-net case instead of being flattened.
        #[arg(long)]
        subnet_cases: bool,
    },
    /// Show the compiled kernel net of a model.
    Compile { file: PathBuf },
    /// Replay an XES log on a model; exit 0 when every trace fits.
    Replay { model: PathBuf, log: PathBuf },
    /// Print the audit log (one JSON record a line) and verify it (CRCs, order, hash chain);
    /// exit 0 when it verifies, 1 when not, 2 when it cannot be read.
    Audit {
        /// The audit directory (`knhk serve --audit-dir`).
        #[arg(default_value = "./knhk-data/audit")]
        dir: PathBuf,
        /// Verify only: print no records.
        #[arg(long)]
        quiet: bool,
    },
    #[command(flatten)]
    Client(ClientCommand),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address of the gRPC server.
    #[arg(long, env = "KNHK_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    grpc_addr: SocketAddr,
    /// Cluster mode (docs/cluster.md): NATS server URLs, comma-separated, whose JetStream
    /// holds the partitions' logs. Requires --etcd, --node-id and --advertise.
    #[arg(long, env = "KNHK_NATS", value_delimiter = ',', requires_all = ["etcd", "node_id", "advertise"])]
    nats: Vec<String>,
    /// Cluster mode: etcd endpoints, comma-separated (leases and partition ownership).
    #[arg(long, env = "KNHK_ETCD", value_delimiter = ',', requires = "nats")]
    etcd: Vec<String>,
    /// Cluster mode: this node's id, unique in the cluster.
    #[arg(long, env = "KNHK_NODE_ID", requires = "nats")]
    node_id: Option<String>,
    /// Cluster mode: the gRPC address (host:port) other nodes and clients reach this node at.
    #[arg(long, env = "KNHK_ADVERTISE", requires = "nats")]
    advertise: Option<String>,
    /// Cluster mode: partitions of the cluster, fixed when it is created (a node started
    /// with another count refuses to start).
    #[arg(long, env = "KNHK_PARTITIONS", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
    partitions: u16,
    /// Cluster mode: the cluster's name (prefix of its etcd keys, subjects and streams).
    #[arg(long, env = "KNHK_CLUSTER_NAME", default_value = "knhk")]
    cluster_name: String,
    /// Cluster mode: the ownership lease's time-to-live, in seconds (a crashed node's
    /// partitions move after about this long).
    #[arg(long, env = "KNHK_LEASE_TTL_S", default_value_t = 5)]
    lease_ttl_s: u64,
    /// Cluster mode: replicas of each JetStream stream (at most the number of NATS servers).
    #[arg(long, env = "KNHK_STREAM_REPLICAS", default_value_t = 3)]
    stream_replicas: usize,
    /// Kernel worker threads, each pinned to a core and owning a shard of the cases
    /// (default: one per core but one, at least one).
    #[arg(long, env = "KNHK_WORKERS")]
    workers: Option<usize>,
    /// Case slots in all (divided among the workers); the oldest finished cases are evicted
    /// when they are all taken.
    #[arg(long, env = "KNHK_CASE_CAPACITY", default_value_t = 1 << 16)]
    case_capacity: usize,
    /// HTTP/2 concurrent streams per connection.
    #[arg(long, env = "KNHK_MAX_CONCURRENT_STREAMS", default_value_t = 1024)]
    max_concurrent_streams: u32,
    /// Open connections on the gRPC port, at most: more are closed at once (and logged, at
    /// most once a second).
    #[arg(long, env = "KNHK_MAX_CONNECTIONS", default_value_t = 4096)]
    max_connections: usize,
    /// Milliseconds a call's handler may take before it answers (a unary call's answer, a
    /// stream's opening); past it DEADLINE_EXCEEDED. 0: no limit.
    #[arg(long, env = "KNHK_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    request_timeout_ms: u64,
    /// Milliseconds a gRPC connection may stay with no open call (an open stream counts)
    /// before it is closed. 0: never.
    #[arg(long, env = "KNHK_IDLE_TIMEOUT_MS", default_value_t = 300_000)]
    idle_timeout_ms: u64,
    /// Workflows a namespace may register; more get RESOURCE_EXHAUSTED. 0: no limit (the
    /// server's 4096 in all).
    #[arg(long, env = "KNHK_MAX_WORKFLOWS_PER_NAMESPACE", default_value_t = 1024)]
    max_workflows_per_namespace: usize,
    /// Unfinished (running or deadlocked) cases a namespace may have; more creations get
    /// RESOURCE_EXHAUSTED. 0: no limit (the case capacity).
    #[arg(long, env = "KNHK_MAX_LIVE_CASES_PER_NAMESPACE", default_value_t = 0)]
    max_live_cases_per_namespace: u64,
    /// Open WatchCase streams, at most: more get RESOURCE_EXHAUSTED.
    #[arg(long, env = "KNHK_MAX_WATCHERS", default_value_t = 1024)]
    max_watchers: usize,
    /// Largest request message of every RPC but RegisterWorkflow, in bytes (refused with
    /// OUT_OF_RANGE from its length prefix, before it is read).
    #[arg(long, env = "KNHK_MAX_MESSAGE_BYTES", default_value_t = 4 << 20)]
    max_message_bytes: usize,
    /// Bytes of partly received request messages the server may hold over all calls (a
    /// message counts until its last byte arrives); a call that would pass it gets
    /// RESOURCE_EXHAUSTED. 0: no limit.
    #[arg(long, env = "KNHK_MAX_REQUEST_BYTES_IN_FLIGHT", default_value_t = knhk_shell::server::DEFAULT_REQUEST_BYTES_IN_FLIGHT)]
    max_request_bytes_in_flight: u64,
    /// Largest RegisterWorkflow request (the model), in bytes; at most 64 MiB.
    #[arg(long, env = "KNHK_MAX_MODEL_BYTES", default_value_t = 64 << 20)]
    max_model_bytes: usize,
    /// Threads of the network (tokio) side (default: one per core).
    #[arg(long, env = "KNHK_IO_THREADS")]
    io_threads: Option<usize>,
    /// Do not pin workers to cores.
    #[arg(long, env = "KNHK_NO_PIN")]
    no_pin: bool,
    /// Events kept per case for XES export (older ones are dropped and counted: memory stays
    /// bounded by case capacity × this × 16 bytes).
    #[arg(long, env = "KNHK_HISTORY_LIMIT", default_value_t = 1 << 12)]
    history_limit: usize,
    /// Watch event batches buffered per worker for slow watchers.
    #[arg(long, env = "KNHK_WATCH_BUFFER", default_value_t = 1024)]
    watch_buffer: usize,
    /// Milliseconds health reports NOT_SERVING before the transport stops, on shutdown.
    #[arg(long, env = "KNHK_DRAIN_GRACE_MS", default_value_t = 500)]
    drain_grace_ms: u64,
    /// Milliseconds in-flight calls and streams get to finish, on shutdown.
    #[arg(long, env = "KNHK_SHUTDOWN_TIMEOUT_MS", default_value_t = 10_000)]
    shutdown_timeout_ms: u64,
    /// Directory of the durable event log (docs/durability.md); replayed at start.
    #[arg(long, env = "KNHK_DATA_DIR", default_value = "./knhk-data")]
    data_dir: PathBuf,
    /// When an event is acknowledged: `sync` (after its log record is fdatasync'ed, the
    /// default), `relaxed` (before the sync; a power loss may lose the last few ms of
    /// acknowledged events), `off` (no log: in memory only, nothing survives a restart).
    #[arg(long, env = "KNHK_DURABILITY", value_enum, default_value_t = DurabilityArg::Sync)]
    durability: DurabilityArg,
    /// Size in MiB past which a log segment is sealed and older segments are compacted.
    #[arg(long, env = "KNHK_SEGMENT_MB", default_value_t = 64)]
    segment_mb: u64,
    /// Where finished cases go before their slots are reused: `sqlite` (an archive file in
    /// the data directory), `postgres` (the PostgreSQL server at `--archive-url`), `off` (the
    /// oldest finished case is evicted, history and all), or `auto` (the default: `sqlite`
    /// unless `--durability off`).
    #[arg(long, env = "KNHK_ARCHIVE", value_enum, default_value_t = ArchiveArg::Auto)]
    archive: ArchiveArg,
    /// The PostgreSQL server of `--archive postgres`: `postgresql://user:password@host:port/dbname`
    /// or `host=… user=… dbname=…` (prefer the environment variable for a password).
    #[arg(long, env = "KNHK_ARCHIVE_URL", hide_env_values = true)]
    archive_url: Option<String>,
    /// Delete archived cases that finished more than this many days ago (checked every
    /// minute; 0: keep them whatever their age).
    #[arg(long, env = "KNHK_ARCHIVE_RETENTION_DAYS", default_value_t = 0)]
    archive_retention_days: u64,
    /// Keep at most this many archived cases, the most recently finished (0: no limit).
    #[arg(long, env = "KNHK_ARCHIVE_RETENTION_CASES", default_value_t = 0)]
    archive_retention_cases: u64,
    /// Append every committed task event, as it happens, to this XES document (an exporter
    /// reading the event log: at least once, resumed after a restart from FILE.position; a
    /// sink that stalls holds log compaction and shows on /health; docs/durability.md).
    #[arg(long, env = "KNHK_EXPORT_XES", value_name = "FILE")]
    export_xes: Option<PathBuf>,
    /// Ship every committed event, as it happens, as an OTLP log record to the collector's
    /// gRPC logs service at URL (`http://host:4317`; an exporter reading the event log: at
    /// least once, resumed from `<data-dir>/export-otlp-logs.position`; docs/durability.md).
    #[arg(long, env = "KNHK_EXPORT_OTLP_LOGS", value_name = "URL")]
    export_otlp_logs: Option<String>,
    /// PEM CA bundle that signs the logs collector's certificate, for an `https://`
    /// --export-otlp-logs (default: the system's roots).
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE",
        requires = "export_otlp_logs",
        value_name = "PEM"
    )]
    export_otlp_logs_ca: Option<PathBuf>,
    /// PEM client certificate presented to the logs collector (mutual TLS); with
    /// --export-otlp-logs-client-key.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE",
        requires_all = ["export_otlp_logs", "export_otlp_logs_client_key"],
        value_name = "PEM"
    )]
    export_otlp_logs_client_cert: Option<PathBuf>,
    /// PEM private key of --export-otlp-logs-client-cert.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY",
        requires = "export_otlp_logs_client_cert",
        value_name = "PEM"
    )]
    export_otlp_logs_client_key: Option<PathBuf>,
    /// Address of the HTTP endpoints (/metrics, /health, /health/live, /health/ready,
    /// /health/startup; docs/operations.md), or `off` for none (and no gRPC metrics).
    #[arg(long, env = "KNHK_HTTP_ADDR", default_value = "127.0.0.1:9090", value_parser = parse_http_addr)]
    http_addr: HttpAddr,
    /// Milliseconds a kernel worker's heartbeat may stand still before liveness fails.
    #[arg(long, env = "KNHK_HEARTBEAT_TIMEOUT_MS", default_value_t = 2_000)]
    heartbeat_timeout_ms: u64,
    /// Milliseconds a connection on the HTTP port may take to send a whole request head
    /// (from connecting, or from its previous response: idle keep-alive connections too);
    /// slower ones are closed (slowloris).
    #[arg(long, env = "KNHK_HTTP_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    http_header_timeout_ms: u64,
    /// Log lines as `text` or `json` (filter: RUST_LOG; traces: OTEL_EXPORTER_OTLP_ENDPOINT).
    #[arg(long, env = "KNHK_LOG_FORMAT", value_enum, default_value_t = LogFormatArg::Text)]
    log_format: LogFormatArg,
    /// PEM certificate chain (leaf first) of the gRPC port: with --tls-key, the port speaks TLS
    /// only (docs/operations.md, "TLS"). Without both, plaintext.
    #[arg(long, env = "KNHK_TLS_CERT", requires = "tls_key", value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "KNHK_TLS_KEY", requires = "tls_cert", value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// PEM bundle of CAs that client certificates must chain to: turns on mutual TLS.
    #[arg(
        long,
        env = "KNHK_TLS_CLIENT_CA",
        requires = "tls_cert",
        value_name = "PEM"
    )]
    tls_client_ca: Option<PathBuf>,
    /// With --tls-client-ca: `required` (a client without a valid certificate is refused at the
    /// handshake) or `optional` (a certificate, if presented, must be valid).
    #[arg(long, env = "KNHK_TLS_CLIENT_AUTH", value_enum, default_value_t = ClientAuthArg::Required)]
    tls_client_auth: ClientAuthArg,
    /// PEM certificate revocation list checked against client certificates (repeatable; the
    /// variable takes a comma-separated list). Needs --tls-client-ca.
    #[arg(
        long = "tls-crl",
        env = "KNHK_TLS_CRL",
        value_delimiter = ',',
        requires = "tls_client_ca",
        value_name = "PEM"
    )]
    tls_crl: Vec<PathBuf>,
    /// Serve the HTTP port (probes, /metrics, /health) over TLS with --tls-cert and --tls-key
    /// (HTTPS only; no client certificates: probes present none).
    #[arg(long, env = "KNHK_HTTP_TLS", requires = "tls_cert")]
    http_tls: bool,
    /// PEM certificate chain of the HTTP port, when it is not --tls-cert: turns on TLS there.
    #[arg(
        long,
        env = "KNHK_HTTP_TLS_CERT",
        requires = "http_tls_key",
        value_name = "PEM"
    )]
    http_tls_cert: Option<PathBuf>,
    /// PEM private key of --http-tls-cert.
    #[arg(
        long,
        env = "KNHK_HTTP_TLS_KEY",
        requires = "http_tls_cert",
        value_name = "PEM"
    )]
    http_tls_key: Option<PathBuf>,
    /// Milliseconds a client has, from the TCP accept, to complete its TLS handshake.
    #[arg(long, env = "KNHK_TLS_HANDSHAKE_TIMEOUT_MS", default_value_t = 10_000)]
    tls_handshake_timeout_ms: u64,
    /// Milliseconds between checks of the TLS files for changes (size or modification time;
    /// a change reloads them); 0: reload on SIGHUP only.
    #[arg(long, env = "KNHK_TLS_RELOAD_INTERVAL_MS", default_value_t = 10_000)]
    tls_reload_interval_ms: u64,
    /// File holding the HS256 secret bearer tokens are signed with (its bytes, trailing
    /// whitespace removed; at least 32). Turns on authentication (docs/security.md).
    #[arg(long, env = "KNHK_AUTH_HS256_SECRET_FILE", value_name = "FILE")]
    auth_hs256_secret_file: Option<PathBuf>,
    /// JWK Set file of the public keys bearer tokens are signed with (RS256/384/512,
    /// PS256/384/512, ES256/384, EdDSA), each pinned by its `alg`. Turns on authentication.
    #[arg(long, env = "KNHK_AUTH_JWKS_FILE", value_name = "FILE")]
    auth_jwks_file: Option<PathBuf>,
    /// The `iss` every bearer token must carry (required with a token key).
    #[arg(long, env = "KNHK_AUTH_ISSUER")]
    auth_issuer: Option<String>,
    /// The `aud` every bearer token must carry (required with a token key).
    #[arg(long, env = "KNHK_AUTH_AUDIENCE")]
    auth_audience: Option<String>,
    /// Seconds of clock skew allowed on a token's `exp` and `nbf`.
    #[arg(long, env = "KNHK_AUTH_LEEWAY_SECS", default_value_t = 30)]
    auth_leeway_secs: u64,
    /// The token claim that holds `namespace:role` permissions.
    #[arg(
        long,
        env = "KNHK_AUTH_PERMISSIONS_CLAIM",
        default_value = "permissions"
    )]
    auth_permissions_claim: String,
    /// File mapping client certificate names (`dns:`, `uri:`, `email:`, `ip:` subject
    /// alternative names) to permissions. Needs --tls-client-ca. Turns on authentication.
    #[arg(
        long,
        env = "KNHK_AUTH_CERT_MAP",
        requires = "tls_client_ca",
        value_name = "FILE"
    )]
    auth_cert_map: Option<PathBuf>,
    /// Milliseconds between checks of the auth files (--auth-*-file, --auth-cert-map) for
    /// changes (a change reloads them; so does SIGHUP); 0: reload on SIGHUP only.
    #[arg(long, env = "KNHK_AUTH_RELOAD_INTERVAL_MS", default_value_t = 10_000)]
    auth_reload_interval_ms: u64,
    /// Calls (unary calls and stream opens) a second each authenticated principal may make;
    /// more get RESOURCE_EXHAUSTED with `knhk-retry-after-ms`. 0: unlimited.
    #[arg(long, env = "KNHK_RATE_CALLS", default_value_t = 2400)]
    rate_calls: u32,
    /// Calls a principal may make at once above the rate (0: one second's worth).
    #[arg(long, env = "KNHK_RATE_CALLS_BURST", default_value_t = 0)]
    rate_calls_burst: u32,
    /// Bulk events (SubmitEvents) a second each authenticated principal may send; a batch
    /// waits up to 1 s for budget, then its events are RESOURCE_EXHAUSTED. 0: unlimited.
    #[arg(long, env = "KNHK_RATE_EVENTS", default_value_t = 0)]
    rate_events: u32,
    /// Bulk events a principal may send at once (0: one second's worth); a larger batch is
    /// refused.
    #[arg(long, env = "KNHK_RATE_EVENTS_BURST", default_value_t = 0)]
    rate_events_burst: u32,
    /// Failed authentications a second one client address may make; past its burst the
    /// address is refused (RESOURCE_EXHAUSTED, before any credential is checked) until it has
    /// room again. 0: unlimited.
    #[arg(long, env = "KNHK_RATE_AUTH_FAILURES", default_value_t = 10)]
    rate_auth_failures: u32,
    /// Failed authentications an address may make at once (0: ten seconds' worth).
    #[arg(long, env = "KNHK_RATE_AUTH_FAILURES_BURST", default_value_t = 0)]
    rate_auth_failures_burst: u32,
    /// The audit log (docs/security.md): `on` records every state-changing call and every
    /// refusal, `off` none, `auto` (the default) is `on` unless `--durability off`.
    #[arg(long, env = "KNHK_AUDIT", value_enum, default_value_t = AuditArg::Auto)]
    audit: AuditArg,
    /// Directory of the audit log (default: `audit` in the data directory).
    #[arg(long, env = "KNHK_AUDIT_DIR", value_name = "DIR")]
    audit_dir: Option<PathBuf>,
    /// Size in MiB past which an audit file is closed and a new one started.
    #[arg(long, env = "KNHK_AUDIT_MAX_MB", default_value_t = 64)]
    audit_max_mb: u64,
    /// Audit files kept, at most (the oldest are removed); 0: all.
    #[arg(long, env = "KNHK_AUDIT_MAX_FILES", default_value_t = 0)]
    audit_max_files: usize,
    /// Serve a non-loopback address without authentication (refused otherwise): anyone who
    /// can reach the ports can do anything.
    #[arg(long, env = "KNHK_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
}

/// `--tls-client-auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ClientAuthArg {
    Required,
    Optional,
}

/// `--durability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DurabilityArg {
    Sync,
    Relaxed,
    Off,
}

/// `--audit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AuditArg {
    Auto,
    On,
    Off,
}

/// `--archive`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ArchiveArg {
    Auto,
    Sqlite,
    Postgres,
    Off,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

/// `--http-addr`: an address, or `off`.
#[derive(Debug, Clone, Copy)]
struct HttpAddr(Option<SocketAddr>);

fn parse_http_addr(s: &str) -> Result<HttpAddr, String> {
    match s.trim() {
        "off" | "" => Ok(HttpAddr(None)),
        a => a
            .parse::<SocketAddr>()
            .map(|a| HttpAddr(Some(a)))
            .map_err(|e| format!("{e} (an address like 0.0.0.0:9090, or off)")),
    }
}

fn main() -> ExitCode {
    // The one crypto provider compiled in (ring), before any TLS is set up.
    knhk_shell::tls::install_crypto_provider();
    let cli = Cli::parse();
    let client_tls = knhk_shell::tls::ClientTls {
        ca: cli.tls_ca.clone(),
        cert: cli.tls_client_cert.clone(),
        key: cli.tls_client_key.clone(),
        server_name: cli.tls_server_name.clone(),
    };
    match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Check {
            files,
            client_predicates,
            refuse_undecided,
            manual_silent_tasks,
            subnet_cases,
        } => code(knhk_shell::cli::check_with(
            &files,
            &knhk_import::Options {
                external_predicates: client_predicates,
                refuse_undecided,
                empty_tasks_silent: !manual_silent_tasks,
                subnet_cases: if subnet_cases {
                    knhk_import::SubnetCases::Always
                } else {
                    knhk_import::SubnetCases::Auto
                },
                ..knhk_import::Options::default()
            },
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        )),
        Command::Compile { file } => code(knhk_shell::cli::compile(
            &file,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        )),
        Command::Replay { model, log } => code(knhk_shell::cli::replay(
            &model,
            &log,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        )),
        Command::Audit { dir, quiet } => code(knhk_shell::audit::run_cli(
            &dir,
            quiet,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        )),
        Command::Client(c) => {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("knhk: cannot start the runtime: {e}");
                    return ExitCode::from(2);
                }
            };
            let call_auth = client::CallAuth {
                token_file: cli.token_file.clone(),
                namespace: cli.namespace.clone(),
            };
            match rt.block_on(client::run(&cli.server, &client_tls, &call_auth, c)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // The causes too: a TLS refusal is otherwise only "transport error".
                    let mut why = String::new();
                    let mut src = std::error::Error::source(e.as_ref());
                    while let Some(s) = src {
                        why.push_str(&format!(": {s}"));
                        src = s.source();
                    }
                    match e.downcast_ref::<tonic::Status>() {
                        Some(s) => eprintln!("knhk: {:?}: {}{why}", s.code(), s.message()),
                        None => eprintln!("knhk: {e}{why}"),
                    }
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn code(c: i32) -> ExitCode {
    ExitCode::from(u8::try_from(c).unwrap_or(2))
}

fn serve(args: ServeArgs) -> ExitCode {
    // Every connection, segment and probe takes a descriptor: the common soft limit of 1024
    // let a few hundred idle sockets starve the probes. Raise it to the hard limit (logged
    // once tracing is up).
    let open_files = rlimit::increase_nofile_limit(u64::MAX);
    let auth_cfg = AuthConfig {
        hs256_secret_file: args.auth_hs256_secret_file.clone(),
        jwks_file: args.auth_jwks_file.clone(),
        issuer: args.auth_issuer.clone(),
        audience: args.auth_audience.clone(),
        leeway_secs: args.auth_leeway_secs,
        permissions_claim: args.auth_permissions_claim.clone(),
        cert_map: args.auth_cert_map.clone(),
        rates: RateConfig {
            calls_per_second: args.rate_calls,
            calls_burst: args.rate_calls_burst,
            events_per_second: args.rate_events,
            events_burst: args.rate_events_burst,
            auth_failures_per_second: args.rate_auth_failures,
            auth_failures_burst: args.rate_auth_failures_burst,
        },
        reload_interval: (args.auth_reload_interval_ms > 0)
            .then(|| Duration::from_millis(args.auth_reload_interval_ms)),
    };
    // Safe defaults: a non-loopback bind without authentication is refused, before anything
    // is read or bound.
    let bind_warnings = match knhk_shell::auth::check_bind(
        args.grpc_addr,
        args.http_addr.0,
        auth_cfg.enabled(),
        args.insecure_no_auth,
    ) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("knhk serve: {e}");
            return ExitCode::from(2);
        }
    };
    let auth = match AuthState::load(&auth_cfg) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("knhk serve: {e}");
            return ExitCode::from(2);
        }
    };
    let observe = ObserveConfig {
        auth: auth.clone(),
        http_addr: args.http_addr.0,
        heartbeat_timeout: Duration::from_millis(args.heartbeat_timeout_ms.max(1)),
        header_read_timeout: Duration::from_millis(args.http_header_timeout_ms.max(1)),
        tls: match (&args.http_tls_cert, &args.http_tls_key) {
            (Some(c), Some(k)) => Some((c.clone(), k.clone())),
            _ if args.http_tls => args.tls_cert.clone().zip(args.tls_key.clone()),
            _ => None,
        }
        .map(|(cert, key)| TlsConfig {
            handshake_timeout: Duration::from_millis(args.tls_handshake_timeout_ms.max(1)),
            reload_interval: (args.tls_reload_interval_ms > 0)
                .then(|| Duration::from_millis(args.tls_reload_interval_ms)),
            ..TlsConfig::new(cert, key)
        }),
        ..ObserveConfig::default()
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut cfg = ServerConfig {
        engine: EngineConfig {
            workers: args.workers.unwrap_or_else(default_workers).max(1),
            case_capacity: args.case_capacity.max(1),
            pin: !args.no_pin,
            history_limit: args.history_limit.max(1),
            watch_buffer: args.watch_buffer.max(16),
            // A single node owns partition 0 (docs/api.md, "Cases and ids").
            partition: 0,
            archive: None,
            retention: knhk_engine::archive::Retention {
                max_age_secs: (args.archive_retention_days > 0)
                    .then(|| args.archive_retention_days.saturating_mul(86_400)),
                max_cases: (args.archive_retention_cases > 0)
                    .then_some(args.archive_retention_cases),
            },
        },
        max_concurrent_streams: args.max_concurrent_streams.max(1),
        max_connections: args.max_connections.max(1),
        max_watchers: args.max_watchers.max(1),
        request_timeout: (args.request_timeout_ms > 0)
            .then(|| Duration::from_millis(args.request_timeout_ms)),
        idle_timeout: (args.idle_timeout_ms > 0)
            .then(|| Duration::from_millis(args.idle_timeout_ms)),
        namespace_limits: knhk_shell::grpc::service::NamespaceLimits {
            workflows: args.max_workflows_per_namespace,
            live_cases: args.max_live_cases_per_namespace,
        },
        max_message_bytes: args.max_message_bytes.clamp(1024, 64 << 20),
        max_request_bytes_in_flight: args.max_request_bytes_in_flight,
        max_model_bytes: args.max_model_bytes.clamp(1024, 64 << 20),
        export: Default::default(),
        drain_grace: Duration::from_millis(args.drain_grace_ms),
        shutdown_timeout: Duration::from_millis(args.shutdown_timeout_ms),
        tls: args
            .tls_cert
            .clone()
            .zip(args.tls_key.clone())
            .map(|(cert, key)| TlsConfig {
                cert,
                key,
                client_ca: args.tls_client_ca.clone(),
                client_auth: match args.tls_client_auth {
                    ClientAuthArg::Required => ClientAuth::Required,
                    ClientAuthArg::Optional => ClientAuth::Optional,
                },
                crls: args.tls_crl.clone(),
                handshake_timeout: Duration::from_millis(args.tls_handshake_timeout_ms.max(1)),
                reload_interval: (args.tls_reload_interval_ms > 0)
                    .then(|| Duration::from_millis(args.tls_reload_interval_ms)),
            }),
        auth,
        audit: match (args.audit, args.durability) {
            (AuditArg::Off, _) | (AuditArg::Auto, DurabilityArg::Off) => None,
            _ => Some(knhk_shell::audit::AuditConfig {
                dir: args
                    .audit_dir
                    .clone()
                    .unwrap_or_else(|| args.data_dir.join("audit")),
                max_file_bytes: args.audit_max_mb.max(1) << 20,
                max_files: args.audit_max_files,
            }),
        },
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.io_threads.unwrap_or(cores).max(1))
        .thread_name("knhk-io")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("knhk: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    if (args.export_xes.is_some() || args.export_otlp_logs.is_some())
        && args.durability == DurabilityArg::Off
    {
        eprintln!(
            "knhk serve: --export-xes and --export-otlp-logs need the event log (exporters read \
             committed events from it): drop --durability off"
        );
        return ExitCode::from(2);
    }
    cfg.export.xes_file = args.export_xes.clone();
    cfg.export.otlp_logs = args.export_otlp_logs.clone();
    cfg.export.otlp_logs_tls = knhk_shell::exporter::OtlpTls {
        ca: args.export_otlp_logs_ca.clone(),
        client_cert: args.export_otlp_logs_client_cert.clone(),
        client_key: args.export_otlp_logs_client_key.clone(),
    };
    let journal = match args.durability {
        DurabilityArg::Off => None,
        mode => Some(JournalConfig {
            dir: args.data_dir.clone(),
            durability: if mode == DurabilityArg::Relaxed {
                Durability::Relaxed
            } else {
                Durability::Sync
            },
            segment_bytes: args.segment_mb.max(1) << 20,
        }),
    };
    if !args.nats.is_empty() {
        // What cluster mode does not do yet is refused, not ignored (docs/cluster.md).
        let mut not_built = Vec::new();
        if matches!(args.archive, ArchiveArg::Sqlite) {
            // A file on one node: a partition that moves would leave its history behind.
            not_built.push(
                "--archive sqlite (a node's own file; the cluster's archive is shared: \
                 --archive postgres)",
            );
        }
        if args.max_live_cases_per_namespace != 0 {
            not_built.push("--max-live-cases-per-namespace (a cluster-wide count of cases)");
        }
        if args.export_xes.is_some() || args.export_otlp_logs.is_some() {
            not_built
                .push("--export-xes or --export-otlp-logs (exporters read the embedded event log)");
        }
        if !not_built.is_empty() {
            eprintln!(
                "knhk serve: cluster mode does not have {} yet (docs/cluster.md): start without \
                 them",
                not_built.join(", ")
            );
            return ExitCode::from(2);
        }
    }
    let archive: Result<Option<std::sync::Arc<dyn knhk_engine::archive::CaseArchive>>, String> =
        match (args.archive, &args.archive_url) {
            (ArchiveArg::Auto | ArchiveArg::Sqlite | ArchiveArg::Off, Some(_)) => Err(format!(
                "--archive-url (or KNHK_ARCHIVE_URL) is set but --archive is {}: it is for \
                 --archive postgres",
                args.archive
                    .to_possible_value()
                    .map_or_else(String::new, |v| v.get_name().to_string())
            )),
            (ArchiveArg::Off, None) => Ok(None),
            (ArchiveArg::Auto, _) if journal.is_none() || !args.nats.is_empty() => Ok(None),
            (ArchiveArg::Auto | ArchiveArg::Sqlite, _) => {
                knhk_archive::SqliteArchive::open_in(&args.data_dir)
                    .map(|a| Some(std::sync::Arc::new(a) as _))
            }
            (ArchiveArg::Postgres, Some(url)) => {
                knhk_archive::PgArchive::connect(url).map(|a| Some(std::sync::Arc::new(a) as _))
            }
            (ArchiveArg::Postgres, None) => {
                Err("--archive postgres needs the server: --archive-url or KNHK_ARCHIVE_URL".into())
            }
        };
    match archive {
        Ok(a) => cfg.engine.archive = a,
        Err(e) => {
            eprintln!("knhk serve: {e}");
            return ExitCode::from(1);
        }
    }
    let format = match args.log_format {
        LogFormatArg::Json => LogFormat::Json,
        LogFormatArg::Text => LogFormat::Text,
    };
    // Inside the runtime: the OTLP exporter's tonic channel is created here.
    let telemetry = match rt.block_on(async { telemetry::init(format) }) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("knhk serve: telemetry: {e}");
            return ExitCode::from(2);
        }
    };
    for w in &bind_warnings {
        tracing::warn!("{w}");
    }
    if cfg.auth.is_some() && cfg.tls.is_none() && !args.grpc_addr.ip().is_loopback() {
        tracing::warn!(
            addr = %args.grpc_addr,
            "bearer tokens travel in plaintext on the gRPC port (no --tls-cert): anyone on the \
             path can read and replay them"
        );
    }
    if cfg.auth.is_none() {
        tracing::warn!("authentication is off: every caller may do everything (docs/security.md)");
    }
    match &open_files {
        Ok(n) => tracing::info!(
            open_files = n,
            "open-file limit (soft) raised to the hard limit"
        ),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    if !args.nats.is_empty() && args.durability != DurabilityArg::Relaxed {
        eprintln!(
            "knhk serve: cluster mode acknowledges once a quorum of the JetStream stream's \
             replicas has committed a frame; it cannot yet verify that the NATS servers fsync \
             before acknowledging (nats-server >= 2.10 with sync_interval: always), so \
             --durability sync is refused: start with --durability relaxed (docs/cluster.md)"
        );
        return ExitCode::from(2);
    }
    let served = if args.nats.is_empty() {
        rt.block_on(server::serve_addr(args.grpc_addr, cfg, journal, observe))
    } else {
        let partitions = usize::from(args.partitions);
        let cluster = knhk_shell::cluster::ClusterConfig {
            nats: args.nats.clone(),
            etcd: args.etcd.clone(),
            node_id: args.node_id.clone().unwrap_or_default(),
            advertise: args.advertise.clone().unwrap_or_default(),
            partitions: args.partitions,
            name: args.cluster_name.clone(),
            lease_ttl: Duration::from_secs(args.lease_ttl_s.max(2)),
            replicas: args.stream_replicas.max(1),
            partition_capacity: args.case_capacity.div_ceil(partitions).max(1),
        };
        rt.block_on(server::serve_cluster(args.grpc_addr, cfg, cluster, observe))
    };
    let code = match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("knhk serve: {e}");
            ExitCode::FAILURE
        }
    };
    // Flush pending spans (bounded: an absent collector cannot hold the exit up for long).
    telemetry.shutdown(Duration::from_secs(3));
    code
}
