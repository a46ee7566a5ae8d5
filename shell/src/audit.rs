//! The audit log (docs/security.md, "Audit log"): who did what, when, from where, with what
//! result. One record for every state-changing call (RegisterWorkflow, CreateCase, the task
//! operations, CancelCase, each SubmitEvents message) and for every call the auth layer
//! refuses (UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED, a bad namespace).
//!
//! Durability: a state-changing call is answered only once its record is on disk
//! (`fdatasync` returned), so no acknowledged change exists without its record. The records
//! have a group commit of their own (a writer thread, one `fdatasync` for everything queued
//! meanwhile); denials are queued without waiting. If the audit log cannot be written, the
//! server refuses state-changing calls (UNAVAILABLE) from then on.
//!
//! On disk, in the audit directory: files `audit-<16 digits>.log` (a new one at every start
//! and when the current one passes `max_file_bytes`; the oldest beyond `max_files` are
//! removed), each `MAGIC` then records
//!
//! ```text
//!  record := len: u32 LE | crc: u32 LE | payload (len bytes, one JSON object)
//!            crc = CRC32C(len bytes ++ payload)
//! ```
//!
//! Each payload carries `seq` (1, 2, 3, ... across files, never reused) and `prev`, the hex
//! SHA-256 of the previous record's payload: a record removed, reordered or edited breaks the
//! chain at that point ([`verify`], `knhk audit`). The chain has no secret key: it shows
//! accidental damage and naive edits, not a rewrite by someone who can write the directory.
//!
//! Never in a record: a token, a secret, request data values.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

/// The first 8 bytes of every audit file.
pub const MAGIC: &[u8; 8] = b"KNHKAUD\x01";
/// Largest record accepted on reading (a longer length field is corruption).
const MAX_RECORD: u32 = 1 << 20;
/// Longest message kept in a record (characters); longer ones are cut.
const MAX_MESSAGE: usize = 256;

/// Where and how the audit log is kept.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The audit directory (created if missing).
    pub dir: PathBuf,
    /// A file is closed and a new one started past this size.
    pub max_file_bytes: u64,
    /// Files kept, at most (the oldest are removed); 0: all.
    pub max_files: usize,
}

impl AuditConfig {
    /// 64 MiB files, all kept.
    pub fn new(dir: impl Into<PathBuf>) -> AuditConfig {
        AuditConfig {
            dir: dir.into(),
            max_file_bytes: 64 << 20,
            max_files: 0,
        }
    }
}

/// One audit record, as stored (JSON) and printed by `knhk audit`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// 1 for the first record ever written in this directory, then +1 each.
    pub seq: u64,
    /// When the record was queued: RFC 3339, UTC.
    pub time: String,
    /// The same, in nanoseconds since the Unix epoch.
    pub time_unix_ns: u64,
    /// The principal: a token's `sub`, or the certificate name that matched the map; absent
    /// when unauthenticated (no authentication configured, or refused before it was known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// How the principal authenticated: `token` or `certificate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// The client's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// The namespace the call acted in (or named).
    pub namespace: String,
    /// The RPC, as its gRPC path (`/knhk.v1.Knhk/CreateCase`).
    pub rpc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The instance a multiple-instance call named (StartInstance, CompleteInstance) or the
    /// count it asked for (StartInstances).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<u32>,
    /// SubmitEvents: events in the message, and how many of them were refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<u64>,
    /// The outcome: a gRPC code name (`OK`, `NOT_FOUND`, `UNAUTHENTICATED`, ...).
    pub code: String,
    /// Why, for a refusal or an error (at most 256 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Hex SHA-256 of the previous record's payload; empty for the first record ever.
    pub prev: String,
}

impl Record {
    /// A record of `rpc` in `namespace` with outcome `code`; the log fills `seq`, the time and
    /// `prev`.
    pub fn new(rpc: &str, namespace: &str, code: tonic::Code) -> Record {
        Record {
            rpc: rpc.to_string(),
            namespace: namespace.to_string(),
            code: code_name(code).to_string(),
            ..Record::default()
        }
    }

    /// A record of `rpc` by `caller` (principal, namespace) from `peer`, outcome OK so far.
    pub fn of_caller(
        rpc: &str,
        caller: &crate::auth::Caller,
        peer: Option<std::net::SocketAddr>,
    ) -> Record {
        let mut r = Record::new(rpc, &caller.namespace, tonic::Code::Ok);
        if let Some(p) = &caller.principal {
            r.principal = Some(cap(&p.subject));
            r.via = Some(p.via.name().to_string());
        }
        r.peer = peer.map(|a| a.to_string());
        r
    }

    /// Sets the message, cut to 256 characters.
    pub fn with_message(mut self, m: &str) -> Record {
        self.message = Some(cap(m));
        self
    }

    /// Sets the outcome from a call's result.
    pub fn outcome<T>(&mut self, r: &Result<T, tonic::Status>) {
        if let Err(s) = r {
            self.code = code_name(s.code()).to_string();
            self.message = Some(cap(s.message()));
        }
    }
}

/// `s` cut to 256 characters (client-given names and messages stay bounded in the log).
pub fn cap(s: &str) -> String {
    let mut c: String = s.chars().take(MAX_MESSAGE).collect();
    if s.chars().nth(MAX_MESSAGE).is_some() {
        c.push('…');
    }
    c
}

/// The name gRPC gives a code (`NOT_FOUND`).
pub fn code_name(c: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match c {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A record queued by [`AuditLog::append_pending`], not yet known to be durable.
#[derive(Debug)]
pub struct Pending(Result<oneshot::Receiver<Result<(), String>>, String>);

impl Pending {
    /// Waits until the record is durable; `Err` says why it cannot be.
    pub async fn durable(self) -> Result<(), String> {
        match self.0 {
            Ok(rx) => rx
                .await
                .unwrap_or_else(|_| Err("the audit log writer stopped".into())),
            Err(e) => Err(e),
        }
    }
}

/// Counters of the audit log.
#[derive(Debug, Default)]
pub struct AuditStats {
    pub records: AtomicU64,
    pub fsyncs: AtomicU64,
    pub bytes: AtomicU64,
}

struct Queue {
    buf: Vec<u8>,
    waiters: Vec<oneshot::Sender<Result<(), String>>>,
    seq: u64,
    prev: String,
    records: u64,
    /// The `seq` of the last record known durable.
    synced: u64,
    /// The writer thread has ended: `synced` moves no more.
    writer_done: bool,
}

struct Shared {
    q: Mutex<Queue>,
    wake: Condvar,
    /// Signalled when `synced` moves (or the log fails).
    synced: Condvar,
    stop: AtomicBool,
    failed: OnceLock<String>,
    stats: AuditStats,
    /// The event log commits with this log ([`knhk_log::CommitPeer`]): its marks start the
    /// syncs of the records queued for its commits.
    grouped: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The audit log: records go in through [`AuditLog::append`] (durable before it returns) or
/// [`AuditLog::note`] (queued); a writer thread writes and syncs them.
pub struct AuditLog {
    cfg: AuditConfig,
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn file_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("audit-{n:016}.log"))
}

/// The audit files of `dir`, by number.
pub fn list_files(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_prefix("audit-")
            .and_then(|s| s.strip_suffix(".log"))
            .filter(|s| s.len() == 16)
            .and_then(|s| s.parse::<u64>().ok())
        {
            v.push((n, e.path()));
        }
    }
    v.sort();
    Ok(v)
}

fn ctx(what: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn hex(d: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(d.len() * 2);
    for b in d {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn chain_hash(payload: &[u8]) -> String {
    hex(&Sha256::digest(payload))
}

fn frame(out: &mut Vec<u8>, payload: &[u8]) {
    let len = (payload.len() as u32).to_le_bytes();
    let mut crc = crc32c::crc32c(&len);
    crc = crc32c::crc32c_append(crc, payload);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Damage found in a file: where, and why.
#[derive(Debug, Clone)]
pub struct Damage {
    pub offset: u64,
    pub reason: String,
}

/// The records of one file's bytes (payload ranges), and the first damage, if any.
fn scan(data: &[u8]) -> (Vec<std::ops::Range<usize>>, Option<Damage>) {
    let mut recs = Vec::new();
    if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
        let d = Damage {
            offset: 0,
            reason: "not an audit file (bad magic)".into(),
        };
        return (recs, Some(d));
    }
    let mut at = MAGIC.len();
    while at < data.len() {
        let damage = |reason: &str| {
            Some(Damage {
                offset: at as u64,
                reason: reason.to_string(),
            })
        };
        if data.len() - at < 8 {
            return (recs, damage("torn record header"));
        }
        let len_b: [u8; 4] = data[at..at + 4].try_into().unwrap_or_default();
        let crc_b: [u8; 4] = data[at + 4..at + 8].try_into().unwrap_or_default();
        let len = u32::from_le_bytes(len_b);
        if len > MAX_RECORD {
            return (recs, damage("record length out of range"));
        }
        let end = at + 8 + len as usize;
        if end > data.len() {
            return (recs, damage("torn record (shorter than its length)"));
        }
        let crc = crc32c::crc32c_append(crc32c::crc32c(&len_b), &data[at + 8..end]);
        if crc != u32::from_le_bytes(crc_b) {
            return (recs, damage("CRC mismatch"));
        }
        recs.push(at + 8..end);
        at = end;
    }
    (recs, None)
}

impl AuditLog {
    /// Opens (creates) the audit directory: finds where the chain stands in the newest file,
    /// cuts a torn tail off it (a crash while writing: those records were never acknowledged)
    /// and starts a new file. Errors name the file.
    pub fn open(cfg: AuditConfig) -> io::Result<Arc<AuditLog>> {
        fs::create_dir_all(&cfg.dir).map_err(|e| ctx("cannot create", &cfg.dir, e))?;
        let files = list_files(&cfg.dir).map_err(|e| ctx("cannot list", &cfg.dir, e))?;
        let mut seq = 0;
        let mut prev = String::new();
        let mut next = 1;
        if let Some((n, path)) = files.last() {
            next = n + 1;
            let data = fs::read(path).map_err(|e| ctx("cannot read", path, e))?;
            let (recs, damage) = scan(&data);
            if let Some(last) = recs.last() {
                let rec: Record = serde_json::from_slice(&data[last.clone()]).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: last record is not an audit record: {e}",
                            path.display()
                        ),
                    )
                })?;
                seq = rec.seq;
                prev = chain_hash(&data[last.clone()]);
            } else if files.len() > 1 {
                // An empty newest file (a start that wrote nothing): the chain goes on from
                // the file before it.
                let (_, before) = &files[files.len() - 2];
                let d = fs::read(before).map_err(|e| ctx("cannot read", before, e))?;
                let (r, _) = scan(&d);
                if let Some(last) = r.last() {
                    if let Ok(rec) = serde_json::from_slice::<Record>(&d[last.clone()]) {
                        seq = rec.seq;
                        prev = chain_hash(&d[last.clone()]);
                    }
                }
            }
            if let Some(d) = damage {
                let keep = recs.last().map_or(MAGIC.len(), |r| r.end);
                tracing::warn!(
                    file = %path.display(),
                    offset = d.offset,
                    reason = %d.reason,
                    cut = data.len() - keep,
                    "audit log: torn tail cut off (records never acknowledged)"
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| ctx("cannot open", path, e))?;
                f.set_len(keep as u64)
                    .map_err(|e| ctx("cannot truncate", path, e))?;
                f.sync_all().map_err(|e| ctx("cannot sync", path, e))?;
            }
        }
        let file = create_file(&cfg.dir, next)?;
        let shared = Arc::new(Shared {
            q: Mutex::new(Queue {
                buf: Vec::with_capacity(64 << 10),
                waiters: Vec::new(),
                seq,
                prev,
                records: 0,
                synced: seq,
                writer_done: false,
            }),
            wake: Condvar::new(),
            synced: Condvar::new(),
            stop: AtomicBool::new(false),
            grouped: AtomicBool::new(false),
            failed: OnceLock::new(),
            stats: AuditStats::default(),
        });
        let mut w = Writer {
            dir: cfg.dir.clone(),
            file,
            number: next,
            size: MAGIC.len() as u64,
            max_bytes: cfg.max_file_bytes.max(4096),
            max_files: cfg.max_files,
        };
        w.retain();
        let s = shared.clone();
        let h = thread::Builder::new()
            .name("knhk-audit".into())
            .spawn(move || {
                writer_loop(&s, w);
                lock(&s.q).writer_done = true;
                s.synced.notify_all();
            })?;
        Ok(Arc::new(AuditLog {
            cfg,
            shared,
            writer: Mutex::new(Some(h)),
        }))
    }

    /// The configuration in force.
    pub fn config(&self) -> &AuditConfig {
        &self.cfg
    }

    /// The log's counters.
    pub fn stats(&self) -> &AuditStats {
        &self.shared.stats
    }

    /// Why the log refuses records, once a write or sync failed.
    pub fn failure(&self) -> Option<String> {
        self.shared.failed.get().cloned()
    }

    fn queue(
        &self,
        mut rec: Record,
        wait: bool,
        wake: bool,
    ) -> Option<oneshot::Receiver<Result<(), String>>> {
        let s = &*self.shared;
        let ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        rec.time_unix_ns = ns;
        rec.time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        let rx = {
            let mut q = lock(&s.q);
            q.seq += 1;
            rec.seq = q.seq;
            rec.prev = std::mem::take(&mut q.prev);
            let payload = match serde_json::to_vec(&rec) {
                Ok(p) => p,
                // Never: the record is plain strings and numbers.
                Err(_) => return None,
            };
            q.prev = chain_hash(&payload);
            frame(&mut q.buf, &payload);
            q.records += 1;
            wait.then(|| {
                let (tx, rx) = oneshot::channel();
                q.waiters.push(tx);
                rx
            })
        };
        if wake {
            s.wake.notify_one();
        }
        rx
    }

    /// Appends `rec` and returns once it is durable; `Err` says why it cannot be.
    pub async fn append(&self, rec: Record) -> Result<(), String> {
        self.append_pending(rec).durable().await
    }

    /// Queues `rec` now (its place in the order is taken here); the returned [`Pending`]
    /// resolves once it is durable.
    pub fn append_pending(&self, rec: Record) -> Pending {
        self.pending(rec, true)
    }

    /// [`Self::append_pending`] for the record of an op the event log is about to commit:
    /// when the event log commits with this log, its mark starts the sync (one audit sync
    /// lines up with each of its own, rather than one starting early and the commit waiting
    /// for the next).
    pub fn append_for_commit(&self, rec: Record) -> Pending {
        self.pending(rec, !self.shared.grouped.load(Ordering::Relaxed))
    }

    fn pending(&self, rec: Record, wake: bool) -> Pending {
        if let Some(f) = self.failure() {
            return Pending(Err(f));
        }
        Pending(
            self.queue(rec, true, wake)
                .ok_or_else(|| "the audit record could not be encoded".to_string()),
        )
    }

    /// Queues `rec` without waiting (a refusal: nothing changed).
    pub fn note(&self, rec: Record) {
        if self.failure().is_none() {
            let _ = self.queue(rec, false, true);
        }
    }

    /// Writes and syncs what is queued, and stops the writer.
    pub fn close(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        if let Some(h) = lock(&self.writer).take() {
            let _ = h.join();
        }
    }
}

/// The audit log takes part in the event log's group commit: the event log marks it before
/// its own `fdatasync` and waits for it before it releases the commit's jobs, so the records
/// queued for those jobs' calls (on the reply thread, [`crate::grpc`]'s `audited_call`) are
/// durable in the same commit as the changes they describe.
impl knhk_log::CommitPeer for AuditLog {
    fn joined(&self) {
        self.shared.grouped.store(true, Ordering::Relaxed);
    }

    fn mark(&self) -> u64 {
        let s = &*self.shared;
        let seq = lock(&s.q).seq;
        s.wake.notify_one();
        seq
    }

    fn wait(&self, mark: u64) -> Result<(), String> {
        let s = &*self.shared;
        let mut q = lock(&s.q);
        loop {
            if let Some(why) = s.failed.get() {
                return Err(why.clone());
            }
            if q.synced >= mark {
                return Ok(());
            }
            if q.writer_done {
                return Err("the audit log writer stopped".into());
            }
            let (g, _) = s
                .synced
                .wait_timeout(q, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner());
            q = g;
        }
    }
}

impl Drop for AuditLog {
    fn drop(&mut self) {
        self.close();
    }
}

fn create_file(dir: &Path, n: u64) -> io::Result<File> {
    let path = file_path(dir, n);
    let mut f = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(|e| ctx("cannot create", &path, e))?;
    f.write_all(MAGIC)
        .and_then(|()| f.sync_all())
        .map_err(|e| ctx("cannot write", &path, e))?;
    sync_dir(dir).map_err(|e| ctx("cannot sync", dir, e))?;
    Ok(f)
}

struct Writer {
    dir: PathBuf,
    file: File,
    number: u64,
    size: u64,
    max_bytes: u64,
    max_files: usize,
}

impl Writer {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let path = file_path(&self.dir, self.number);
        self.file
            .write_all(buf)
            .map_err(|e| ctx("audit log write failed in", &path, e))?;
        self.file
            .sync_data()
            .map_err(|e| ctx("audit log fdatasync failed in", &path, e))?;
        self.size += buf.len() as u64;
        if self.size >= self.max_bytes {
            self.file = create_file(&self.dir, self.number + 1)?;
            self.number += 1;
            self.size = MAGIC.len() as u64;
            self.retain();
        }
        Ok(())
    }

    /// Removes the oldest files beyond `max_files`.
    fn retain(&mut self) {
        if self.max_files == 0 {
            return;
        }
        let Ok(files) = list_files(&self.dir) else {
            return;
        };
        let extra = files.len().saturating_sub(self.max_files);
        for (_, p) in files.into_iter().take(extra) {
            match fs::remove_file(&p) {
                Ok(()) => tracing::info!(file = %p.display(), "audit log: old file removed"),
                Err(e) => {
                    tracing::warn!(file = %p.display(), error = %e, "audit log: cannot remove an old file")
                }
            }
        }
    }
}

fn writer_loop(s: &Shared, mut w: Writer) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
    loop {
        let (waiters, records, upto, stopping) = {
            let mut q = lock(&s.q);
            while q.buf.is_empty() && !s.stop.load(Ordering::SeqCst) {
                let (g, _) = s
                    .wake
                    .wait_timeout(q, Duration::from_millis(200))
                    .unwrap_or_else(|p| p.into_inner());
                q = g;
            }
            std::mem::swap(&mut q.buf, &mut buf);
            let waiters = std::mem::take(&mut q.waiters);
            let records = std::mem::take(&mut q.records);
            (waiters, records, q.seq, s.stop.load(Ordering::SeqCst))
        };
        if !buf.is_empty() {
            match w.append(&buf) {
                Ok(()) => {
                    lock(&s.q).synced = upto;
                    s.synced.notify_all();
                    s.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
                    s.stats.records.fetch_add(records, Ordering::Relaxed);
                    s.stats.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
                    for tx in waiters {
                        let _ = tx.send(Ok(()));
                    }
                }
                Err(e) => {
                    let why = format!("{e}; the server refuses state-changing calls");
                    tracing::error!(error = %why, "audit log failed");
                    let _ = s.failed.set(why.clone());
                    s.synced.notify_all();
                    for tx in waiters {
                        let _ = tx.send(Err(why.clone()));
                    }
                    let mut q = lock(&s.q);
                    q.buf.clear();
                    for tx in q.waiters.drain(..) {
                        let _ = tx.send(Err(why.clone()));
                    }
                    return;
                }
            }
            buf.clear();
        }
        if stopping && lock(&s.q).buf.is_empty() {
            return;
        }
    }
}

// ------------------------------------------------------------------------------- reading

/// What [`verify`] found.
#[derive(Debug, Default)]
pub struct Report {
    pub files: usize,
    pub records: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    /// A torn tail at the end of the newest file (a crash while writing; the server cuts it
    /// off at its next start): not an error.
    pub torn_tail: Option<String>,
    /// Damage, gaps, reordering, broken chain: each names the file and the record.
    pub problems: Vec<String>,
}

/// Reads every audit file of `dir` in order, hands each record (its stored JSON payload) to
/// `each`, and checks the CRCs, that `seq` goes up by one, that each `prev` is the hash of the
/// record before it and that time does not go backwards by more than a minute.
pub fn verify(dir: &Path, mut each: impl FnMut(&Record, &[u8])) -> io::Result<Report> {
    let files = list_files(dir).map_err(|e| ctx("cannot list", dir, e))?;
    let mut rep = Report {
        files: files.len(),
        ..Report::default()
    };
    let mut last: Option<(u64, String, u64)> = None; // seq, hash, time
    let n = files.len();
    for (i, (_, path)) in files.iter().enumerate() {
        let mut data = Vec::new();
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(|e| ctx("cannot read", path, e))?;
        let (recs, damage) = scan(&data);
        for r in recs {
            let payload = &data[r.clone()];
            let rec: Record = match serde_json::from_slice(payload) {
                Ok(rec) => rec,
                Err(e) => {
                    rep.problems.push(format!(
                        "{} at offset {}: not an audit record: {e}",
                        path.display(),
                        r.start - 8
                    ));
                    last = None;
                    continue;
                }
            };
            match &last {
                None if rep.first_seq.is_none() => rep.first_seq = Some(rec.seq),
                None => {}
                Some((seq, hash, t)) => {
                    if rec.seq != seq + 1 {
                        rep.problems.push(format!(
                            "{}: record seq {} follows seq {seq} (records missing or reordered)",
                            path.display(),
                            rec.seq
                        ));
                    } else if &rec.prev != hash {
                        rep.problems.push(format!(
                            "{}: record seq {} does not chain to seq {seq} (its prev is not \
                             that record's hash: a record was changed)",
                            path.display(),
                            rec.seq
                        ));
                    }
                    if rec.time_unix_ns + 60_000_000_000 < *t {
                        rep.problems.push(format!(
                            "{}: record seq {} is more than a minute older than seq {seq}",
                            path.display(),
                            rec.seq
                        ));
                    }
                }
            }
            if rep.first_seq.is_none() {
                rep.first_seq = Some(rec.seq);
            }
            each(&rec, payload);
            rep.records += 1;
            rep.last_seq = Some(rec.seq);
            last = Some((rec.seq, chain_hash(payload), rec.time_unix_ns));
        }
        if let Some(d) = damage {
            let what = format!("{} at offset {}: {}", path.display(), d.offset, d.reason);
            if i + 1 == n && d.reason.starts_with("torn") {
                rep.torn_tail = Some(what);
            } else {
                rep.problems.push(what);
                last = None;
            }
        }
    }
    Ok(rep)
}

/// `knhk audit DIR`: prints every record as a JSON line on `out` (unless `quiet`), then a
/// summary and every problem on `err`. Exit code 0 when the log verifies, 1 when not, 2 when
/// it cannot be read.
pub fn run_cli(dir: &Path, quiet: bool, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut write_failed = false;
    let rep = verify(dir, |_, payload| {
        if !quiet && !write_failed {
            let ok = out
                .write_all(payload)
                .and_then(|()| out.write_all(b"\n"))
                .is_ok();
            write_failed |= !ok;
        }
    });
    let _ = out.flush();
    match rep {
        Err(e) => {
            let _ = writeln!(err, "knhk audit: {e}");
            2
        }
        Ok(rep) => {
            if let Some(t) = &rep.torn_tail {
                let _ = writeln!(
                    err,
                    "knhk audit: torn tail (a crash while writing; records there were never \
                     acknowledged): {t}"
                );
            }
            for p in &rep.problems {
                let _ = writeln!(err, "knhk audit: {p}");
            }
            let range = match (rep.first_seq, rep.last_seq) {
                (Some(a), Some(b)) => format!(", seq {a} to {b}"),
                _ => String::new(),
            };
            let verdict = if rep.problems.is_empty() {
                "verified"
            } else {
                "NOT verified"
            };
            let _ = writeln!(
                err,
                "knhk audit: {} records in {} files{range}: {verdict} (CRCs, order, chain)",
                rep.records, rep.files
            );
            i32::from(!rep.problems.is_empty())
        }
    }
}
