//! Task timers (issue 14 item 3): YAWL timer tasks and the JSON form's deadlines.
//!
//! A timer lives in the engine, not the kernel. Its state is derived from the case's ops, in
//! the order the shard's reply thread records them, so it is exactly as durable as the ops:
//!
//! - **Armed** when its trigger rises: an `OnEnabled` timer when the task becomes enabled (it
//!   keeps running once the task is started), an `OnExecuting` timer when the task starts. The
//!   deadline is the time of the op that armed it (the logged batch time, so a replay computes
//!   the same deadline) plus the duration (calendar months first, then the fixed part), a fixed
//!   expiry, or the milliseconds an integer variable holds then. A task enabled or started
//!   again (a loop) gets a new timer.
//! - **Cancelled** when the trigger falls: the task completes, is withdrawn or aborted, the case
//!   ends.
//! - **Fired** by the engine's timer service at the deadline, as an ordinary op (logged like a
//!   client's, so a replay re-runs it and never decides anything itself): a `Fire` of an enabled
//!   task (YAWL's skip: it completes without being started; events `autoskip`) or a `Complete`
//!   of a started one (events `complete`), flagged [`OP_TIMER`]. The op carries the case's
//!   sequence number as the service last saw it ([`OP_EXPECT_SEQ`]): if anything happened to
//!   the case in between, the worker refuses it and the service looks again, so a timer made
//!   stale by the task completing first is never applied.
//!
//! Checkpoints carry each case's armed timers ([`SavedCase::timers`]); after a restart the
//! service starts once the log is replayed ([`Engine::start_timers`]) and fires every timer
//! whose deadline passed while the process was down, once.

use std::collections::{BTreeSet, HashMap};

use knhk_import::ir::{Timer, TimerTrigger, TimerWhen};

use super::*;
use crate::workers::OP_TIMER;

/// An armed timer of one case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArmedTimer {
    pub task: u8,
    /// Expiry, ns since the Unix epoch.
    pub deadline_ns: u64,
}

/// Timer counters (`/metrics`).
#[derive(Debug, Default)]
pub struct TimerStats {
    /// Timers armed (a replay counts again what it re-arms).
    pub armed: AtomicU64,
    /// Timers cancelled before expiry (their task completed, was withdrawn, the case ended).
    pub cancelled: AtomicU64,
    /// Expired timers that skipped an enabled task.
    pub skipped: AtomicU64,
    /// Expired timers that completed a started task.
    pub completed: AtomicU64,
    /// Fire attempts refused because the case moved first (the service looked again).
    pub raced: AtomicU64,
    /// Fires that failed (the op was refused, the log failed): retried a second later.
    pub failed: AtomicU64,
}

/// One workflow's timers, by task index (None: the task has none).
type TaskTimers = Arc<Vec<Option<Timer>>>;

/// Key of a scheduled timer: (shard, slot, task).
type Key = (usize, u32, u8);

/// What the service schedules: every armed timer of the engine, by deadline.
#[derive(Default)]
struct Schedule {
    /// Key → (deadline, case id).
    by_key: HashMap<Key, (u64, u64)>,
    order: BTreeSet<(u64, Key)>,
}

impl Schedule {
    fn put(&mut self, key: Key, deadline: u64, case_id: u64) {
        if let Some((d, _)) = self.by_key.insert(key, (deadline, case_id)) {
            self.order.remove(&(d, key));
        }
        self.order.insert((deadline, key));
    }

    fn remove(&mut self, key: Key) {
        if let Some((d, _)) = self.by_key.remove(&key) {
            self.order.remove(&(d, key));
        }
    }
}

/// The engine's timers: each workflow's timer specifications (by workflow index, for the reply
/// threads) and the schedule the service runs.
#[derive(Default)]
pub(crate) struct Timers {
    /// Workflow index → its tasks' timers (None: the workflow has none; empty: no workflow
    /// has any). Read by the reply threads on every op without a lock.
    specs: arc_swap::ArcSwap<Vec<Option<TaskTimers>>>,
    schedule: Mutex<Schedule>,
    /// Woken when a timer is scheduled.
    wake: tokio::sync::Notify,
    pub(crate) stats: Arc<TimerStats>,
    started: AtomicBool,
}

impl Timers {
    pub(crate) fn register(&self, wf: &Workflow) {
        if wf.tasks.iter().all(|t| t.timer.is_none()) {
            return;
        }
        let specs: Vec<Option<Timer>> = wf.tasks.iter().map(|t| t.timer.clone()).collect();
        // Registrations are serialised (Engine::register_in): copy, change, publish.
        let mut all = self.specs.load().as_ref().clone();
        let i = usize::from(wf.index);
        if all.len() <= i {
            all.resize(i + 1, None);
        }
        all[i] = Some(Arc::new(specs));
        self.specs.store(Arc::new(all));
    }

    fn schedule(&self, key: Key, deadline: u64, case_id: u64) {
        lock(&self.schedule).put(key, deadline, case_id);
        self.wake.notify_one();
    }

    fn unschedule(&self, key: Key) {
        lock(&self.schedule).remove(key);
    }

    /// Timers scheduled now.
    pub(crate) fn scheduled(&self) -> usize {
        lock(&self.schedule).by_key.len()
    }

    /// Installs a restored case's armed timers (a checkpoint's case record).
    pub(crate) fn restore(&self, shard: usize, slot: u32, case_id: u64, armed: &[ArmedTimer]) {
        for a in armed {
            self.schedule((shard, slot, a.task), a.deadline_ns, case_id);
        }
    }

    /// Updates case `case_id`'s armed timers after one successful op (recorded at `now`):
    /// cancels those whose trigger fell (or fell and rose again within the op: `ended` holds
    /// the tasks the op completed, withdrew or aborted) and arms those whose trigger rose.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn update(
        &self,
        shard: usize,
        slot: u32,
        case_id: u64,
        workflow: u16,
        armed: &mut Vec<ArmedTimer>,
        o: &Outcome,
        ended: u64,
        regs: &[i64; REGISTERS],
        now: u64,
    ) {
        let all = self.specs.load();
        let Some(Some(specs)) = all.get(usize::from(workflow)) else {
            return;
        };
        let running = o.state == State::Running;
        // cancel
        armed.retain(|a| {
            let tb = 1u64 << (a.task % 64);
            let on = match specs.get(usize::from(a.task)).and_then(Option::as_ref) {
                Some(t) if t.trigger == TimerTrigger::OnEnabled => (o.enabled | o.busy) & tb != 0,
                Some(_) => o.busy & tb != 0,
                None => false,
            };
            let keep = running && on && ended & tb == 0;
            if !keep {
                self.unschedule((shard, slot, a.task));
                self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
            }
            keep
        });
        if !running {
            return;
        }
        // arm
        for (t, spec) in specs.iter().enumerate().take(64) {
            let Some(spec) = spec else { continue };
            let tb = 1u64 << t;
            let on = match spec.trigger {
                TimerTrigger::OnEnabled => (o.enabled | o.busy) & tb != 0,
                TimerTrigger::OnExecuting => o.busy & tb != 0,
            };
            if !on || armed.iter().any(|a| usize::from(a.task) == t) {
                continue;
            }
            let deadline_ns = deadline(spec, regs, now);
            armed.push(ArmedTimer {
                task: t as u8,
                deadline_ns,
            });
            self.schedule((shard, slot, t as u8), deadline_ns, case_id);
            self.stats.armed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The expiry of a timer armed at `now` (ns since the Unix epoch).
fn deadline(spec: &Timer, regs: &[i64; REGISTERS], now: u64) -> u64 {
    match &spec.when {
        TimerWhen::After { months, millis, .. } => {
            let mut t = now;
            if *months > 0 {
                let at =
                    chrono::DateTime::from_timestamp_nanos(i64::try_from(now).unwrap_or(i64::MAX));
                t = at
                    .checked_add_months(chrono::Months::new(*months))
                    .and_then(|d| d.timestamp_nanos_opt())
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(u64::MAX);
            }
            t.saturating_add(millis.saturating_mul(1_000_000))
        }
        TimerWhen::At { unix_ms } => u64::try_from(*unix_ms)
            .unwrap_or(0)
            .saturating_mul(1_000_000),
        TimerWhen::Variable { register, .. } => {
            let ms = register
                .and_then(|r| regs.get(usize::from(r)).copied())
                .unwrap_or(0)
                .max(0);
            now.saturating_add((ms as u64).saturating_mul(1_000_000))
        }
    }
}

/// How long a fire that failed waits before it is tried again.
const RETRY: Duration = Duration::from_secs(1);
/// Attempts per expiry while the case keeps moving under the service.
const RACE_ATTEMPTS: usize = 64;

impl Engine {
    /// Timer counters.
    pub fn timer_stats(&self) -> Arc<TimerStats> {
        self.timers.stats.clone()
    }

    /// Timers armed and not yet fired or cancelled.
    pub fn timers_scheduled(&self) -> usize {
        self.timers.scheduled()
    }

    /// The armed timers of case `case_id` (task, deadline ns since the Unix epoch).
    pub fn case_timers(&self, case_id: u64) -> Vec<ArmedTimer> {
        let Some((shard, slot)) = self.locate(case_id) else {
            return Vec::new();
        };
        let book = lock(&self.shards[shard].book);
        match book.slots.get(slot as usize) {
            Some(s) if s.id == case_id => s.timers.clone(),
            _ => Vec::new(),
        }
    }

    /// Starts the timer service on the current tokio runtime: call it once the log is
    /// replayed, so that timers that expired while the process was down fire now (once) and
    /// no timer fires against a half-replayed case. Later calls do nothing.
    pub fn start_timers(self: &Arc<Self>) {
        if self.timers.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(engine) = weak.upgrade() else { return };
                if engine.stopped.load(Ordering::Acquire) {
                    return;
                }
                let now = now_ns();
                // Peek and take a due timer under one lock: an entry the reply thread replaced
                // in between (re-armed) is never taken by mistake.
                let (due, next) = {
                    let mut s = lock(&engine.timers.schedule);
                    match s.order.first().copied() {
                        Some((deadline, key)) if deadline <= now => {
                            let case_id = s.by_key.get(&key).map(|(_, c)| *c);
                            s.remove(key);
                            (case_id.map(|c| (key, c)), None)
                        }
                        next => (None, next),
                    }
                };
                match (due, next) {
                    (Some((key, case_id)), _) => {
                        if !engine.expire(key, case_id).await {
                            engine.timers.stats.failed.fetch_add(1, Ordering::Relaxed);
                            let again = now_ns().saturating_add(RETRY.as_nanos() as u64);
                            engine.timers.schedule(key, again, case_id);
                        }
                    }
                    (None, next) => {
                        let wait = next.map_or(Duration::from_secs(1), |(d, _)| {
                            Duration::from_nanos(d.saturating_sub(now)).min(Duration::from_secs(1))
                        });
                        // The engine is not held while asleep (it may stop meanwhile); a timer
                        // scheduled before `notified` leaves a permit, so none is missed.
                        let timers = engine.timers.clone();
                        drop(engine);
                        let _ = tokio::time::timeout(wait, timers.wake.notified()).await;
                    }
                }
            }
        });
    }

    /// Fires the expired timer `key` of case `case_id`, if it is still armed. Returns false
    /// when the fire failed and should be tried again.
    async fn expire(&self, key: Key, case_id: u64) -> bool {
        let (shard, slot, task) = key;
        for _ in 0..RACE_ATTEMPTS {
            if self.draining.load(Ordering::Acquire) || self.stopped.load(Ordering::Acquire) {
                return true;
            }
            let (workflow, last) = {
                let book = lock(&self.shards[shard].book);
                let Some(s) = book.slots.get(slot as usize) else {
                    return true;
                };
                if s.id != case_id {
                    return true; // the case is gone
                }
                let Some(armed) = s.timers.iter().find(|a| a.task == task) else {
                    return true; // cancelled
                };
                if armed.deadline_ns > now_ns() {
                    // re-armed since (the task ran again): keep it scheduled
                    self.timers.schedule(key, armed.deadline_ns, case_id);
                    return true;
                }
                (s.workflow, s.last)
            };
            let Some(wf) = self.workflow_at(workflow) else {
                return true;
            };
            let tb = 1u64 << (task % 64);
            let kind = if last.busy & tb != 0 {
                OpKind::Complete
            } else if last.enabled & tb != 0 {
                OpKind::Fire
            } else {
                return true;
            };
            let mut op = Op::new(kind, case_id, slot, task);
            op.flags = OP_EXPECT_SEQ | OP_TIMER;
            op.expect_seq = last.seq as u32;
            let Ok(job) = self.run(shard, Job::new(vec![op], Vec::new())).await else {
                return false;
            };
            let Some(o) = job.out.first().copied() else {
                return false;
            };
            match o.status {
                Status::Ok => {
                    let counter = if kind == OpKind::Fire {
                        &self.timers.stats.skipped
                    } else {
                        &self.timers.stats.completed
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    self.settle(&wf, shard, slot, case_id, o).await;
                    return true;
                }
                Status::SeqMismatch => {
                    // the case moved since the book was read: look again
                    self.timers.stats.raced.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
                Status::NoCase | Status::CaseComplete => return true,
                other => {
                    tracing::warn!(
                        case_id,
                        task = wf.task_name(task),
                        status = ?other,
                        "a timer's fire was refused; retrying"
                    );
                    return false;
                }
            }
        }
        false
    }
}
