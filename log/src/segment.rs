//! Segment files in the data directory: naming, creation (header, fsync of file and
//! directory), listing, and the start-up scan that verifies every record and cuts a torn or
//! corrupt tail of the last segment.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crate::record::{get_header, put_header, scan, Header};
use crate::{JournalStats, FORMAT_VERSION, K_HEADER, MAGIC, OLDEST_READABLE_VERSION};

// ------------------------------------------------------------------------------- segments

pub(crate) fn seg_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("wal-{n:016}.log"))
}

pub(crate) fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(num) = name
            .strip_prefix("wal-")
            .and_then(|s| s.strip_suffix(".log"))
            .and_then(|s| s.parse::<u64>().ok())
        {
            v.push((num, e.path()));
        } else if name.ends_with(".tmp") {
            // A checkpoint that never got renamed: never valid.
            let _ = fs::remove_file(e.path());
        }
    }
    v.sort();
    Ok(v)
}

pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

pub(crate) fn ctx_err(what: &str, path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Creates a fresh segment holding only its header, synced.
pub(crate) fn create_segment(
    dir: &Path,
    n: u64,
    workers: u32,
    per_shard: u32,
) -> io::Result<(File, u64)> {
    let path = seg_path(dir, n);
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(|e| ctx_err("cannot create event log segment", &path, e))?;
    let mut buf = MAGIC.to_vec();
    put_header(
        &mut buf,
        &Header {
            version: FORMAT_VERSION,
            segment: n,
            checkpoint: false,
            workers,
            per_shard,
        },
    );
    f.write_all(&buf)
        .and_then(|_| f.sync_all())
        .map_err(|e| ctx_err("cannot write event log segment", &path, e))?;
    sync_dir(dir).map_err(|e| ctx_err("cannot sync data directory", dir, e))?;
    Ok((f, buf.len() as u64))
}

/// The records of a segment: (kind, payload range).
pub(crate) type Spans = Vec<(u8, std::ops::Range<usize>)>;

/// What a scan of the data directory found, before the engine starts.
pub(crate) struct Found {
    /// (segment number, contents up to the last good record, record spans)
    pub(crate) segments: Vec<(u64, Vec<u8>, Spans)>,
    pub(crate) layout: Option<(u32, u32)>,
    /// Format version of the last segment (an older one is not appended to).
    pub(crate) last_version: u16,
}

pub(crate) fn open_dir(dir: &Path, stats: &JournalStats) -> io::Result<Found> {
    if dir.exists() && !dir.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "data directory {} exists and is not a directory",
                dir.display()
            ),
        ));
    }
    fs::create_dir_all(dir).map_err(|e| ctx_err("cannot create data directory", dir, e))?;
    // Prove the directory is writable now, not at the first event.
    let probe = dir.join(".knhk-write-probe");
    fs::write(&probe, b"ok")
        .and_then(|_| fs::remove_file(&probe))
        .map_err(|e| ctx_err("data directory is not writable:", dir, e))?;
    let mut segs = list_segments(dir).map_err(|e| ctx_err("cannot list", dir, e))?;
    // A checkpoint supersedes everything before it (left over when a compaction was cut
    // short after its rename).
    let mut first = 0;
    for (i, (_, path)) in segs.iter().enumerate() {
        let data = fs::read(path).map_err(|e| ctx_err("cannot read", path, e))?;
        let (recs, _) = scan(&data);
        if let Some((K_HEADER, r)) = recs.first().cloned() {
            if get_header(&data[r]).is_ok_and(|h| h.checkpoint) {
                first = i;
            }
        }
    }
    for (_, path) in segs.drain(..first) {
        fs::remove_file(&path).map_err(|e| ctx_err("cannot remove superseded", &path, e))?;
    }
    let count = segs.len();
    let mut found = Found {
        segments: Vec::new(),
        layout: None,
        last_version: FORMAT_VERSION,
    };
    for (i, (num, path)) in segs.into_iter().enumerate() {
        let mut data = fs::read(&path).map_err(|e| ctx_err("cannot read", &path, e))?;
        let (recs, damage) = scan(&data);
        let last = i + 1 == count;
        if let Some(d) = damage {
            if !last {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "event log segment {} is damaged at byte {} ({}) and is not the last \
                         segment: acknowledged events after it would be lost, so the server \
                         will not start; move the data directory aside to start empty",
                        path.display(),
                        d.offset,
                        d.reason
                    ),
                ));
            }
            let dropped = data.len() - d.offset;
            tracing::warn!(
                segment = %path.display(),
                offset = d.offset,
                bytes = dropped,
                reason = d.reason,
                "event log: torn or corrupt tail record detected; truncated, not replayed"
            );
            stats.corrupt_tails.fetch_add(1, Ordering::Relaxed);
            stats
                .truncated_bytes
                .fetch_add(dropped as u64, Ordering::Relaxed);
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| ctx_err("cannot open for truncation", &path, e))?;
            f.set_len(d.offset as u64)
                .and_then(|_| f.sync_all())
                .map_err(|e| ctx_err("cannot truncate", &path, e))?;
            data.truncate(d.offset);
        }
        let header = match recs.first() {
            Some((K_HEADER, r)) => get_header(&data[r.clone()]).ok(),
            _ => None,
        };
        let Some(h) = header else {
            if last {
                // Cut while being created: nothing in it was ever acknowledged.
                fs::remove_file(&path).map_err(|e| ctx_err("cannot remove", &path, e))?;
                continue;
            }
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("event log segment {} has no header", path.display()),
            ));
        };
        if !(OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&h.version) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "event log segment {} has format version {}; this knhk reads versions {} \
                     to {}: run the knhk release that wrote it (or move the data directory \
                     aside to start empty)",
                    path.display(),
                    h.version,
                    OLDEST_READABLE_VERSION,
                    FORMAT_VERSION
                ),
            ));
        }
        found.last_version = h.version;
        match found.layout {
            None => found.layout = Some((h.workers, h.per_shard)),
            Some(l) if l != (h.workers, h.per_shard) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "event log segment {} has layout {}x{} but earlier ones {}x{}",
                        path.display(),
                        h.workers,
                        h.per_shard,
                        l.0,
                        l.1
                    ),
                ))
            }
            Some(_) => {}
        }
        found.segments.push((num, data, recs));
    }
    Ok(found)
}
