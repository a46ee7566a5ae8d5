//! The journal's record encoding, for an event log that keeps records somewhere other than
//! segment files (the cluster's JetStream log: one frame of records per publish). A frame is a
//! run of framed records (`len | crc | kind | payload`, as in a segment) without the segment's
//! magic and header; the same encoders write it and the same replay reads it back, so both
//! logs hold one format and are checked by one set of replay rules.

use std::io;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use knhk_engine::engine::Engine;
use knhk_engine::workers::Job;
use knhk_engine::workflow::Workflow;

use crate::record::{get_workflow, put_batch, put_header, put_workflow, scan, Header};
use crate::segment::{Found, Spans};
use crate::{bad, replay, replay_workflow, FORMAT_VERSION, K_WORKFLOW, MAGIC};

/// Appends the logged ops of an executed `job` of `shard` (nothing when none succeeded);
/// returns the events encoded.
pub fn encode_job(buf: &mut Vec<u8>, shard: usize, job: &Job) -> u64 {
    put_batch(buf, shard, job)
}

/// Appends the registration record of `wf`, compiled from `model`.
pub fn encode_workflow(buf: &mut Vec<u8>, wf: &Workflow, model: &[u8]) {
    put_workflow(buf, wf, model);
}

/// The records of a frame, `(kind, payload range)`; an error names the first damaged record
/// (a frame is written whole or not at all, so any damage is corruption).
fn records(frame: &[u8]) -> io::Result<(Vec<u8>, Spans)> {
    let mut data = MAGIC.to_vec();
    data.extend_from_slice(frame);
    let (spans, damage) = scan(&data);
    if let Some(d) = damage {
        return Err(bad(format!(
            "frame damaged at byte {} ({})",
            d.offset.saturating_sub(MAGIC.len()),
            d.reason
        )));
    }
    Ok((data, spans))
}

/// The index a workflow record (one framed record) registers its workflow under, and its id.
pub fn workflow_record_key(record: &[u8]) -> io::Result<(u16, String)> {
    let (data, spans) = records(record)?;
    match spans.as_slice() {
        [(K_WORKFLOW, r)] => {
            let w = get_workflow(&data[r.clone()]).map_err(bad)?;
            Ok((w.index, w.id.to_string()))
        }
        _ => Err(bad("not a single workflow record".into())),
    }
}

/// Registers the workflow of a record written by [`encode_workflow`] in `engine`, at the index
/// the record names (the engine must hold exactly the workflows before it).
pub fn register_workflow_record(engine: &Engine, record: &[u8]) -> io::Result<()> {
    let (data, spans) = records(record)?;
    match spans.as_slice() {
        [(K_WORKFLOW, r)] => replay_workflow(engine, &data[r.clone()]).map_err(bad),
        _ => Err(bad("not a single workflow record".into())),
    }
}

/// Replays `frames` (each a run of records written by [`encode_job`], in log order) into
/// `engine`, which must hold the workflows they refer to: every result is checked against the
/// logged one exactly as the journal's replay checks it. Returns the ops replayed. Blocking.
pub fn replay_frames(engine: &Arc<Engine>, frames: &[&[u8]]) -> io::Result<u64> {
    let (workers, per_shard) = engine.layout();
    let mut data = MAGIC.to_vec();
    put_header(
        &mut data,
        &Header {
            version: FORMAT_VERSION,
            segment: 1,
            checkpoint: false,
            workers,
            per_shard,
        },
    );
    for (i, f) in frames.iter().enumerate() {
        records(f).map_err(|e| bad(format!("frame {i}: {e}")))?;
        data.extend_from_slice(f);
    }
    let (spans, _) = scan(&data);
    let found = Found {
        segments: vec![(1, data, spans)],
        layout: Some((workers, per_shard)),
        last_version: FORMAT_VERSION,
    };
    replay(engine, &found, &AtomicU64::new(0))
}
