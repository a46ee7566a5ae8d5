//! Replay of an event log on an imported model, through the kernel.
//!
//! Each trace variant is replayed once: the replay keeps the set of kernel cases the events
//! so far can lead to (silent tasks fire freely between events; branch choices of XOR/OR
//! splits are not in the log, so every branch set is tried). An event is matched to the
//! non-silent tasks whose label (`concept:name`) equals its name. A variant fits when every
//! event fires and a complete case is reachable at the end.

use std::collections::{HashMap, HashSet};

use knhk_kernel::{Case, CaseState, Net};

use crate::explore::{branch_sets, key};
use crate::ir::Model;
use crate::xes::Log;

/// Most cases kept in a replay frontier.
pub const FRONTIER_CAP: usize = 10_000;

/// Why an event with an unknown name is refused (whatever the frontier held).
const NO_SUCH_TASK: &str = "no task or transition of the model has this name";

/// How a variant ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every event fired and the case can complete.
    Fits,
    /// Event `index` (0-based) could not fire in any reachable case.
    Refused {
        index: usize,
        event: String,
        /// Why: no task has this label, or none of those tasks is enabled.
        reason: String,
        /// Markings (condition ids) and busy tasks of the cases reached before the event.
        markings: Vec<Vec<String>>,
    },
    /// Every event fired but no complete case is reachable afterwards.
    Incomplete { markings: Vec<Vec<String>> },
    /// Not decided: the frontier hit [`FRONTIER_CAP`] cases, so reachable cases were left out
    /// and a refusal could be wrong. `index` is the event where the cases dropped mattered
    /// (the refused event, or the end).
    Undecided { index: usize, event: String },
}

/// One trace variant and its outcome.
#[derive(Debug, Clone)]
pub struct Variant {
    pub events: Vec<String>,
    /// Names of the traces with this variant (trace index when unnamed).
    pub traces: Vec<String>,
    pub outcome: Outcome,
}

/// The result of a replay.
#[derive(Debug, Clone)]
pub struct ReplayReport {
    pub variants: Vec<Variant>,
    pub traces: usize,
    pub fitting: usize,
    /// Traces whose replay hit the frontier cap without fitting: neither fitting nor not.
    pub undecided: usize,
}

impl ReplayReport {
    /// Share of fitting traces (1.0 for an empty log).
    pub fn fitness(&self) -> f64 {
        if self.traces == 0 {
            1.0
        } else {
            self.fitting as f64 / self.traces as f64
        }
    }
}

struct Ctx<'a> {
    model: &'a Model,
    net: &'a Net,
    sets: Vec<Vec<u32>>,
    silent: Vec<u32>,
    /// Set when a frontier dropped cases at the cap (this variant's verdict is then only
    /// sure when it fits).
    capped: std::cell::Cell<bool>,
    /// Most cases a frontier keeps ([`FRONTIER_CAP`] unless a caller asks otherwise).
    cap: usize,
}

impl Ctx<'_> {
    /// Fires task t (start, then complete with every branch set) from `c`.
    fn fire(&self, c: &Case, t: u32, out: &mut Vec<Case>) {
        let mut started = *c;
        if self.net.start(&mut started, t).is_err() {
            return;
        }
        for &b in self.sets.get(t as usize).map(Vec::as_slice).unwrap_or(&[]) {
            let mut done = started;
            if self.net.complete_with(&mut done, t, b).is_ok() {
                out.push(done);
            }
        }
    }

    /// Adds every case reachable through silent tasks.
    fn silent_closure(&self, frontier: Vec<Case>) -> Vec<Case> {
        let mut seen: HashSet<_> = frontier.iter().map(key).collect();
        let mut all = frontier.clone();
        let mut todo = frontier;
        while let Some(c) = todo.pop() {
            let en = self.net.enabled(&c);
            for &t in &self.silent {
                if en & (1u64 << t) == 0 {
                    continue;
                }
                let mut next = Vec::new();
                self.fire(&c, t, &mut next);
                for n in next {
                    if all.len() >= self.cap {
                        self.capped.set(true);
                        return all;
                    }
                    if seen.insert(key(&n)) {
                        all.push(n);
                        todo.push(n);
                    }
                }
            }
        }
        all
    }

    fn describe(&self, frontier: &[Case]) -> Vec<Vec<String>> {
        let mut out: Vec<Vec<String>> = Vec::new();
        for c in frontier {
            let mut m: Vec<String> = self
                .model
                .marking_ids(c.marking())
                .into_iter()
                .map(String::from)
                .collect();
            m.extend(
                self.model
                    .task_ids(c.busy())
                    .into_iter()
                    .map(|t| format!("{t} (busy)")),
            );
            if !out.contains(&m) {
                out.push(m);
            }
            if out.len() >= 3 {
                break;
            }
        }
        out
    }

    /// [`Ctx::replay_variant`], with a refusal reached after a frontier dropped cases turned
    /// into [`Outcome::Undecided`].
    fn run(&self, events: &[String], labels: &HashMap<&str, Vec<u32>>) -> Outcome {
        self.capped.set(false);
        let outcome = self.replay_variant(events, labels);
        if !self.capped.get() {
            return outcome;
        }
        match outcome {
            Outcome::Refused {
                index,
                event,
                reason,
                ..
            } if reason != NO_SUCH_TASK => Outcome::Undecided { index, event },
            Outcome::Incomplete { .. } => Outcome::Undecided {
                index: events.len(),
                event: String::new(),
            },
            other => other,
        }
    }

    fn replay_variant(&self, events: &[String], labels: &HashMap<&str, Vec<u32>>) -> Outcome {
        let init = match Case::new(self.net) {
            Ok(c) => c,
            Err(e) => {
                return Outcome::Refused {
                    index: 0,
                    event: events.first().cloned().unwrap_or_default(),
                    reason: format!("the kernel cannot start a case: {e}"),
                    markings: Vec::new(),
                }
            }
        };
        let mut frontier = self.silent_closure(vec![init]);
        for (i, ev) in events.iter().enumerate() {
            let Some(tasks) = labels.get(ev.as_str()) else {
                return Outcome::Refused {
                    index: i,
                    event: ev.clone(),
                    reason: NO_SUCH_TASK.into(),
                    markings: self.describe(&frontier),
                };
            };
            let mut next = Vec::new();
            let mut seen = HashSet::new();
            for c in &frontier {
                let en = self.net.enabled(c);
                for &t in tasks {
                    if en & (1u64 << t) == 0 {
                        continue;
                    }
                    let mut out = Vec::new();
                    self.fire(c, t, &mut out);
                    for n in out {
                        if next.len() >= self.cap {
                            self.capped.set(true);
                        } else if seen.insert(key(&n)) {
                            next.push(n);
                        }
                    }
                }
            }
            if next.is_empty() {
                return Outcome::Refused {
                    index: i,
                    event: ev.clone(),
                    reason: "not enabled".into(),
                    markings: self.describe(&frontier),
                };
            }
            frontier = self.silent_closure(next);
        }
        if frontier
            .iter()
            .any(|c| self.net.state(c) == CaseState::Complete)
        {
            Outcome::Fits
        } else {
            Outcome::Incomplete {
                markings: self.describe(&frontier),
            }
        }
    }
}

/// Replays `log` on `model` (lowered and sealed as `net`).
pub fn replay(model: &Model, net: &Net, log: &Log) -> ReplayReport {
    replay_with_cap(model, net, log, FRONTIER_CAP)
}

/// [`replay`] keeping at most `cap` cases per frontier.
pub fn replay_with_cap(model: &Model, net: &Net, log: &Log, cap: usize) -> ReplayReport {
    let ctx = Ctx {
        model,
        net,
        sets: model.tasks.iter().map(branch_sets).collect(),
        silent: (0..model.tasks.len())
            .filter(|&t| model.tasks[t].silent)
            .filter_map(|t| u32::try_from(t).ok())
            .collect(),
        capped: std::cell::Cell::new(false),
        cap: cap.max(1),
    };
    let mut labels: HashMap<&str, Vec<u32>> = HashMap::new();
    for (i, t) in model.tasks.iter().enumerate() {
        if !t.silent {
            if let Ok(i) = u32::try_from(i) {
                labels.entry(t.label.as_str()).or_default().push(i);
            }
        }
    }
    let mut order: Vec<Vec<String>> = Vec::new();
    let mut groups: HashMap<Vec<String>, Vec<String>> = HashMap::new();
    for (i, tr) in log.traces.iter().enumerate() {
        let seq: Vec<String> = tr.events.iter().map(|e| e.name.clone()).collect();
        let name = tr.name.clone().unwrap_or_else(|| format!("#{i}"));
        match groups.get_mut(&seq) {
            Some(g) => g.push(name),
            None => {
                order.push(seq.clone());
                groups.insert(seq, vec![name]);
            }
        }
    }
    let mut variants = Vec::new();
    let mut fitting = 0;
    let mut undecided = 0;
    for seq in order {
        let traces = groups.remove(&seq).unwrap_or_default();
        let outcome = ctx.run(&seq, &labels);
        match outcome {
            Outcome::Fits => fitting += traces.len(),
            Outcome::Undecided { .. } => undecided += traces.len(),
            _ => {}
        }
        variants.push(Variant {
            events: seq,
            traces,
            outcome,
        });
    }
    ReplayReport {
        variants,
        traces: log.traces.len(),
        fitting,
        undecided,
    }
}
