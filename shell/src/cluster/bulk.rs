//! `SubmitEvents` in cluster mode: each batch of a caller's stream is split by partition; a
//! partition served here gets its share queued on its engine at once, another owner's share
//! goes out on one forwarded `SubmitEvents` stream per owner (kept for the caller's stream, so
//! shares reach an owner in batch order); the answers are put back in event order, one
//! response per batch, in batch order.
//!
//! A creation goes to a partition this node serves (round robin), or to any owner's partition
//! when it serves none. An event whose partition is changing hands, or whose forwarded share
//! got no answer, is answered UNAVAILABLE in its result: the forwarded ones may have taken
//! effect (as any call whose answer was lost), so a client reads the case before retrying.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Code, Request, Response, Status, Streaming};

use knhk_engine::ids::CaseId;

use super::router::{ClusterService, FORWARDED};
use crate::auth::Caller;
use crate::proto::{Event, EventOp, EventResult, SubmitEventsRequest, SubmitEventsResponse};

/// Batches in flight per caller stream (as in single-node mode).
const PIPELINE_DEPTH: usize = 64;

type Answer = Result<Vec<EventResult>, Status>;
/// A partition served here, the batch positions of its events, and the events.
type LocalShare = (Arc<super::Part>, Vec<usize>, Vec<Event>);
type BatchFuture = Pin<Box<dyn Future<Output = Result<SubmitEventsResponse, Status>> + Send>>;

/// One forwarded stream to an owner: shares go out in order and their answers come back in
/// the same order, each to the share's waiter.
struct OwnerStream {
    tx: mpsc::Sender<SubmitEventsRequest>,
    /// Waiters in send order; `closed` once the stream failed (its waiters were answered).
    waiting: Arc<Mutex<(bool, VecDeque<oneshot::Sender<Answer>>)>>,
}

impl OwnerStream {
    fn open(svc: &ClusterService, addr: &str, meta: &MetadataMap) -> Result<OwnerStream, Status> {
        let (tx, rx) = mpsc::channel(PIPELINE_DEPTH);
        let waiting: Arc<Mutex<(bool, VecDeque<oneshot::Sender<Answer>>)>> =
            Arc::new(Mutex::new((false, VecDeque::new())));
        let mut client = svc.peer(addr)?;
        let req = svc.forward(Request::from_parts(
            meta.clone(),
            tonic::Extensions::default(),
            ReceiverStream::new(rx),
        ));
        let w = waiting.clone();
        let addr = addr.to_string();
        tokio::spawn(async move {
            let fail = |s: Status| {
                let mut g = w.lock().unwrap_or_else(|p| p.into_inner());
                g.0 = true;
                for t in g.1.drain(..) {
                    let _ = t.send(Err(s.clone()));
                }
            };
            let mut answers = match client.submit_events(req).await {
                Ok(r) => r.into_inner(),
                Err(s) => return fail(s),
            };
            loop {
                match answers.message().await {
                    Ok(Some(r)) => {
                        let t = w.lock().unwrap_or_else(|p| p.into_inner()).1.pop_front();
                        if let Some(t) = t {
                            let _ = t.send(Ok(r.results));
                        }
                    }
                    Ok(None) => {
                        return fail(Status::unavailable(format!(
                            "the owner at {addr} ended the forwarded stream"
                        )))
                    }
                    Err(s) => return fail(s),
                }
            }
        });
        Ok(OwnerStream { tx, waiting })
    }

    /// Sends a share; its answer arrives on the returned receiver (an error when the stream
    /// failed before answering it).
    async fn send(&self, events: Vec<Event>) -> oneshot::Receiver<Answer> {
        let (t, r) = oneshot::channel();
        {
            let mut g = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            if g.0 {
                let _ = t.send(Err(Status::unavailable("the forwarded stream failed")));
                return r;
            }
            g.1.push_back(t);
        }
        // A failed send means the stream task ended: it answered every waiter, this one too.
        let _ = self.tx.send(SubmitEventsRequest { events }).await;
        r
    }

    fn failed(&self) -> bool {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).0 || self.tx.is_closed()
    }
}

fn refused(case_id: u64, code: Code, message: String) -> EventResult {
    EventResult {
        code: code as i32,
        message,
        case_id,
        state: 0,
        case_seq: 0,
    }
}

/// Serves a caller's `SubmitEvents` stream (see the module doc).
pub fn submit_events(
    svc: ClusterService,
    request: Request<Streaming<SubmitEventsRequest>>,
) -> Result<Response<super::router::BoxStream<SubmitEventsResponse>>, Status> {
    if !svc.node.lease.valid() {
        return Err(Status::unavailable(
            "this node's ownership lease is not valid; retry",
        ));
    }
    let caller = Caller::of(&request);
    let forwarded = request.metadata().contains_key(FORWARDED);
    // One audit record a message, by the node the caller reached (the owners' shares of a
    // forwarded stream are not recorded again).
    let audit = match (&svc.node.audit, forwarded) {
        (Some(log), false) => svc
            .node
            .catalog_service
            .audit_start(&request, "SubmitEvents")?
            .map(|base| (log.clone(), base)),
        _ => None,
    };
    let mut meta = request.metadata().clone();
    // The caller's token, for the shares forwarded to other owners (the auth layer moved it
    // out of the headers).
    if let Some(v) = request
        .extensions()
        .get::<crate::auth::ForwardCredential>()
        .and_then(|c| tonic::metadata::MetadataValue::try_from(c.0.as_bytes()).ok())
    {
        meta.insert("authorization", v);
    }
    let mut input = request.into_inner();
    let (work_tx, mut work_rx) = mpsc::channel::<BatchFuture>(PIPELINE_DEPTH);
    let (out_tx, out_rx) = mpsc::channel(PIPELINE_DEPTH);
    // Dispatcher: splits each batch and queues its shares, in batch order.
    tokio::spawn(async move {
        let mut owners: HashMap<String, OwnerStream> = HashMap::new();
        loop {
            let m = match input.message().await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(s) => {
                    let _ = work_tx.send(Box::pin(async move { Err(s) })).await;
                    break;
                }
            };
            // The caller's bulk budget is taken once, by the node the caller reached.
            if !forwarded {
                if let Err(t) = caller.admit_events(m.events.len()).await {
                    let results = m
                        .events
                        .iter()
                        .map(|e| refused(e.case_id, Code::ResourceExhausted, t.message.clone()))
                        .collect();
                    let done: BatchFuture =
                        Box::pin(async move { Ok(SubmitEventsResponse { results }) });
                    if work_tx.send(done).await.is_err() {
                        break;
                    }
                    continue;
                }
            }
            let batch = dispatch(
                &svc,
                m.events,
                &caller.namespace,
                forwarded,
                &meta,
                &mut owners,
            )
            .await;
            if work_tx.send(batch).await.is_err() {
                break;
            }
        }
    });
    // Writer: answers batches in order.
    tokio::spawn(async move {
        while let Some(batch) = work_rx.recv().await {
            let r = match (batch.await, &audit) {
                (Ok(answer), Some((log, base))) => {
                    let mut rec = base.clone();
                    rec.events = Some(answer.results.len() as u64);
                    rec.refused =
                        Some(answer.results.iter().filter(|e| e.code != 0).count() as u64);
                    match log.append(rec).await {
                        Ok(()) => Ok(answer),
                        Err(why) => Err(Status::unavailable(format!(
                            "the batch was executed but its audit record could not be written \
                             ({why}); the server refuses further changes"
                        ))),
                    }
                }
                (r, _) => r,
            };
            let end = r.is_err();
            if out_tx.send(r).await.is_err() || end {
                break;
            }
        }
    });
    Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
}

/// Splits one batch by partition, queues the local shares and sends the remote ones; the
/// future puts the answers back in event order.
async fn dispatch(
    svc: &ClusterService,
    events: Vec<Event>,
    namespace: &str,
    forwarded: bool,
    meta: &MetadataMap,
    owners: &mut HashMap<String, OwnerStream>,
) -> BatchFuture {
    // Read-your-writes, as for a unary CreateCase: a creation naming a workflow this node has
    // not applied yet waits (once per batch, bounded) for the workflow stream.
    let unknown = events.iter().any(|ev| {
        ev.op == EventOp::CreateCase as i32
            && svc
                .node
                .catalog_engine
                .workflow_in(namespace, &ev.workflow_id)
                .is_err()
    });
    if unknown {
        svc.node.catch_up_workflows(super::router::CATCH_UP).await;
    }
    let n = events.len();
    let mut results: Vec<Option<EventResult>> = vec![None; n];
    let partitions = svc.node.cfg.partitions;
    let served: Vec<u16> = svc
        .locals()
        .map(|l| l.iter().map(|p| p.partition).collect())
        .unwrap_or_default();
    let mut local: BTreeMap<u16, LocalShare> = BTreeMap::new();
    let mut remote: BTreeMap<String, (Vec<usize>, Vec<Event>)> = BTreeMap::new();
    for (i, ev) in events.into_iter().enumerate() {
        let p = if ev.op == EventOp::CreateCase as i32 {
            if !served.is_empty() {
                served[svc.next.fetch_add(1, Ordering::Relaxed) % served.len()]
            } else if forwarded {
                results[i] = Some(refused(
                    0,
                    Code::Unavailable,
                    "the node a creation was forwarded to serves no partition; retry".into(),
                ));
                continue;
            } else {
                let owned = svc.owned_partitions();
                if owned.is_empty() {
                    results[i] = Some(refused(
                        0,
                        Code::Unavailable,
                        "no partition has an owner yet (the cluster is starting); retry".into(),
                    ));
                    continue;
                }
                owned[svc.next.fetch_add(1, Ordering::Relaxed) % owned.len()]
            }
        } else {
            match CaseId::decode(ev.case_id) {
                Some(c) if c.partition < partitions => c.partition,
                _ => {
                    results[i] = Some(refused(
                        ev.case_id,
                        Code::NotFound,
                        format!("unknown case {}", ev.case_id),
                    ));
                    continue;
                }
            }
        };
        match svc.local(p) {
            Ok(Some(part)) => {
                let e = local
                    .entry(p)
                    .or_insert_with(|| (part, Vec::new(), Vec::new()));
                e.1.push(i);
                e.2.push(ev);
            }
            Ok(None) if forwarded => {
                results[i] = Some(refused(
                    ev.case_id,
                    Code::Unavailable,
                    format!("partition {p} is not served by the node it was forwarded to; retry"),
                ));
            }
            Ok(None) => match svc.owner_address(p) {
                Ok(addr) => {
                    let e = remote.entry(addr).or_default();
                    e.0.push(i);
                    e.1.push(ev);
                }
                Err(s) => {
                    results[i] = Some(refused(ev.case_id, s.code(), s.message().to_string()));
                }
            },
            Err(s) => results[i] = Some(refused(ev.case_id, s.code(), s.message().to_string())),
        }
    }
    let mut local_work = Vec::new();
    for (_, (part, positions, evs)) in local {
        local_work.push((positions, part.service.queue_batch(namespace, evs)));
    }
    let mut remote_work = Vec::new();
    for (addr, (positions, evs)) in remote {
        if owners.get(&addr).is_none_or(OwnerStream::failed) {
            match OwnerStream::open(svc, &addr, meta) {
                Ok(o) => {
                    owners.insert(addr.clone(), o);
                }
                Err(s) => {
                    for (&i, ev) in positions.iter().zip(&evs) {
                        results[i] = Some(refused(ev.case_id, s.code(), s.message().to_string()));
                    }
                    continue;
                }
            }
        }
        let ids: Vec<u64> = evs.iter().map(|e| e.case_id).collect();
        let Some(owner) = owners.get(&addr) else {
            continue;
        };
        let rx = owner.send(evs).await;
        remote_work.push((addr, positions, ids, rx));
    }
    Box::pin(async move {
        for (positions, fut) in local_work {
            for (i, r) in positions.into_iter().zip(fut.await) {
                results[i] = Some(r);
            }
        }
        for (addr, positions, ids, rx) in remote_work {
            match rx.await {
                Ok(Ok(answers)) if answers.len() == positions.len() => {
                    for (i, r) in positions.into_iter().zip(answers) {
                        results[i] = Some(r);
                    }
                }
                outcome => {
                    let why = match outcome {
                        Ok(Err(s)) => s.message().to_string(),
                        Ok(Ok(a)) => format!("{} answers for {} events", a.len(), positions.len()),
                        Err(_) => "the forwarded stream ended".into(),
                    };
                    for (i, id) in positions.into_iter().zip(ids) {
                        results[i] = Some(refused(
                            id,
                            Code::Unavailable,
                            format!(
                                "forwarded to the owner at {addr}, whose answer was lost ({why}); \
                                 the event may have taken effect: read the case before retrying"
                            ),
                        ));
                    }
                }
            }
        }
        let results = results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| refused(0, Code::Internal, "event left unanswered".into()))
            })
            .collect();
        Ok(SubmitEventsResponse { results })
    })
}
