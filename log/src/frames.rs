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

use crate::record::{
    get_delete, get_retire, get_workflow, put_batch, put_delete, put_header, put_retire,
    put_workflow, scan, Header,
};
use crate::segment::{Found, Spans};
use crate::{bad, replay, replay_workflow, FORMAT_VERSION, K_DELETE, K_RETIRE, K_WORKFLOW, MAGIC};

/// Appends the logged ops of an executed `job` of `shard` (nothing when none succeeded);
/// returns the events encoded.
pub fn encode_job(buf: &mut Vec<u8>, shard: usize, job: &Job) -> u64 {
    put_batch(buf, shard, job)
}

/// Appends the registration record of `wf`, compiled from `model`.
pub fn encode_workflow(buf: &mut Vec<u8>, wf: &Workflow, model: &[u8]) {
    put_workflow(buf, wf, model);
}

/// Appends the retirement record of `wf` (one record per version, as the journal writes it).
pub fn encode_retire(buf: &mut Vec<u8>, wf: &Workflow, at_ns: u64) {
    put_retire(buf, wf.index, at_ns);
}

/// Appends the deletion record of the version `wf` (with its history when
/// `wf.history_deleted` is set), as the journal writes it.
pub fn encode_delete(buf: &mut Vec<u8>, wf: &Workflow, at_ns: u64) {
    put_delete(
        buf,
        wf.index,
        at_ns,
        wf.history_deleted
            .load(std::sync::atomic::Ordering::Acquire),
    );
}

/// What one catalog record (a single framed record of the cluster's workflow stream) is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogRecord {
    /// A registration: the index its workflow takes, and its id.
    Workflow { index: u16, id: String },
    /// The retirement of the workflow at `index`.
    Retire { index: u16 },
    /// The deletion of the version at `index`, with its finished cases when `with_history`.
    Delete { index: u16, with_history: bool },
}

/// Reads a catalog record.
pub fn catalog_record(record: &[u8]) -> io::Result<CatalogRecord> {
    let (data, spans) = records(record)?;
    match spans.as_slice() {
        [(K_WORKFLOW, r)] => {
            let w = get_workflow(&data[r.clone()]).map_err(bad)?;
            Ok(CatalogRecord::Workflow {
                index: w.index,
                id: w.id.to_string(),
            })
        }
        [(K_RETIRE, r)] => Ok(CatalogRecord::Retire {
            index: get_retire(&data[r.clone()]).map_err(bad)?.0,
        }),
        [(K_DELETE, r)] => {
            let (index, _, with_history) = get_delete(&data[r.clone()]).map_err(bad)?;
            Ok(CatalogRecord::Delete {
                index,
                with_history,
            })
        }
        _ => Err(bad(
            "not a single workflow, retirement or deletion record".into()
        )),
    }
}

/// Applies a catalog record to `engine`: registers a workflow (at the index the record names:
/// the engine must hold exactly the workflows before it), marks one retired, or marks a
/// version deleted and, with its history, removes its finished cases from the engine
/// (idempotent; cases replayed later come back: [`Engine::purge_deleted_histories`] after a
/// replay removes them again).
pub fn apply_catalog_record(engine: &Engine, record: &[u8]) -> io::Result<()> {
    match catalog_record(record)? {
        CatalogRecord::Workflow { .. } => register_workflow_record(engine, record),
        CatalogRecord::Retire { index } => engine.mark_retired(index).map_err(bad_engine),
        CatalogRecord::Delete {
            index,
            with_history,
        } => {
            engine
                .mark_deleted(index, with_history)
                .map_err(bad_engine)?;
            if let (true, Some(wf)) = (with_history, engine.workflow_at(index)) {
                engine.purge_deleted_history(&wf).map_err(bad_engine)?;
            }
            Ok(())
        }
    }
}

fn bad_engine(e: knhk_engine::EngineError) -> io::Error {
    bad(e.to_string())
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
