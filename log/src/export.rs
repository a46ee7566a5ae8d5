//! Exporters: committed events streamed, in log order and at least once, to sinks (Zeebe's
//! exporter idea; docs/durability.md, "Exporters").
//!
//! While an exporter is configured, the engine's reply threads hand each job's events to the
//! log ([`knhk_engine::engine::Engine::set_export_events`]), which writes them as an events
//! record right after the job's batch record, in the same group commit. Each exporter is a
//! thread of its own that reads the segments from its sink's position up to what is durable
//! (never further), decodes the events records and hands them to its sink; the sink makes
//! them durable together with the position after them, which is where it resumes after a
//! restart. A sink that fails is retried with a growing pause (100 ms to 5 s); nothing waits
//! for it: the kernel, the writer and the other exporters go on. What a lagging exporter has
//! not read stays on disk: compaction is held while any exporter's position is in a sealed
//! segment ([`crate::JournalStats::compactions_held`]), and runs once every exporter has passed it.
//!
//! Delivery is at least once: a sink that made events durable but not yet its position gets
//! them again after a restart. Positions are (segment, byte offset) of the log, the same
//! across restarts; each event carries the position of its record, so a consumer can drop
//! repeats.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::record::{get_events, LoggedEvent};
use crate::segment::{list_segments, seg_path, sync_dir};
use crate::{lock, Shared, K_EVENTS, MAGIC, MAX_RECORD};

/// Log bytes read per delivery at most: an exporter's memory is bounded by this and the events
/// decoded from it.
const READ_BYTES: u64 = 4 << 20;
/// Pause after a failed delivery, doubled up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(5);

/// A place in the log: segment number and byte offset in it. Ordered as the log is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.segment, self.offset)
    }
}

impl std::str::FromStr for Position {
    type Err = String;
    fn from_str(s: &str) -> Result<Position, String> {
        let (a, b) = s
            .split_once(':')
            .ok_or_else(|| format!("position {s:?}: expected SEGMENT:OFFSET"))?;
        let num = |v: &str| {
            v.trim()
                .parse::<u64>()
                .map_err(|e| format!("position {s:?}: {e}"))
        };
        Ok(Position {
            segment: num(a)?,
            offset: num(b)?,
        })
    }
}

/// One committed event and the position of the record that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exported {
    pub position: Position,
    pub event: LoggedEvent,
}

/// Where an exporter's events go. Called from the exporter's own thread only.
pub trait ExportSink: Send + 'static {
    /// A short name for logs, metrics and health ("xes-file").
    fn name(&self) -> String;
    /// Where to resume: the position the sink made durable last (`None`: from the oldest
    /// segment on disk).
    fn resume(&mut self) -> Result<Option<Position>, String>;
    /// Takes `events` (possibly none) and makes them durable together with `upto`, the
    /// position after them, which [`ExportSink::resume`] returns from then on. An error is
    /// retried with the same events and position: a sink that wrote part of them must undo it
    /// or tolerate the repeat.
    fn deliver(&mut self, events: &[Exported], upto: Position) -> Result<(), String>;
}

/// What a sink recorded last: the position after its last delivery (`None`: nothing delivered
/// yet) and, for a sink that keeps one, the length of what it wrote by then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SavedPosition {
    pub position: Option<Position>,
    pub length: Option<u64>,
}

/// A sink's position file, replaced atomically (written aside as `FILE.tmp`, synced, renamed,
/// its directory synced). Text: `knhk-export 1`, `position SEGMENT:OFFSET` (or `start`), and
/// `length N` when the sink keeps a length.
#[derive(Debug, Clone)]
pub struct PositionFile {
    path: std::path::PathBuf,
}

const POSITION_MAGIC: &str = "knhk-export 1";

impl PositionFile {
    pub fn new(path: std::path::PathBuf) -> PositionFile {
        PositionFile { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the file holds; `None` when there is no file.
    pub fn read(&self) -> Result<Option<SavedPosition>, String> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", self.path.display())),
        };
        let bad = |why: &str| format!("{}: {why}", self.path.display());
        let mut lines = text.lines();
        if lines.next() != Some(POSITION_MAGIC) {
            return Err(bad("not a knhk export position file"));
        }
        let position = match lines.next().and_then(|l| l.strip_prefix("position ")) {
            Some("start") => None,
            Some(p) => Some(p.parse::<Position>().map_err(|e| bad(&e))?),
            None => return Err(bad("no position line")),
        };
        let length = match lines.next() {
            Some(l) => Some(
                l.strip_prefix("length ")
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| bad("a bad length line"))?,
            ),
            None => None,
        };
        Ok(Some(SavedPosition { position, length }))
    }

    /// Replaces the file with `saved`, durably.
    pub fn write(&self, saved: &SavedPosition) -> Result<(), String> {
        let mut text = format!(
            "{POSITION_MAGIC}\nposition {}\n",
            saved
                .position
                .map_or_else(|| "start".to_string(), |p| p.to_string())
        );
        if let Some(n) = saved.length {
            text.push_str(&format!("length {n}\n"));
        }
        let tmp = {
            let mut t = self.path.clone().into_os_string();
            t.push(".tmp");
            std::path::PathBuf::from(t)
        };
        let at = |p: &Path, e: io::Error| format!("{}: {e}", p.display());
        let mut f = File::create(&tmp).map_err(|e| at(&tmp, e))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| at(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| at(&self.path, e))?;
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        sync_dir(dir).map_err(|e| at(dir, e))
    }
}

/// Counters and state of one exporter (metrics, health).
#[derive(Debug)]
pub struct ExporterStats {
    pub name: String,
    /// Events delivered (repeats after a restart included).
    pub events: AtomicU64,
    /// Deliveries that failed (each retried).
    pub failures: AtomicU64,
    /// Bytes of the durable log after the exporter's position (read by nothing yet).
    pub lag_bytes: AtomicU64,
    /// The exporter's position, segment and offset.
    pub segment: AtomicU64,
    pub offset: AtomicU64,
    /// When the position last moved, or the exporter last found nothing to read (ns since
    /// the Unix epoch): a lagging exporter whose progress is old is stalled.
    pub progress_ns: AtomicU64,
    /// The last delivery error, while deliveries fail.
    pub last_error: Mutex<Option<String>>,
}

impl ExporterStats {
    fn new(name: String) -> ExporterStats {
        ExporterStats {
            name,
            events: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            lag_bytes: AtomicU64::new(0),
            segment: AtomicU64::new(0),
            offset: AtomicU64::new(0),
            progress_ns: AtomicU64::new(knhk_engine::engine::now_ns()),
            last_error: Mutex::new(None),
        }
    }

    /// The exporter's position.
    pub fn position(&self) -> Position {
        Position {
            segment: self.segment.load(Ordering::Relaxed),
            offset: self.offset.load(Ordering::Relaxed),
        }
    }

    /// Why the exporter is not keeping up, if it is not: its sink fails, or it has had events
    /// to read and has not moved for `stall`.
    pub fn trouble(&self, stall: Duration) -> Option<String> {
        if let Some(e) = lock(&self.last_error).clone() {
            return Some(format!("exporter {}: its sink fails: {e}", self.name));
        }
        let lag = self.lag_bytes.load(Ordering::Relaxed);
        let idle_ns =
            knhk_engine::engine::now_ns().saturating_sub(self.progress_ns.load(Ordering::Relaxed));
        if lag > 0 && idle_ns >= stall.as_nanos() as u64 {
            return Some(format!(
                "exporter {}: stalled for {} s with {lag} log bytes unread at {}; compaction \
                 waits for it",
                self.name,
                idle_ns / 1_000_000_000,
                self.position()
            ));
        }
        None
    }
}

/// The exporters of a journal.
#[derive(Default)]
pub(crate) struct Exporters {
    pub(crate) stats: Vec<Arc<ExporterStats>>,
    pub(crate) threads: Vec<JoinHandle<()>>,
}

/// The lowest segment any exporter is in (`u64::MAX`: none): compaction of segments at or
/// above it waits.
pub(crate) fn floor(all: &[Arc<ExporterStats>]) -> u64 {
    all.iter()
        .map(|s| s.segment.load(Ordering::Relaxed))
        .min()
        .unwrap_or(u64::MAX)
}

/// Starts an exporter thread for `sink` from where it resumes; registers its stats.
pub(crate) fn start(
    dir: &Path,
    shared: &Arc<Shared>,
    mut sink: Box<dyn ExportSink>,
) -> io::Result<Arc<ExporterStats>> {
    let name = sink.name();
    let resumed = sink
        .resume()
        .map_err(|e| io::Error::other(format!("exporter {name}: {e}")))?;
    let start = first_position(dir, resumed, &name)?;
    let stats = Arc::new(ExporterStats::new(name.clone()));
    stats.segment.store(start.segment, Ordering::Relaxed);
    stats.offset.store(start.offset, Ordering::Relaxed);
    let mut ex = lock(&shared.exporters);
    ex.stats.push(stats.clone());
    shared
        .export_floor
        .store(floor(&ex.stats), Ordering::SeqCst);
    let (dir, sh, st) = (dir.to_path_buf(), shared.clone(), stats.clone());
    let h = thread::Builder::new()
        .name(format!("knhk-export-{name}"))
        .spawn(move || export_loop(&dir, &sh, sink, &st, start))?;
    ex.threads.push(h);
    Ok(stats)
}

/// Where an exporter starts: its sink's position where that segment is still on disk, else the
/// oldest segment after it (said in a warning when events could have been compacted away
/// before the sink had them).
fn first_position(dir: &Path, resumed: Option<Position>, name: &str) -> io::Result<Position> {
    let segs = list_segments(dir)?;
    let Some(&(oldest, _)) = segs.first() else {
        return Ok(resumed.unwrap_or_default());
    };
    match resumed {
        None => Ok(Position {
            segment: oldest,
            offset: 0,
        }),
        Some(p) if segs.iter().any(|(n, _)| *n == p.segment) => Ok(p),
        Some(p) => {
            let next = segs
                .iter()
                .map(|(n, _)| *n)
                .find(|n| *n > p.segment)
                .unwrap_or(oldest);
            tracing::warn!(
                exporter = name,
                position = %p,
                from_segment = next,
                "exporter: its segment is no longer on disk (compacted while no exporter of \
                 this name was configured): events in between may be missing; it continues \
                 from the next segment"
            );
            Ok(Position {
                segment: next,
                offset: 0,
            })
        }
    }
}

fn export_loop(
    dir: &Path,
    shared: &Arc<Shared>,
    mut sink: Box<dyn ExportSink>,
    stats: &ExporterStats,
    mut at: Position,
) {
    let mut pause = FIRST_PAUSE;
    let mut events: Vec<Exported> = Vec::new();
    loop {
        let durable = wait_past(shared, at);
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Some(durable) = durable else {
            stats.lag_bytes.store(0, Ordering::Relaxed);
            stats
                .progress_ns
                .store(knhk_engine::engine::now_ns(), Ordering::Relaxed);
            continue;
        };
        stats
            .lag_bytes
            .store(lag(dir, at, durable), Ordering::Relaxed);
        events.clear();
        let next = match read(dir, at, durable, &mut events) {
            Ok(n) => n,
            Err(e) => {
                note_failure(stats, format!("reading the log at {at}: {e}"));
                nap(shared, pause);
                pause = (pause * 2).min(MAX_PAUSE);
                continue;
            }
        };
        // Positions move without a delivery within a segment (a range without events loses
        // nothing if it is read again); a new segment is delivered, so that the sink's
        // position never names a segment compaction may replace.
        if !events.is_empty() || next.segment != at.segment {
            if let Err(e) = sink.deliver(&events, next) {
                note_failure(stats, e);
                nap(shared, pause);
                pause = (pause * 2).min(MAX_PAUSE);
                continue;
            }
        }
        pause = FIRST_PAUSE;
        *lock(&stats.last_error) = None;
        stats
            .events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        at = next;
        stats.segment.store(at.segment, Ordering::Relaxed);
        stats.offset.store(at.offset, Ordering::Relaxed);
        stats
            .progress_ns
            .store(knhk_engine::engine::now_ns(), Ordering::Relaxed);
        let floor_now = floor(&lock(&shared.exporters).stats);
        if shared.export_floor.swap(floor_now, Ordering::SeqCst) != floor_now {
            // a compaction the writer deferred may run now
            shared.wake.notify_one();
        }
    }
}

/// Sleeps `d` before a retry, or less when the log stops (a closing server does not wait
/// for an exporter's pause).
fn nap(shared: &Shared, d: Duration) {
    let deadline = std::time::Instant::now() + d;
    let mut g = lock(&shared.durable);
    while !shared.stop.load(Ordering::SeqCst) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        g = shared
            .durable_moved
            .wait_timeout(g, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

fn note_failure(stats: &ExporterStats, why: String) {
    stats.failures.fetch_add(1, Ordering::Relaxed);
    let mut last = lock(&stats.last_error);
    if last.as_deref() != Some(why.as_str()) {
        tracing::warn!(exporter = %stats.name, error = %why, "exporter: delivery failed; retrying");
    }
    *last = Some(why);
}

/// Waits (up to 200 ms) until the durable end of the log is past `at`; returns it then.
fn wait_past(shared: &Shared, at: Position) -> Option<Position> {
    let mut d = lock(&shared.durable);
    if *d <= at && !shared.stop.load(Ordering::SeqCst) {
        d = shared
            .durable_moved
            .wait_timeout(d, Duration::from_millis(200))
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    (*d > at).then_some(*d)
}

/// Log bytes from `at` to `durable`.
fn lag(dir: &Path, at: Position, durable: Position) -> u64 {
    if at.segment == durable.segment {
        return durable.offset.saturating_sub(at.offset);
    }
    let mut total = durable.offset;
    if let Ok(segs) = list_segments(dir) {
        for (n, path) in segs {
            if n >= at.segment && n < durable.segment {
                let len = std::fs::metadata(&path).map_or(0, |m| m.len());
                total += if n == at.segment {
                    len.saturating_sub(at.offset)
                } else {
                    len
                };
            }
        }
    }
    total
}

/// Reads the records from `at` (at most [`READ_BYTES`], whole records, up to `durable`),
/// appending the events of events records to `out`; returns the position after what was read.
/// At the end of a sealed segment, the position moves to the start of the next one.
fn read(
    dir: &Path,
    at: Position,
    durable: Position,
    out: &mut Vec<Exported>,
) -> Result<Position, String> {
    let path = seg_path(dir, at.segment);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound && at.segment < durable.segment => {
            return Ok(Position {
                segment: next_segment(dir, at.segment, durable)?,
                offset: 0,
            });
        }
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let end = if at.segment < durable.segment {
        file.metadata()
            .map_err(|e| format!("{}: {e}", path.display()))?
            .len()
    } else {
        durable.offset
    };
    let from = at.offset.max(MAGIC.len() as u64);
    if from >= end {
        return if at.segment < durable.segment {
            Ok(Position {
                segment: next_segment(dir, at.segment, durable)?,
                offset: 0,
            })
        } else {
            Ok(Position {
                segment: at.segment,
                offset: from.max(at.offset),
            })
        };
    }
    let read_at = |file: &mut File, n: u64| -> Result<Vec<u8>, String> {
        let mut data = Vec::with_capacity(n as usize);
        file.seek(SeekFrom::Start(from))
            .and_then(|_| Read::by_ref(file).take(n).read_to_end(&mut data))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(data)
    };
    let mut data = read_at(&mut file, (end - from).min(READ_BYTES))?;
    if let Some(head) = data.get(..4) {
        // a first record longer than a read: read it whole
        let first = 8 + u64::from(u32::from_le_bytes([head[0], head[1], head[2], head[3]]));
        if first > data.len() as u64 && first <= end - from && first <= u64::from(MAX_RECORD) + 8 {
            data = read_at(&mut file, first)?;
        }
    }
    let mut pos = 0usize;
    while pos < data.len() {
        let Some(head) = data.get(pos..pos + 8) else {
            break;
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len == 0 || len > MAX_RECORD {
            return Err(format!(
                "{} at {}: impossible record length {len}",
                path.display(),
                from + pos as u64
            ));
        }
        let Some(body) = data.get(pos + 8..pos + 8 + len as usize) else {
            // a record longer than what was read this time: the next read starts at it
            break;
        };
        if crc32c::crc32c_append(crc32c::crc32c(&len.to_le_bytes()), body) != crc {
            return Err(format!(
                "{} at {}: checksum mismatch",
                path.display(),
                from + pos as u64
            ));
        }
        if body[0] == K_EVENTS {
            let position = Position {
                segment: at.segment,
                offset: from + pos as u64,
            };
            let mut decoded = Vec::new();
            get_events(&body[1..], &mut decoded)
                .map_err(|e| format!("{} at {position}: {e}", path.display()))?;
            out.extend(
                decoded
                    .into_iter()
                    .map(|event| Exported { position, event }),
            );
        }
        pos += 8 + len as usize;
    }
    if pos == 0 {
        return Err(format!(
            "{} at {from}: a record runs past the durable end of the log ({durable})",
            path.display()
        ));
    }
    let after = from + pos as u64;
    if after >= end && at.segment < durable.segment {
        return Ok(Position {
            segment: next_segment(dir, at.segment, durable)?,
            offset: 0,
        });
    }
    Ok(Position {
        segment: at.segment,
        offset: after,
    })
}

/// The first segment on disk after `n` (the durable one at most).
fn next_segment(dir: &Path, n: u64, durable: Position) -> Result<u64, String> {
    let segs = list_segments(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(segs
        .iter()
        .map(|(k, _)| *k)
        .find(|k| *k > n)
        .unwrap_or(durable.segment)
        .min(durable.segment))
}

/// Joins exporter threads (the log has stopped). The caller must not hold the exporters'
/// lock: an exporter takes it once more after its last delivery.
pub(crate) fn join(threads: Vec<JoinHandle<()>>) {
    for h in threads {
        let _ = h.join();
    }
}
