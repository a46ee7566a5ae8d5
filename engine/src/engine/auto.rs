//! Tasks without work run themselves (issue 14 item 6): a silent task (a YAWL task without a
//! decomposition, a silent PNML transition, a synthesised start or end, the exit of a
//! flattened composite task) is fired by the engine, so a client drives only the tasks that
//! carry work.
//!
//! The engine fires them as ordinary `Fire` ops, each job submitted like a client's: the
//! journal logs them like any other op and replay re-runs them from the log (replay never
//! decides anything itself). The rule:
//!
//! - **Eager.** After every successful request on a case (creation, start, completion, fire,
//!   task cancellation), each enabled automatic task that is in no deferred choice (shares no
//!   marked input condition with another enabled task, [`Workflow::free_auto`]) is fired; again
//!   until none is left (at most [`MAX_ROUNDS`] rounds: a cycle of silent tasks alone never
//!   ends, and the engine stops there rather than spin).
//! - **Deferred choice.** An automatic task that shares a marked input with another enabled
//!   task is not fired eagerly: the client's next request decides. Starting or firing the
//!   working task takes that branch (the silent one is withdrawn, as in any deferred choice);
//!   naming a task that is not enabled but that a sequence of enabled automatic tasks would
//!   enable fires the shortest such sequence first (found with the kernel on a copy of the
//!   case, at most [`MAX_PATH`] tasks), then the request; naming the silent task fires it.
//!   So a process-mining trace, which has no events for silent transitions, can be submitted
//!   as it is, and a choice between "do A" and "skip A" goes the way the trace went.
//! - After a restart the engine settles every running case once ([`Engine::settle_all`]): a
//!   crash between a request and the automatic fires it caused loses none of them.
//!
//! A workflow registered with `manual_silent_tasks` keeps the old behaviour: the client fires
//! every task, silent or not.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use knhk_kernel::Case;

use super::*;
use crate::workers::SavedCase;

/// A boxed future borrowing the engine ([`JoinAll`] polls them together).
type Run<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Most rounds of automatic fires after one request.
pub const MAX_ROUNDS: usize = 64;
/// Longest sequence of automatic tasks fired to enable a requested task.
pub const MAX_PATH: usize = 8;
/// Most case states the search for such a sequence visits.
const MAX_SEARCH: usize = 512;

impl Engine {
    /// Fires the free automatic tasks of case `case_id` (in state `last`) until none is left;
    /// returns the case's last outcome.
    pub(super) async fn settle(
        &self,
        wf: &Workflow,
        shard: usize,
        slot: u32,
        case_id: u64,
        mut last: Outcome,
    ) -> Outcome {
        if !wf.settles() {
            return last;
        }
        for _ in 0..MAX_ROUNDS {
            if last.state != State::Running {
                break;
            }
            let free = wf.free_auto(last.marking, last.enabled);
            // composite tasks are started (their child case runs the work), not fired
            let start = self.startable_composites(wf, case_id, &last);
            if free | start == 0 {
                break;
            }
            let ops: Vec<Op> = bits(free)
                .map(|t| Op::new(OpKind::Fire, case_id, slot, t as u8))
                .chain(bits(start).map(|t| Op::new(OpKind::Start, case_id, slot, t as u8)))
                .collect();
            let Ok(job) = self.run(shard, Job::new(ops, Vec::new())).await else {
                break;
            };
            let mut progressed = false;
            for o in job.out.iter().filter(|o| o.status == Status::Ok) {
                last = *o;
                progressed = true;
            }
            if !progressed {
                break;
            }
        }
        if wf.has_subnet_cases() {
            self.reconcile(case_id).await;
        }
        last
    }

    /// The shortest sequence of enabled automatic tasks (at most [`MAX_PATH`]) whose firing
    /// enables task `t` of case `case_id`, found with the kernel on a saved copy of the case.
    async fn silent_path(
        &self,
        wf: &Workflow,
        shard: usize,
        slot: u32,
        case_id: u64,
        t: u8,
    ) -> Option<Vec<u8>> {
        let mut job = Job::new(vec![Op::new(OpKind::Save, case_id, slot, 0)], Vec::new());
        job.saved = vec![SavedCase::default()];
        let job = self.run(shard, job).await.ok()?;
        if job.out.first()?.status != Status::Ok {
            return None;
        }
        let case = Case::restore(&wf.net, &job.saved.first()?.bytes).ok()?;
        search(wf, case, t)
    }

    /// Runs one client op (with its register payload) on a case and then settles the case;
    /// returns the op's own outcome.
    /// When a start or fire is refused as not enabled and enabled automatic tasks would
    /// enable it, those are fired first (the deferred choice goes the client's way).
    pub(super) async fn op_settled(
        &self,
        wf: &Arc<Workflow>,
        shard: usize,
        slot: u32,
        op: Op,
        payload: Vec<[i64; REGISTERS]>,
        note: NoteSlot,
    ) -> Result<Outcome, EngineError> {
        // A start or fire refused as not enabled is tried again after the silent tasks that
        // enable it: that first outcome is not the call's.
        let retried = wf.auto != 0 && matches!(op.kind, OpKind::Start | OpKind::Fire);
        let (case_id, task) = (op.case_id, op.task);
        let mut job = Job::new(vec![op], payload.clone());
        let noted = wf.clone();
        job.on_executed = note.on_executed(case_id, move |j| {
            let r = op_result(j, case_id, &noted, task);
            let not_final = retried
                && j.out
                    .first()
                    .is_some_and(|o| o.status == Status::NotEnabled);
            (!not_final).then_some(r)
        });
        let job = self.run(shard, job).await?;
        let mut o = job.out.first().copied().unwrap_or_default();
        if o.status == Status::NotEnabled && retried {
            if let Some(path) = self.silent_path(wf, shard, slot, op.case_id, op.task).await {
                let mut ops: Vec<Op> = path
                    .iter()
                    .map(|&u| Op::new(OpKind::Fire, op.case_id, slot, u))
                    .collect();
                ops.push(op);
                let mut job = Job::new(ops, payload);
                let noted = wf.clone();
                job.on_executed =
                    note.on_executed(case_id, move |j| Some(op_result(j, case_id, &noted, task)));
                let job = self.run(shard, job).await?;
                o = job.out.last().copied().unwrap_or_default();
            }
        }
        if o.status != Status::Ok {
            return Err(status_error(&o, op.case_id, wf, op.task));
        }
        self.settle(wf, shard, slot, op.case_id, o).await;
        // The request's own outcome (a started instance's number is in it).
        Ok(o)
    }

    /// Settles every running case of a workflow with automatic tasks (after a restart: the
    /// fires a request caused may not all have been logged before the process ended). Returns
    /// the cases that moved.
    pub async fn settle_all(&self) -> u64 {
        let mut todo = Vec::new();
        for (shard, ctl) in self.shards.iter().enumerate() {
            let book = lock(&ctl.book);
            for (slot, s) in book.slots.iter().enumerate() {
                if s.id != 0 && s.live && s.last.state == State::Running {
                    todo.push((shard, slot as u32, s.id, s.workflow, s.last));
                }
            }
        }
        let mut moved = 0;
        // Sub-net cases that finished before their parent's task followed (a crash in
        // between) go first: a parent settled before them would give its busy task a new child.
        for ctl in &self.shards {
            let finished: Vec<u64> = lock(&ctl.book)
                .slots
                .iter()
                .filter(|s| {
                    s.id != 0
                        && s.live
                        && s.parent.is_some()
                        && matches!(s.last.state, State::Complete | State::Cancelled)
                })
                .map(|s| s.id)
                .collect();
            for id in finished {
                self.reconcile(id).await;
            }
        }
        for (shard, slot, id, w, last) in todo {
            let Some(wf) = self.workflow_at(w) else {
                continue;
            };
            if wf.free_auto(last.marking, last.enabled) == 0 && !wf.has_subnet_cases() {
                continue;
            }
            let after = self.settle(&wf, shard, slot, id, last).await;
            moved += u64::from(after.seq != last.seq);
        }
        moved
    }

    /// Whether a bulk event concerns a workflow with automatic tasks (it then runs through
    /// [`Engine::apply`], in order per case, after the rest of its batch).
    pub(super) fn is_auto_event(&self, namespace: &str, ev: &BatchEvent) -> bool {
        if !self.auto_tasks.load(Ordering::Relaxed) {
            return false;
        }
        let wf = match ev.op {
            Ok(OpKind::Create) => self.workflow_in(namespace, &ev.workflow_id).ok(),
            Ok(_) => self.case_workflow(ev.case_id).ok().map(|x| x.0),
            Err(_) => None,
        };
        wf.is_some_and(|w| w.settles())
    }

    /// One bulk event with the unary calls' semantics (automatic tasks settled after it).
    async fn apply(&self, namespace: &str, ev: BatchEvent) -> EventResult {
        let id = ev.case_id;
        if let Err(e) = ev.expect_seq() {
            return EventResult::refused(e, id);
        }
        let r = match ev.op {
            Ok(OpKind::Create) => self
                .create_case_in(namespace, &ev.workflow_id, &ev.data)
                .await
                .map(|v| (v.id, v.last)),
            Ok(kind) => {
                let task = match ev.task {
                    Some(TaskRef::Name(n)) => Ok(n),
                    Some(TaskRef::Index(i)) => self.case_workflow(id).map(|(wf, _, _)| {
                        wf.task_name(u8::try_from(i).unwrap_or(u8::MAX)).to_string()
                    }),
                    None if kind == OpKind::CancelCase => Ok(String::new()),
                    None => Err(EngineError::BadData {
                        reason: format!("event on case {id} names no task"),
                    }),
                };
                match task {
                    Ok(_) if kind == OpKind::CancelCase => {
                        self.cancel_case(id).await.map(|v| (v.id, v.last))
                    }
                    Ok(task) => self
                        .task_op(kind, id, &task, &ev.data, ev.branch_bits, ev.expected_seq)
                        .await
                        .map(|v| (v.id, v.last)),
                    Err(e) => Err(e),
                }
            }
            Err(op) => Err(EngineError::BadData {
                reason: format!("event op {op} is not a valid EventOp"),
            }),
        };
        match r {
            Ok((case_id, o)) => EventResult {
                case_id,
                error: None,
                state: Some((o.state, o.seq)),
            },
            Err(e) => EventResult::refused(e, id),
        }
    }

    /// Runs the events of a bulk batch that concern workflows with automatic tasks: in order
    /// within a case, the cases concurrently. Returns (position, result) pairs.
    pub(super) async fn apply_all(
        &self,
        namespace: &str,
        events: Vec<(u32, BatchEvent)>,
    ) -> Vec<(u32, EventResult)> {
        // Group by case, keeping order; every creation is a group of its own.
        let mut groups: Vec<Vec<(u32, BatchEvent)>> = Vec::new();
        let mut by_case: HashMap<u64, usize> = HashMap::new();
        for (pos, ev) in events {
            let creation = matches!(ev.op, Ok(OpKind::Create));
            match by_case.get(&ev.case_id) {
                Some(&g) if !creation => groups[g].push((pos, ev)),
                _ => {
                    if !creation {
                        by_case.insert(ev.case_id, groups.len());
                    }
                    groups.push(vec![(pos, ev)]);
                }
            }
        }
        let runs: Vec<Run<'_, Vec<(u32, EventResult)>>> = groups
            .into_iter()
            .map(|g| {
                Box::pin(async move {
                    let mut out = Vec::with_capacity(g.len());
                    for (pos, ev) in g {
                        out.push((pos, self.apply(namespace, ev).await));
                    }
                    out
                }) as Run<'_, _>
            })
            .collect();
        JoinAll::new(runs).await.into_iter().flatten().collect()
    }
}

/// Breadth-first search over firings of enabled automatic tasks from `case` for a state where
/// task `t` is enabled; the kernel decides every step.
fn search(wf: &Workflow, case: Case, t: u8) -> Option<Vec<u8>> {
    let target = 1u64.checked_shl(u32::from(t))?;
    let net = &*wf.net;
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    seen.insert((case.marking(), case.busy()));
    let mut todo: VecDeque<(Case, Vec<u8>)> = VecDeque::from([(case, Vec::new())]);
    while let Some((c, path)) = todo.pop_front() {
        if path.len() >= MAX_PATH {
            continue;
        }
        for u in bits(net.enabled(&c) & wf.auto) {
            let mut next = c;
            if net.fire(&mut next, u as u32).is_err() {
                continue;
            }
            let mut p = path.clone();
            p.push(u as u8);
            if net.enabled(&next) & target != 0 {
                return Some(p);
            }
            if seen.len() < MAX_SEARCH && seen.insert((next.marking(), next.busy())) {
                todo.push_back((next, p));
            }
        }
    }
    None
}

/// Polls futures together until all are ready (the engine has no `futures` dependency).
struct JoinAll<'a, T> {
    futs: Vec<Option<Run<'a, T>>>,
    out: Vec<Option<T>>,
}

impl<'a, T> JoinAll<'a, T> {
    fn new(futs: Vec<Run<'a, T>>) -> Self {
        let out = futs.iter().map(|_| None).collect();
        JoinAll {
            futs: futs.into_iter().map(Some).collect(),
            out,
        }
    }
}

impl<T: Unpin> Future for JoinAll<'_, T> {
    type Output = Vec<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Vec<T>> {
        // Every field is Unpin (boxed futures, options): no pinning projection needed.
        let this = self.get_mut();
        let mut pending = false;
        for (f, o) in this.futs.iter_mut().zip(this.out.iter_mut()) {
            if let Some(fut) = f {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        *o = Some(v);
                        *f = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(this.out.iter_mut().filter_map(Option::take).collect())
        }
    }
}
