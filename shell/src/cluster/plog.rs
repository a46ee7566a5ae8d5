//! One partition's event log on NATS JetStream (docs/cluster.md): the engine of the partition
//! hands every executed job to it ([`BatchHook`]); a writer task publishes the records of
//! everything pending as one frame on the partition's subject, and releases the jobs once the
//! stream has acknowledged the frame (committed on a quorum of the stream's replicas) and the
//! node's lease is still valid.
//!
//! Every frame carries the owner's epoch (`Knhk-Epoch`), its id `partition:epoch:frame`
//! (`Nats-Msg-Id`, so a republished frame is stored once) and the subject sequence it expects
//! to follow (`Nats-Expected-Last-Subject-Sequence`, so a deposed owner's publish is refused).
//! A timeout or refusal is ambiguous: `PartitionLog::append` reads the subject's last message
//! to decide whether the frame landed, may be republished, or was fenced off by a new owner.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use tokio::sync::Notify;

use knhk_engine::engine::BatchHook;
use knhk_engine::workers::Job;
use knhk_engine::workflow::Workflow;
use knhk_engine::EngineError;

use super::{ClusterStats, LeaseClock};

/// Header naming the epoch a frame or fence was written under.
pub const EPOCH_HEADER: &str = "Knhk-Epoch";
/// Header present on fence frames (value: the new owner's epoch).
pub const FENCE_HEADER: &str = "Knhk-Fence";
/// How long an append keeps resolving and retrying while JetStream is unavailable before the
/// partition gives up (held work is then refused, UNAVAILABLE).
pub const APPEND_PATIENCE: Duration = Duration::from_secs(30);
/// Largest frame payload (JetStream's default max_payload is 1 MiB; headers need room).
pub const MAX_FRAME: usize = 900 << 10;

struct Pending {
    buf: Vec<u8>,
    #[allow(clippy::vec_box)]
    held: Vec<Box<Job>>,
}

/// The partition's log: held jobs, the frame being built, and where the subject stands.
pub struct PartitionLog {
    pub partition: u16,
    pub epoch: u64,
    subject: String,
    stream: String,
    js: jetstream::Context,
    lease: Arc<LeaseClock>,
    stats: Arc<ClusterStats>,
    q: Mutex<Pending>,
    wake: Notify,
    /// Set once the partition cannot persist (fenced, lease lost, JetStream gone too long).
    failed: OnceLock<String>,
    replaying: AtomicBool,
    /// The subject sequence of the last message known to be ours (or the fence).
    last_seq: AtomicU64,
    frames: AtomicU64,
    /// Frames published and not yet acknowledged, plus queued work: 0 when drained.
    busy: AtomicU64,
    idle: Notify,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("partition", &self.partition)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// The subject of partition `p`'s log.
pub fn subject(cluster: &str, p: u16) -> String {
    format!("{cluster}.log.{p}")
}

/// The stream holding partition `p`'s subject (`streams` of them share the partitions, so
/// their leaders spread over the servers).
pub fn stream_name(cluster: &str, p: u16, streams: u16) -> String {
    format!("{}_LOG_{}", cluster.to_uppercase(), p % streams.max(1))
}

fn header<'a>(h: &'a async_nats::HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.as_str())
}

/// The epoch a stored message was written under (0 when it names none).
pub fn epoch_of(h: &async_nats::HeaderMap) -> u64 {
    header(h, EPOCH_HEADER)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The epoch a fence message installs, if it is one.
pub fn fence_of(h: &async_nats::HeaderMap) -> Option<u64> {
    header(h, FENCE_HEADER).and_then(|v| v.parse().ok())
}

impl PartitionLog {
    pub fn new(
        cluster: &str,
        streams: u16,
        partition: u16,
        epoch: u64,
        js: jetstream::Context,
        lease: Arc<LeaseClock>,
        stats: Arc<ClusterStats>,
    ) -> Arc<PartitionLog> {
        Arc::new(PartitionLog {
            partition,
            epoch,
            subject: subject(cluster, partition),
            stream: stream_name(cluster, partition, streams),
            js,
            lease,
            stats,
            q: Mutex::new(Pending {
                buf: Vec::with_capacity(64 << 10),
                held: Vec::new(),
            }),
            wake: Notify::new(),
            failed: OnceLock::new(),
            replaying: AtomicBool::new(true),
            last_seq: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            busy: AtomicU64::new(0),
            idle: Notify::new(),
        })
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Why the partition refuses work, once it does.
    pub fn failure(&self) -> Option<String> {
        self.failed.get().cloned()
    }

    /// Marks the partition failed: held work is dropped unreleased (its callers see the
    /// refusal, never OK).
    pub fn fail(&self, why: String) {
        if self.failed.set(why.clone()).is_ok() {
            tracing::error!(partition = self.partition, epoch = self.epoch, error = %why,
                "cluster partition log failed: the partition refuses work");
        }
        let held = {
            let mut q = self.q.lock().unwrap_or_else(|p| p.into_inner());
            q.buf.clear();
            std::mem::take(&mut q.held)
        };
        drop(held);
        self.busy.store(0, Ordering::SeqCst);
        self.idle.notify_waiters();
        self.wake.notify_one();
    }

    /// Closes the log before the partition's owner key is released: a job that reaches it
    /// later is refused and no frame in flight is acknowledged, so nothing is acknowledged
    /// that the successor (who fences after the release) might not replay. (A frame may still
    /// land before the successor's fence: it is then replayed, unacknowledged, like any frame
    /// whose reply was lost.)
    pub fn seal(&self) {
        self.fail(format!(
            "partition {} was handed over (epoch {}); retry",
            self.partition, self.epoch
        ));
    }

    /// Publishes the fence of this owner's epoch after whatever the subject holds; returns the
    /// fence's sequence. Every reader drops frames of older epochs after it.
    pub async fn fence(&self) -> Result<u64, String> {
        let last = self.last_message().await?.map_or(0, |m| m.0);
        self.last_seq.store(last, Ordering::SeqCst);
        let id = format!("{}:{}:fence", self.partition, self.epoch);
        let seq = self
            .append(Bytes::new(), &id, true)
            .await
            .map_err(|e| format!("fence of partition {}: {e}", self.partition))?;
        Ok(seq)
    }

    /// Replay is over: executed jobs are logged from now on (after `fence_seq`).
    pub fn start_logging(self: &Arc<Self>, fence_seq: u64) {
        self.last_seq.store(fence_seq, Ordering::SeqCst);
        self.replaying.store(false, Ordering::SeqCst);
        let me = self.clone();
        tokio::spawn(async move { me.writer().await });
    }

    /// Waits until everything handed to the log is acknowledged (or refused), at most `within`.
    pub async fn drained(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.idle.notified();
            if self.busy.load(Ordering::SeqCst) == 0 || self.failed.get().is_some() {
                return true;
            }
            self.wake.notify_one();
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.busy.load(Ordering::SeqCst) == 0;
            }
        }
    }

    /// The subject's last message: (sequence, message id, epoch), or None for an empty subject.
    async fn last_message(&self) -> Result<Option<(u64, String, u64)>, String> {
        let stream = self
            .js
            .get_stream_no_info(&self.stream)
            .await
            .map_err(|e| format!("stream {}: {e}", self.stream))?;
        match stream.get_last_raw_message_by_subject(&self.subject).await {
            Ok(m) => Ok(Some((
                m.sequence,
                header(&m.headers, "Nats-Msg-Id").unwrap_or("").to_string(),
                epoch_of(&m.headers),
            ))),
            Err(e)
                if e.kind()
                    == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
            {
                Ok(None)
            }
            Err(e) => Err(format!("last message of {}: {e}", self.subject)),
        }
    }

    /// Publishes one frame (or the fence) with its id, epoch and expected predecessor, and
    /// resolves every ambiguous outcome. Returns the frame's stream sequence; an error means the
    /// frame is not (and will not be) part of this owner's history.
    async fn append(&self, payload: Bytes, id: &str, fence: bool) -> Result<u64, String> {
        let give_up = tokio::time::Instant::now() + APPEND_PATIENCE;
        let mut backoff = Duration::from_millis(20);
        loop {
            if !self.lease.valid() {
                return Err("the node's ownership lease is no longer valid".into());
            }
            let mut publish = PublishMessage::build()
                .payload(payload.clone())
                .message_id(id)
                .expected_last_subject_sequence(self.last_seq.load(Ordering::SeqCst))
                .header(EPOCH_HEADER, self.epoch.to_string().as_str());
            if fence {
                publish = publish.header(FENCE_HEADER, self.epoch.to_string().as_str());
            }
            let outcome = match self.js.send_publish(self.subject.clone(), publish).await {
                Ok(ack) => ack.await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match outcome {
                Ok(ack) => return Ok(ack.sequence),
                Err(why) => {
                    // Ambiguous: the frame may have landed (a timeout after the commit), may
                    // still be ours to write, or we may have been fenced off.
                    self.stats.ambiguous.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(partition = self.partition, error = %why, "publish ambiguous; resolving");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                    match self.last_message().await {
                        Ok(Some((seq, last_id, _))) if last_id == id => {
                            self.stats.resolved_landed.fetch_add(1, Ordering::Relaxed);
                            return Ok(seq);
                        }
                        Ok(Some((seq, _, epoch))) if epoch == self.epoch => {
                            // Ours (an earlier frame or our fence): republish after it.
                            self.last_seq.store(seq, Ordering::SeqCst);
                        }
                        Ok(Some((_, _, epoch))) if epoch > self.epoch => {
                            self.stats.fenced.fetch_add(1, Ordering::Relaxed);
                            return Err(format!(
                                "partition {} was fenced by a newer owner (epoch {epoch} > {})",
                                self.partition, self.epoch
                            ));
                        }
                        Ok(Some((seq, _, _))) if fence => {
                            // An older owner's frame landed after we read the end: fence after it.
                            self.last_seq.store(seq, Ordering::SeqCst);
                        }
                        Ok(Some((_, _, epoch))) => {
                            self.stats.fenced.fetch_add(1, Ordering::Relaxed);
                            return Err(format!(
                                "partition {}: a frame of epoch {epoch} follows ours (epoch {}): \
                                 fenced",
                                self.partition, self.epoch
                            ));
                        }
                        Ok(None) => self.last_seq.store(0, Ordering::SeqCst),
                        Err(e) => tracing::debug!(error = %e, "resolving: JetStream unavailable"),
                    }
                    if tokio::time::Instant::now() >= give_up {
                        return Err(format!(
                            "JetStream did not acknowledge a frame of partition {} within {:?} \
                             (last error: {why})",
                            self.partition, APPEND_PATIENCE
                        ));
                    }
                }
            }
        }
    }

    /// Publishes pending frames one at a time until the partition fails.
    async fn writer(self: Arc<Self>) {
        loop {
            let notified = self.wake.notified();
            if self.failed.get().is_some() {
                return;
            }
            let (buf, held) = {
                let mut q = self.q.lock().unwrap_or_else(|p| p.into_inner());
                let cut = frame_cut(&q.buf);
                let buf: Vec<u8> = q.buf.drain(..cut).collect();
                let held = if q.buf.is_empty() {
                    std::mem::take(&mut q.held)
                } else {
                    Vec::new()
                };
                (buf, held)
            };
            if buf.is_empty() && held.is_empty() {
                if self.busy.load(Ordering::SeqCst) == 0 {
                    self.idle.notify_waiters();
                }
                notified.await;
                continue;
            }
            let n = held.len() as u64;
            let result = if buf.is_empty() {
                Ok(0)
            } else {
                let frame = self.frames.fetch_add(1, Ordering::Relaxed);
                let id = format!("{}:{}:{frame}", self.partition, self.epoch);
                self.append(Bytes::from(buf), &id, false).await
            };
            match result {
                Ok(_) if self.failed.get().is_some() => {
                    // Sealed (handed over) or failed while the frame was in flight.
                    drop(held);
                    return;
                }
                Ok(seq) => {
                    if seq > 0 {
                        self.last_seq.store(seq, Ordering::SeqCst);
                        self.stats.frames.fetch_add(1, Ordering::Relaxed);
                    }
                    // Acknowledge only while the lease says we still own the partition.
                    if !self.lease.valid() {
                        drop(held);
                        self.fail(
                            "the node's ownership lease expired before the frame's jobs \
                                   were released"
                                .into(),
                        );
                        return;
                    }
                    for job in held {
                        job.release();
                    }
                    self.busy.fetch_sub(n, Ordering::SeqCst);
                }
                Err(why) => {
                    drop(held);
                    self.fail(why);
                    return;
                }
            }
        }
    }
}

/// Where the pending buffer is cut into a frame: whole records, at most [`MAX_FRAME`] bytes
/// unless one record alone is larger.
fn frame_cut(buf: &[u8]) -> usize {
    let mut at = 0;
    while at + 8 <= buf.len() {
        let len = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        let next = at + 8 + len;
        if next > MAX_FRAME && at > 0 {
            break;
        }
        at = next;
    }
    at.min(buf.len())
}

impl BatchHook for PartitionLog {
    fn executed(&self, shard: usize, job: Box<Job>) {
        if self.replaying.load(Ordering::Relaxed) {
            job.release();
            return;
        }
        if self.failed.get().is_some() {
            drop(job);
            return;
        }
        {
            let mut q = self.q.lock().unwrap_or_else(|p| p.into_inner());
            knhk_log::frames::encode_job(&mut q.buf, shard, &job);
            // Held in order even when nothing was appended: a refusal may depend on an earlier,
            // not yet acknowledged event.
            q.held.push(job);
            self.busy.fetch_add(1, Ordering::SeqCst);
        }
        self.wake.notify_one();
    }

    fn refusal(&self) -> Option<EngineError> {
        if let Some(w) = self.failed.get() {
            return Some(EngineError::Unavailable(w.clone()));
        }
        (!self.lease.valid())
            .then(|| EngineError::Unavailable("this node's ownership lease is not valid".into()))
    }

    fn registered(&self, _wf: &Workflow, _model: &[u8]) -> Result<(), EngineError> {
        // Registrations are durable in the cluster's workflow stream before any partition
        // engine sees them (cluster::Node::register_workflow).
        Ok(())
    }
}
