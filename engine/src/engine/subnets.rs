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

use knhk_kernel::InstanceState;

use super::*;
use crate::workers::ParentLink;

/// Deepest nesting of sub-net cases (the root case is depth 0).
pub const MAX_SUBNET_DEPTH: usize = 16;

/// Sub-net cases by parent: (composite task, instance, child id), in creation order. Kept by the
/// reply threads (every logged or restored creation of a child links it) and pruned by the
/// engine once a child is no longer current.
#[derive(Debug, Default)]
pub(crate) struct Children {
    map: Mutex<HashMap<u64, Vec<ChildEntry>>>,
}

/// One child of a parent: (composite task, instance or [`NO_INSTANCE`], child case).
pub(crate) type ChildEntry = (u8, u32, u64);

impl Children {
    pub(crate) fn link(&self, link: ParentLink, child: u64) {
        let mut m = lock(&self.map);
        let v = m.entry(link.case).or_default();
        if !v.iter().any(|&(_, _, c)| c == child) {
            v.push((link.task, link.instance, child));
        }
    }

    pub(crate) fn unlink(&self, parent: u64, child: u64) {
        let mut m = lock(&self.map);
        if let Some(v) = m.get_mut(&parent) {
            v.retain(|&(_, _, c)| c != child);
            if v.is_empty() {
                m.remove(&parent);
            }
        }
    }

    pub(crate) fn of(&self, parent: u64) -> Vec<ChildEntry> {
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
    parent: Option<ParentLink>,
}

type Boxed<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// Most passes of one reconciliation (each pass acts on what it read; a parent that moved in
/// between is read again).
const MAX_PASSES: usize = 8;

/// Whether instance `instance` of task `t` (or the task itself, for [`NO_INSTANCE`]) is
/// started in the case as `o` shows it.
fn started(o: &Outcome, t: u8, instance: u32) -> bool {
    let busy = o.state == State::Running && t < 64 && o.busy & (1u64 << t) != 0;
    if instance == NO_INSTANCE {
        return busy;
    }
    busy && o
        .instances(t)
        .is_some_and(|i| i.state(instance) == InstanceState::Started)
}

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

    /// When task `t` (its instance `instance`) of case `case_id` last started (its history's
    /// last such start event).
    fn last_start_ns(&self, case_id: u64, t: u8, instance: u32) -> Option<u64> {
        let (shard, slot) = self.locate(case_id)?;
        let book = lock(&self.shards[shard].book);
        let s = book.slots.get(slot as usize).filter(|s| s.id == case_id)?;
        s.history
            .iter()
            .rev()
            .find(|h| h.task == t && h.instance == instance && h.lifecycle == Lifecycle::Start)
            .map(|h| h.time_ns)
    }

    /// How deep case `case_id` is nested (0: not a sub-net case).
    pub fn subnet_depth(&self, case_id: u64) -> usize {
        let mut depth = 0;
        let mut at = case_id;
        while let Some(link) = self.seen(at).and_then(|s| s.parent) {
            depth += 1;
            if depth > MAX_SUBNET_DEPTH {
                break;
            }
            at = link.case;
        }
        depth
    }

    /// Whether a child linked by `link` and created at `created_ns` belongs to the current
    /// start of its task (instance) in the parent as `parent` shows it.
    fn is_current(&self, link: ParentLink, parent: &Outcome, created_ns: u64) -> bool {
        started(parent, link.task, link.instance)
            && self
                .last_start_ns(link.case, link.task, link.instance)
                .is_none_or(|at| created_ns >= at)
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
            OpKind::Start | OpKind::StartInstance
                if self.subnet_depth(case_id) >= MAX_SUBNET_DEPTH =>
            {
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
            if let (Some(link), State::Complete | State::Cancelled) = (me.parent, me.last.state) {
                self.reconcile_parent(link.case).await;
            }
        })
    }

    /// Runs one op on parent `p` as read (refused if it moved since: [`OP_EXPECT_SEQ`]) and
    /// settles it; None when it could not run at all.
    async fn parent_op(&self, wf: &Workflow, id: u64, p: &Seen, mut op: Op) -> Option<Outcome> {
        op.flags |= OP_EXPECT_SEQ;
        op.expect_seq = p.last.seq as u32;
        let o = match self.run(p.shard, Job::new(vec![op], Vec::new())).await {
            Ok(job) => job.out.first().copied().unwrap_or_default(),
            Err(e) => {
                tracing::warn!(parent = id, error = %e,
                    "sub-net case: its parent could not follow (retried after a restart)");
                return None;
            }
        };
        if o.status == Status::Ok {
            self.settle(wf, p.shard, p.slot, id, o).await;
        }
        Some(o)
    }

    /// The parent side: stale children cancelled, a current finished child's outcome applied
    /// to its task (instance), instances of a multiple-instance composite task started, a
    /// child created for each started task (instance) without one.
    fn reconcile_parent(&self, parent_id: u64) -> Boxed<'_> {
        Box::pin(async move {
            for _ in 0..MAX_PASSES {
                let Some(p) = self.seen(parent_id) else {
                    return;
                };
                let Some(wf) = self.workflow_at(p.workflow) else {
                    return;
                };
                let mut has_child: Vec<(u8, u32)> = Vec::new();
                let mut again = false;
                for (t, instance, child) in self.children.of(parent_id) {
                    let link = ParentLink {
                        case: parent_id,
                        task: t,
                        instance,
                    };
                    let c = self.seen(child).filter(|c| c.parent == Some(link));
                    let Some(c) = c.filter(|c| self.is_current(link, &p.last, c.created_ns)) else {
                        // not current (or gone): cancel it if it still runs, forget it
                        if let Some(c) =
                            c.filter(|c| matches!(c.last.state, State::Running | State::Deadlocked))
                        {
                            self.cancel_subnet_case(child, c).await;
                        }
                        self.children.unlink(parent_id, child);
                        continue;
                    };
                    match c.last.state {
                        State::Running | State::Deadlocked => has_child.push((t, instance)),
                        State::Complete | State::Cancelled => {
                            // a cancelled child withdraws its task (all of a multiple-instance
                            // task's instances: one of them can no longer complete)
                            let mut op = match (c.last.state, instance) {
                                (State::Complete, NO_INSTANCE) => {
                                    Op::new(OpKind::Complete, parent_id, p.slot, t)
                                }
                                (State::Complete, _) => {
                                    Op::new(OpKind::CompleteInstance, parent_id, p.slot, t)
                                }
                                _ => Op::new(OpKind::CancelTask, parent_id, p.slot, t),
                            };
                            op.instance = instance;
                            let Some(o) = self.parent_op(&wf, parent_id, &p, op).await else {
                                return;
                            };
                            match o.status {
                                Status::Ok => self.children.unlink(parent_id, child),
                                // the parent moved since it was read: read it again
                                Status::SeqMismatch => {}
                                _ => {
                                    let e = status_error(&o, parent_id, &wf, t);
                                    tracing::warn!(parent = parent_id, child, error = %e,
                                        "sub-net case finished; its parent's task could not \
                                         follow");
                                    self.children.unlink(parent_id, child);
                                }
                            }
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
                for t in bits(p.last.busy & wf.composite) {
                    let t = t as u8;
                    let Some(inst) = p.last.instances(t) else {
                        if !has_child.contains(&(t, NO_INSTANCE)) {
                            self.create_subnet_case(&wf, parent_id, t, NO_INSTANCE)
                                .await;
                        }
                        continue;
                    };
                    // a multiple-instance composite task: each created instance is started
                    // (as the window allows) and runs a child of its own
                    let inst = *inst;
                    for (i, state) in inst.iter() {
                        match state {
                            InstanceState::Created => {
                                let mut op = Op::new(OpKind::StartInstance, parent_id, p.slot, t);
                                op.instance = i;
                                match self.parent_op(&wf, parent_id, &p, op).await {
                                    Some(o) if o.status == Status::Ok => {
                                        again = true;
                                        break;
                                    }
                                    // the window is full (or the parent moved): later
                                    _ => break,
                                }
                            }
                            InstanceState::Started if !has_child.contains(&(t, i)) => {
                                self.create_subnet_case(&wf, parent_id, t, i).await;
                            }
                            _ => {}
                        }
                    }
                    if again {
                        break;
                    }
                }
                if !again {
                    return;
                }
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

    /// Creates the child case of composite task `t` (instance `instance`) of case `parent_id`
    /// (unless one is being created, or exists by now), then settles it.
    async fn create_subnet_case(&self, wf: &Workflow, parent_id: u64, t: u8, instance: u32) {
        let Some(sub) = wf
            .child_workflow
            .get(usize::from(t))
            .copied()
            .flatten()
            .and_then(|i| self.workflow_at(i))
        else {
            return;
        };
        let link = ParentLink {
            case: parent_id,
            task: t,
            instance,
        };
        if !lock(&self.creating).insert(link) {
            return;
        }
        // Looked at again under the claim: a concurrent reconciliation may have made it.
        let exists = self.children.of(parent_id).iter().any(|&(task, i, c)| {
            (task, i) == (t, instance)
                && self.seen(c).is_some_and(|c| {
                    matches!(c.last.state, State::Running | State::Deadlocked)
                        && self
                            .seen(parent_id)
                            .is_some_and(|p| self.is_current(link, &p.last, c.created_ns))
                })
        });
        let made = if exists {
            None
        } else {
            match self
                .create_of(&sub, 0, sub.initial_regs, Some(link), NoteSlot::default())
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
        lock(&self.creating).remove(&link);
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
