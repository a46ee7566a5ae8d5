//! Composite tasks as sub-net cases (issue 13 item 3): a composite task that the importer did
//! not flatten ([`knhk_import::ir::Task::subnet`]) runs its decomposition as a child case of
//! the sub-net's own workflow ([`Workflow::child_workflow`]).
//!
//! - **Start.** The engine starts a composite task once it is enabled and in no deferred choice
//!   (a client may also start it, deciding such a choice). For each busy composite task without
//!   a current child, the engine creates one: a Create op carrying the parent case and task
//!   ([`Op::parent`]), logged with it, so a replay rebuilds the link; checkpoints save it with
//!   the child ([`SavedCase::parent`](crate::workers::SavedCase)).
//! - **Completion.** When the child completes, the engine completes the parent's task (its split
//!   decided by the parent's own guards); a child cancelled on its own cancels the parent's
//!   task. A client cannot complete or fire a composite task itself.
//! - **Cancellation.** When the parent's task stops being busy for any other reason (the task,
//!   a cancellation region or the whole case cancelled), its running child is cancelled, and
//!   the child's own children with it.
//! - **Which child is current.** A child belongs to the busy episode of its parent's task that
//!   it was created in: it is current while the task is busy and it was created no earlier than
//!   the task's last start in the parent's history. A child of an earlier episode (a loop
//!   started the task again) never completes the new one. Completions of the parent's task carry
//!   the parent's sequence number as read, so a parent that moved in between refuses them and
//!   the engine looks again.
//! - **Restart.** [`Engine::settle_all`] reconciles every parent after a replay: a child that
//!   completed before the crash completes its parent's task, a busy composite task whose child
//!   was never created gets one, a child whose parent's task is gone is cancelled.
//! - **Depth.** Sub-net cases nest at most [`MAX_SUBNET_DEPTH`] deep (a recursive net, WCP-22,
//!   stops there): the engine does not start a composite task of a case that deep, and a client
//!   start of one is refused.
//!
//! Children live in the parent's engine (in cluster mode, the parent's partition), on any
//! shard. Data mappings between parent and child are not executed (noted at import): a child
//! starts with its net's initial values.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use super::*;

/// Deepest nesting of sub-net cases (the root case is depth 0).
pub const MAX_SUBNET_DEPTH: usize = 16;

/// Sub-net cases by parent: (composite task, child id), in creation order. Kept by the reply
/// threads (every logged or restored creation of a child links it) and pruned by the engine
/// once a child is no longer current.
#[derive(Debug, Default)]
pub(crate) struct Children {
    map: Mutex<HashMap<u64, Vec<(u8, u64)>>>,
}

impl Children {
    pub(crate) fn link(&self, parent: u64, task: u8, child: u64) {
        let mut m = lock(&self.map);
        let v = m.entry(parent).or_default();
        if !v.iter().any(|&(_, c)| c == child) {
            v.push((task, child));
        }
    }

    pub(crate) fn unlink(&self, parent: u64, child: u64) {
        let mut m = lock(&self.map);
        if let Some(v) = m.get_mut(&parent) {
            v.retain(|&(_, c)| c != child);
            if v.is_empty() {
                m.remove(&parent);
            }
        }
    }

    pub(crate) fn of(&self, parent: u64) -> Vec<(u8, u64)> {
        lock(&self.map).get(&parent).cloned().unwrap_or_default()
    }
}

/// What the book knows of a case, for these decisions.
#[derive(Debug, Clone, Copy)]
struct Seen {
    workflow: u16,
    shard: usize,
    slot: u32,
    last: Outcome,
    created_ns: u64,
    parent: Option<(u64, u8)>,
}

type Boxed<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Most passes of one reconciliation (each pass acts on what it read; a parent that moved in
/// between is read again).
const MAX_PASSES: usize = 8;

impl Engine {
    fn seen(&self, case_id: u64) -> Option<Seen> {
        let (shard, slot) = self.locate(case_id)?;
        let book = lock(&self.shards[shard].book);
        let s = book.slots.get(slot as usize)?;
        (s.id == case_id && s.live).then_some(Seen {
            workflow: s.workflow,
            shard,
            slot,
            last: s.last,
            created_ns: s.created_ns,
            parent: s.parent,
        })
    }

    /// When task `t` of case `case_id` last started (its history's last start event).
    fn last_start_ns(&self, case_id: u64, t: u8) -> Option<u64> {
        let (shard, slot) = self.locate(case_id)?;
        let book = lock(&self.shards[shard].book);
        let s = book.slots.get(slot as usize).filter(|s| s.id == case_id)?;
        s.history
            .iter()
            .rev()
            .find(|h| h.task == t && h.lifecycle == Lifecycle::Start)
            .map(|h| h.time_ns)
    }

    /// How deep case `case_id` is nested (0: not a sub-net case).
    pub fn subnet_depth(&self, case_id: u64) -> usize {
        let mut depth = 0;
        let mut at = case_id;
        while let Some((parent, _)) = self.seen(at).and_then(|s| s.parent) {
            depth += 1;
            if depth > MAX_SUBNET_DEPTH {
                break;
            }
            at = parent;
        }
        depth
    }

    /// The sub-net cases of `case_id` the engine still links to it: (task, child).
    pub fn children_of(&self, case_id: u64) -> Vec<(u8, u64)> {
        self.children.of(case_id)
    }

    /// Whether child `child` (created at `created_ns`) belongs to the busy episode of task `t`
    /// of the parent as `parent` shows it.
    fn is_current(&self, parent_id: u64, parent: &Outcome, t: u8, created_ns: u64) -> bool {
        parent.state == State::Running
            && t < 64
            && parent.busy & (1u64 << t) != 0
            && self
                .last_start_ns(parent_id, t)
                .is_none_or(|started| created_ns >= started)
    }

    /// Composite tasks of the case (as `last` shows it) that the engine may start: free ones,
    /// while the case is not nested too deep.
    pub(super) fn startable_composites(&self, wf: &Workflow, case_id: u64, last: &Outcome) -> u64 {
        if wf.composite == 0 {
            return 0;
        }
        let free = wf.free_composite(last.marking, last.enabled);
        if free != 0 && self.subnet_depth(case_id) >= MAX_SUBNET_DEPTH {
            tracing::warn!(
                case = case_id,
                workflow = %wf.id,
                "composite tasks not started: sub-net cases nest {MAX_SUBNET_DEPTH} deep already"
            );
            return 0;
        }
        free
    }

    /// Refuses a client's op on a composite task that only the engine may do: completing or
    /// firing it (its child's completion does), or starting it past the depth limit.
    pub(super) fn refuse_composite_op(
        &self,
        wf: &Workflow,
        case_id: u64,
        t: u8,
        kind: OpKind,
    ) -> Result<(), EngineError> {
        if t >= 64 || wf.composite & (1u64 << t) == 0 {
            return Ok(());
        }
        let name = wf.task_name(t);
        match kind {
            OpKind::Complete | OpKind::Fire | OpKind::CompleteInstance => {
                Err(EngineError::Precondition(format!(
                    "task '{name}' runs its sub-net as a child case: it completes when that case \
                     completes (cancel the task to withdraw it)"
                )))
            }
            OpKind::Start if self.subnet_depth(case_id) >= MAX_SUBNET_DEPTH => {
                Err(EngineError::Precondition(format!(
                    "task '{name}' would start a sub-net case nested deeper than \
                     {MAX_SUBNET_DEPTH} levels"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Brings the sub-net cases of case `case_id` in line with it, and when the case is itself
    /// a sub-net case, its parent with it (see the module's rules). Called after every request
    /// on a case of a workflow that [`Workflow::settles`].
    pub(super) fn reconcile(&self, case_id: u64) -> Boxed<'_> {
        Box::pin(async move {
            let Some(me) = self.seen(case_id) else {
                return;
            };
            self.reconcile_parent(case_id).await;
            if let (Some((parent, _)), State::Complete | State::Cancelled) =
                (me.parent, me.last.state)
            {
                self.reconcile_parent(parent).await;
            }
        })
    }

    /// The parent side: stale children cancelled, a current finished child's outcome applied
    /// to the task, a child created for each busy composite task without one.
    fn reconcile_parent(&self, parent_id: u64) -> Boxed<'_> {
        Box::pin(async move {
            for _ in 0..MAX_PASSES {
                let Some(p) = self.seen(parent_id) else {
                    return;
                };
                let Some(wf) = self.workflow_at(p.workflow) else {
                    return;
                };
                let mut has_child = 0u64;
                let mut again = false;
                for (t, child) in self.children.of(parent_id) {
                    let c = self.seen(child);
                    let current = c.is_some_and(|c| {
                        self.is_current(parent_id, &p.last, t, c.created_ns)
                            && c.parent == Some((parent_id, t))
                    });
                    let Some(c) = c.filter(|_| current) else {
                        // not current (or gone): cancel it if it still runs, forget it
                        if let Some(c) = c.filter(|c| {
                            matches!(c.last.state, State::Running | State::Deadlocked)
                                && c.parent == Some((parent_id, t))
                        }) {
                            self.cancel_subnet_case(child, c).await;
                        }
                        self.children.unlink(parent_id, child);
                        continue;
                    };
                    match c.last.state {
                        State::Running | State::Deadlocked => has_child |= 1u64 << t,
                        State::Complete | State::Cancelled => {
                            let kind = if c.last.state == State::Complete {
                                OpKind::Complete
                            } else {
                                OpKind::CancelTask
                            };
                            let mut op = Op::new(kind, parent_id, p.slot, t);
                            op.flags |= OP_EXPECT_SEQ;
                            op.expect_seq = p.last.seq as u32;
                            let out = self
                                .run(p.shard, Job::new(vec![op], Vec::new()))
                                .await
                                .map(|job| job.out.first().copied().unwrap_or_default());
                            match out {
                                Ok(o) if o.status == Status::Ok => {
                                    self.children.unlink(parent_id, child);
                                    self.settle(&wf, p.shard, p.slot, parent_id, o).await;
                                }
                                // the parent moved since it was read: read it again
                                Ok(o) if o.status == Status::SeqMismatch => {}
                                Ok(o) => {
                                    let e = status_error(&o, parent_id, &wf, t);
                                    tracing::warn!(parent = parent_id, child, error = %e,
                                        "sub-net case finished; its parent's task could not \
                                         follow");
                                    self.children.unlink(parent_id, child);
                                }
                                Err(e) => {
                                    tracing::warn!(parent = parent_id, child, error = %e,
                                        "sub-net case finished; its parent's task could not \
                                         follow (retried after a restart)");
                                    return;
                                }
                            }
                            // the parent moved (or was read stale): read it again
                            again = true;
                            break;
                        }
                    }
                }
                if again {
                    continue;
                }
                if p.last.state != State::Running {
                    return;
                }
                let missing = p.last.busy & wf.composite & !has_child;
                for t in bits(missing) {
                    self.create_subnet_case(&wf, parent_id, t as u8).await;
                }
                return;
            }
        })
    }

    /// Cancels sub-net case `child` (its parent's task is gone), and its own children.
    async fn cancel_subnet_case(&self, child: u64, c: Seen) {
        let op = Op::new(OpKind::CancelCase, child, c.slot, 0);
        match self.run(c.shard, Job::new(vec![op], Vec::new())).await {
            Ok(job) => {
                if job.out.first().is_some_and(|o| o.status == Status::Ok) {
                    self.reconcile_parent(child).await;
                }
            }
            Err(e) => {
                tracing::warn!(case = child, error = %e, "sub-net case not cancelled");
            }
        }
    }

    /// Creates the child case of composite task `t` of case `parent_id` (unless one is being
    /// created, or exists by now), then settles it.
    async fn create_subnet_case(&self, wf: &Workflow, parent_id: u64, t: u8) {
        let Some(sub) = wf
            .child_workflow
            .get(usize::from(t))
            .copied()
            .flatten()
            .and_then(|i| self.workflow_at(i))
        else {
            return;
        };
        if !lock(&self.creating).insert((parent_id, t)) {
            return;
        }
        // Looked at again under the claim: a concurrent reconciliation may have made it.
        let exists = self.children.of(parent_id).iter().any(|&(task, c)| {
            task == t
                && self.seen(c).is_some_and(|c| {
                    matches!(c.last.state, State::Running | State::Deadlocked)
                        && self
                            .seen(parent_id)
                            .is_some_and(|p| self.is_current(parent_id, &p.last, t, c.created_ns))
                })
        });
        let made = if exists {
            None
        } else {
            match self
                .create_of(
                    &sub,
                    0,
                    sub.initial_regs,
                    Some((parent_id, t)),
                    NoteSlot::default(),
                )
                .await
            {
                Ok(x) => Some(x),
                Err(e) => {
                    tracing::warn!(parent = parent_id, task = %wf.task_name(t), error = %e,
                        "sub-net case not created; the composite task stays busy until a \
                         restart or a later request on the case retries");
                    None
                }
            }
        };
        lock(&self.creating).remove(&(parent_id, t));
        if let Some((shard, slot, id, o)) = made {
            sub.cases_created.fetch_add(1, Ordering::Relaxed);
            self.settle(&sub, shard, slot, id, o).await;
        }
    }
}

impl Engine {
    /// The name of task `t` of case `case_id`'s workflow (`#t` when the case is gone).
    pub(crate) fn task_name_of(&self, case_id: u64, t: u8) -> String {
        self.seen(case_id)
            .and_then(|s| self.workflow_at(s.workflow))
            .map_or_else(|| format!("#{t}"), |wf| wf.task_name(t).to_string())
    }
}
