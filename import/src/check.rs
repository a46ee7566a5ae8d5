//! Verification at ingress: structural checks with element ids, the kernel's seal, and the
//! soundness exploration ([`crate::explore`]), gathered in one [`Report`] with a verdict.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;

use crate::ir::{FlowGuard, Join, Model, Split};
use crate::{explore, lower, Options, MAX_BRANCHES, MAX_CONDITIONS, MAX_FLOWS, MAX_TASKS};

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FindingKind {
    /// More conditions, tasks or branches than the kernel holds.
    Capacity,
    /// A flow enters the input condition or leaves the output condition.
    BadEndpoint,
    /// A task without an incoming or an outgoing flow.
    Dangling,
    /// An element on no path from the input to the output condition.
    NotOnPath,
    /// An XOR/OR split without exactly one default flow.
    Defaults,
    /// The kernel's seal refused the net (status in the message).
    Seal,
    /// A reachable state where completing a task would put a second token on a condition.
    NotSafe,
    /// An XOR-join whose inputs can be marked together, or marked again while it runs (WCP-8).
    MultiMerge,
    /// A non-local OR-join (no matching structured OR-split) past the kernel's seal-time caps
    /// (`KNHK_OR_JOIN_CAP`; refused, see docs/import.md). Below them it runs (WCP-37/38).
    NonLocalOrJoin,
    /// A reachable state from which the output condition cannot be reached.
    NoOptionToComplete,
    /// A reachable state with tokens, nothing enabled and nothing busy.
    Deadlock,
    /// The output condition is reached while other conditions are marked or tasks busy.
    ImproperCompletion,
    /// A task that can never start.
    DeadTask,
    /// A non-local OR-join (WCP-37/38) that the kernel runs, decided by the YAWL rule from
    /// tables its seal derived (a note).
    GeneralOrJoin,
    /// The exploration hit the state cap: soundness is not decided.
    ExplorationIncomplete,
    /// Flows whose predicate the client supplies (external predicates).
    ExternalPredicates,
    /// Multiple-instance attributes recorded (the caller counts instances).
    MultiInstance,
}

/// How much a finding weighs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// The model is refused.
    Refusal,
    /// Worth knowing; the model is accepted.
    Warning,
    /// A mapping decision.
    Info,
}

/// One finding, with the ids of the elements involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: FindingKind,
    pub severity: Severity,
    pub message: String,
    pub elements: Vec<String>,
}

impl Finding {
    pub(crate) fn refusal(kind: FindingKind, message: String, elements: Vec<String>) -> Self {
        Finding {
            kind,
            severity: Severity::Refusal,
            message,
            elements,
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Refusal => "refused",
            Severity::Warning => "warning",
            Severity::Info => "note",
        };
        write!(f, "[{sev}] {}", self.message)?;
        if !self.elements.is_empty() {
            write!(f, " [elements: {}]", self.elements.join(", "))?;
        }
        Ok(())
    }
}

/// The verdict on one model.
#[derive(Debug, Clone)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Workflow patterns the model uses (WCP numbers and names).
    pub patterns: Vec<&'static str>,
    /// Reachable states explored (0 when the exploration did not run).
    pub states: usize,
    /// True when the exploration visited every reachable state.
    pub exhaustive: bool,
}

impl Report {
    /// True when no finding refuses the model.
    pub fn accepted(&self) -> bool {
        !self
            .findings
            .iter()
            .any(|f| f.severity == Severity::Refusal)
    }
    /// The refusing findings.
    pub fn refusals(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Refusal)
    }
    /// True when some finding has this kind.
    pub fn has(&self, kind: FindingKind) -> bool {
        self.findings.iter().any(|f| f.kind == kind)
    }
}

/// Structural checks (capacity, endpoints, paths, defaults), by element id.
pub fn structural(model: &Model) -> Vec<Finding> {
    let mut out = Vec::new();
    let nc = model.conditions.len();
    let nt = model.tasks.len();
    if nc > MAX_CONDITIONS {
        out.push(Finding::refusal(
            FindingKind::Capacity,
            format!("{nc} conditions (implicit ones included); the kernel holds {MAX_CONDITIONS}"),
            Vec::new(),
        ));
    }
    if nt > MAX_TASKS {
        out.push(Finding::refusal(
            FindingKind::Capacity,
            format!("{nt} tasks; the kernel holds {MAX_TASKS}"),
            Vec::new(),
        ));
    }
    let flows: usize = model.tasks.iter().map(|t| t.outputs.len()).sum();
    if flows > MAX_FLOWS {
        out.push(Finding::refusal(
            FindingKind::Capacity,
            format!("{flows} outgoing flows of tasks; the kernel holds {MAX_FLOWS} per net"),
            Vec::new(),
        ));
    }
    for t in &model.tasks {
        if t.outputs.len() > MAX_BRANCHES {
            out.push(Finding::refusal(
                FindingKind::Capacity,
                format!(
                    "task '{}' has {} outgoing flows; the kernel holds {MAX_BRANCHES} per task",
                    t.id,
                    t.outputs.len()
                ),
                vec![t.id.clone()],
            ));
        }
        if t.inputs.contains(&model.output) {
            out.push(Finding::refusal(
                FindingKind::BadEndpoint,
                format!(
                    "a flow leaves the output condition '{}' into task '{}'",
                    model.condition_id(model.output),
                    t.id
                ),
                vec![model.condition_id(model.output).into(), t.id.clone()],
            ));
        }
        if t.outputs.iter().any(|f| f.target == model.input) {
            out.push(Finding::refusal(
                FindingKind::BadEndpoint,
                format!(
                    "task '{}' flows into the input condition '{}'",
                    t.id,
                    model.condition_id(model.input)
                ),
                vec![t.id.clone(), model.condition_id(model.input).into()],
            ));
        }
        if t.inputs.is_empty() {
            out.push(Finding::refusal(
                FindingKind::Dangling,
                format!("task '{}' has no incoming flow", t.id),
                vec![t.id.clone()],
            ));
        }
        if t.outputs.is_empty() {
            out.push(Finding::refusal(
                FindingKind::Dangling,
                format!("task '{}' has no outgoing flow", t.id),
                vec![t.id.clone()],
            ));
        }
        if t.split != Split::And {
            let defaults: Vec<&str> = t
                .outputs
                .iter()
                .filter(|f| f.default)
                .map(|f| f.target_element.as_str())
                .collect();
            if defaults.len() != 1 {
                let mut els = vec![t.id.clone()];
                els.extend(defaults.iter().map(|s| s.to_string()));
                out.push(Finding::refusal(
                    FindingKind::Defaults,
                    format!(
                        "{} split '{}' has {} default flows (exactly one is required){}",
                        t.split,
                        t.id,
                        defaults.len(),
                        if defaults.is_empty() {
                            String::new()
                        } else {
                            format!(": to {defaults:?}")
                        }
                    ),
                    els,
                ));
            }
        }
    }
    out.extend(paths(model));
    out
}

/// Elements on no path from input to output. Node ids: conditions 0..nc, tasks nc..nc+nt.
fn paths(model: &Model) -> Vec<Finding> {
    let nc = model.conditions.len();
    let n = nc + model.tasks.len();
    let mut fwd: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut bwd: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (ti, t) in model.tasks.iter().enumerate() {
        for &c in &t.inputs {
            fwd[c].push(nc + ti);
            bwd[nc + ti].push(c);
        }
        for f in &t.outputs {
            fwd[nc + ti].push(f.target);
            bwd[f.target].push(nc + ti);
        }
    }
    let reach = |start: usize, g: &Vec<Vec<usize>>| {
        let mut seen = vec![false; n];
        let mut q = VecDeque::from([start]);
        if let Some(s) = seen.get_mut(start) {
            *s = true;
        }
        while let Some(x) = q.pop_front() {
            for &y in &g[x] {
                if !seen[y] {
                    seen[y] = true;
                    q.push_back(y);
                }
            }
        }
        seen
    };
    let from_in = reach(model.input, &fwd);
    let to_out = reach(model.output, &bwd);
    let name = |i: usize| -> String {
        if i < nc {
            format!("condition '{}'", model.condition_id(i))
        } else {
            format!("task '{}'", model.task_id(i - nc))
        }
    };
    let id = |i: usize| -> String {
        if i < nc {
            model.condition_id(i).to_string()
        } else {
            model.task_id(i - nc).to_string()
        }
    };
    let mut out = Vec::new();
    let unreachable: Vec<usize> = (0..n).filter(|&i| !from_in[i]).collect();
    let stuck: Vec<usize> = (0..n).filter(|&i| from_in[i] && !to_out[i]).collect();
    if !unreachable.is_empty() {
        out.push(Finding::refusal(
            FindingKind::NotOnPath,
            format!(
                "not reachable from the input condition: {}",
                unreachable
                    .iter()
                    .map(|&i| name(i))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            unreachable.iter().map(|&i| id(i)).collect(),
        ));
    }
    if !stuck.is_empty() {
        out.push(Finding::refusal(
            FindingKind::NotOnPath,
            format!(
                "the output condition cannot be reached from: {}",
                stuck
                    .iter()
                    .map(|&i| name(i))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            stuck.iter().map(|&i| id(i)).collect(),
        ));
    }
    out
}

/// The workflow patterns a model uses (WCP numbering), read off its structure.
pub fn patterns(model: &Model) -> Vec<&'static str> {
    let mut p = BTreeSet::new();
    let mut producers = vec![0usize; model.conditions.len()];
    let mut consumers = vec![0usize; model.conditions.len()];
    for t in &model.tasks {
        for f in &t.outputs {
            if let Some(x) = producers.get_mut(f.target) {
                *x += 1;
            }
        }
        for &c in &t.inputs {
            if let Some(x) = consumers.get_mut(c) {
                *x += 1;
            }
        }
    }
    for t in &model.tasks {
        let (ni, no) = (t.inputs.len(), t.outputs.len());
        if ni <= 1 && no == 1 {
            p.insert((1, "WCP-1 sequence"));
        }
        match t.split {
            Split::And if no > 1 => {
                p.insert((2, "WCP-2 parallel split"));
            }
            Split::Xor if no > 1 => {
                p.insert((4, "WCP-4 exclusive choice"));
            }
            Split::Or if no > 1 => {
                p.insert((6, "WCP-6 multi-choice"));
            }
            _ => {}
        }
        match t.join {
            Join::And if ni > 1 => {
                p.insert((3, "WCP-3 synchronization"));
            }
            Join::Xor if ni > 1 => {
                p.insert((5, "WCP-5 simple merge"));
            }
            Join::Or if ni > 1 => {
                p.insert((7, "WCP-7 structured synchronizing merge"));
            }
            Join::Discriminator => {
                p.insert((9, "WCP-9 structured discriminator"));
            }
            _ => {}
        }
        if t.mi.is_some() {
            p.insert((12, "WCP-12..15 multiple instances"));
        }
        if !t.cancel_tasks.is_empty() {
            p.insert((19, "WCP-19 cancel task"));
        }
        if !t.cancel_conditions.is_empty() {
            p.insert((25, "WCP-25 cancel region"));
        }
    }
    if producers.iter().any(|&n| n > 1) {
        p.insert((5, "WCP-5 simple merge"));
    }
    if consumers.iter().any(|&n| n > 1) {
        p.insert((16, "WCP-16 deferred choice"));
    }
    if has_cycle(model) {
        p.insert((10, "WCP-10 arbitrary cycles"));
    }
    p.into_iter().map(|(_, s)| s).collect()
}

fn has_cycle(model: &Model) -> bool {
    // Task graph: t -> u when an output condition of t is an input of u. Kahn's algorithm.
    let nt = model.tasks.len();
    let mut succ = vec![Vec::new(); nt];
    let mut indeg = vec![0usize; nt];
    // Condition -> the tasks that consume it: linear in the flows, not tasks x flows.
    let mut consumers = vec![Vec::new(); model.conditions.len()];
    for (b, u) in model.tasks.iter().enumerate() {
        for &c in &u.inputs {
            if let Some(v) = consumers.get_mut(c) {
                if v.last() != Some(&b) {
                    v.push(b);
                }
            }
        }
    }
    for (a, t) in model.tasks.iter().enumerate() {
        for f in &t.outputs {
            for &b in consumers.get(f.target).map_or(&[][..], Vec::as_slice) {
                succ[a].push(b);
                indeg[b] += 1;
            }
        }
    }
    let mut q: VecDeque<usize> = (0..nt).filter(|&i| indeg[i] == 0).collect();
    let mut seen = 0;
    while let Some(x) = q.pop_front() {
        seen += 1;
        for &y in &succ[x] {
            indeg[y] -= 1;
            if indeg[y] == 0 {
                q.push_back(y);
            }
        }
    }
    seen < nt
}

/// Verifies a model: structural checks, the kernel seal, then (when both pass) the
/// exploration of the reachable states under `opts.state_cap`.
pub fn verify(model: &Model, opts: &Options) -> Report {
    let mut report = verify_net(model, opts);
    if model.subnets.is_empty() {
        return report;
    }
    report.patterns.push("composite tasks as sub-net cases");
    let recursive = std::iter::once(model)
        .chain(model.subnets.iter())
        .enumerate()
        .any(|(i, m)| {
            // net i (0 the root, k + 1 sub-net k) reaches itself through its sub-net tasks
            let mut seen = vec![false; model.subnets.len()];
            let mut stack: Vec<usize> = m.tasks.iter().filter_map(|t| t.subnet).collect();
            while let Some(k) = stack.pop() {
                if i == k + 1 {
                    return true;
                }
                if seen.get(k).copied().unwrap_or(true) {
                    continue;
                }
                seen[k] = true;
                if let Some(sub) = model.subnets.get(k) {
                    stack.extend(sub.tasks.iter().filter_map(|t| t.subnet));
                }
            }
            false
        });
    if recursive {
        report.patterns.push("WCP-22 recursion");
    }
    for sub in &model.subnets {
        let r = verify_net(sub, opts);
        report.states += r.states;
        report.exhaustive &= r.exhaustive;
        for p in r.patterns {
            if !report.patterns.contains(&p) {
                report.patterns.push(p);
            }
        }
        report.findings.extend(r.findings.into_iter().map(|mut f| {
            f.message = format!("sub-net '{}': {}", sub.net_id, f.message);
            f
        }));
    }
    report
}

/// [`verify`] of one net (the root, or one sub-net on its own).
fn verify_net(model: &Model, opts: &Options) -> Report {
    let mut findings = structural(model);
    let patterns = patterns(model);
    for t in &model.tasks {
        if t.has_external() {
            let flows: Vec<String> = t
                .outputs
                .iter()
                .enumerate()
                .filter(|(_, f)| f.guard == FlowGuard::External)
                .map(|(k, f)| {
                    format!(
                        "bit {k}: -> {} '{}'",
                        f.target_element,
                        f.predicate.as_deref().unwrap_or("")
                    )
                })
                .collect();
            findings.push(Finding {
                kind: FindingKind::ExternalPredicates,
                severity: Severity::Info,
                message: format!(
                    "task '{}': the client supplies the branch bits on completion ({})",
                    t.id,
                    flows.join("; ")
                ),
                elements: vec![t.id.clone()],
            });
        }
        if let Some(mi) = &t.mi {
            let how = match (&t.composite, crate::lower::mi_spec(mi)) {
                (Some(_), _) => "a composite task: its flattened sub-net runs once (the caller \
                                 counts instances; sub-net cases per instance are not built)"
                    .to_string(),
                (None, Ok(k)) => format!(
                    "the kernel runs it as minimum {}, maximum {}, threshold {} (the rest \
                     withdrawn), {} creation; instances start and complete one by one \
                     (StartInstance, CompleteInstance){}",
                    k.minimum,
                    k.maximum,
                    k.threshold,
                    if k.dynamic { "dynamic" } else { "static" },
                    if mi
                        .min
                        .as_deref()
                        .is_some_and(|m| m.trim().parse::<u64>().is_err())
                    {
                        "; the minimum is a query: StartInstances gives the count"
                    } else {
                        ""
                    }
                ),
                (None, Err(m)) => format!("refused: {m}"),
            };
            findings.push(Finding {
                kind: FindingKind::MultiInstance,
                severity: Severity::Info,
                message: format!(
                    "task '{}' is multiple-instance (min {}, max {}, threshold {}, creation {}): {how}",
                    t.id,
                    mi.min.as_deref().unwrap_or("-"),
                    mi.max.as_deref().unwrap_or("-"),
                    mi.threshold.as_deref().unwrap_or("-"),
                    mi.creation_mode.as_deref().unwrap_or("-"),
                ),
                elements: vec![t.id.clone()],
            });
        }
    }
    if findings.iter().any(|f| f.severity == Severity::Refusal) {
        return Report {
            findings,
            patterns,
            states: 0,
            exhaustive: false,
        };
    }
    let compiled = match lower(model) {
        Ok(c) => c,
        Err(e) => {
            let kind = match e.error {
                Some(knhk_kernel::Error::MultiMerge) => FindingKind::MultiMerge,
                Some(knhk_kernel::Error::NonlocalOrJoin | knhk_kernel::Error::OrJoinCap) => {
                    FindingKind::NonLocalOrJoin
                }
                Some(
                    knhk_kernel::Error::CapacityConditions
                    | knhk_kernel::Error::CapacityTasks
                    | knhk_kernel::Error::CapacityBranches,
                ) => FindingKind::Capacity,
                _ => FindingKind::Seal,
            };
            findings.push(Finding::refusal(
                kind,
                format!("{} [{}]", e.message, e.status),
                e.elements,
            ));
            return Report {
                findings,
                patterns,
                states: 0,
                exhaustive: false,
            };
        }
    };
    // Multiple-instance tasks (imported without keep) move tokens as single tasks do: start
    // consumes, the completion at the threshold produces. The exploration runs on the net
    // without their MI attributes (an MI task refuses the plain completion it tries).
    let plain;
    let net = if model.tasks.iter().any(|t| t.mi.is_some()) {
        let mut m = model.clone();
        for t in &mut m.tasks {
            t.mi = None;
        }
        plain = lower(&m).map(|c| c.net);
        plain.as_ref().unwrap_or(&compiled.net)
    } else {
        &compiled.net
    };
    let ex = explore::explore_until(model, net, opts.state_cap, &|| opts.cancelled());
    findings.extend(ex.findings.into_iter().map(|mut f| {
        if opts.refuse_undecided && f.kind == FindingKind::ExplorationIncomplete {
            // Asked for: a model whose soundness is not decided is not accepted.
            f.severity = Severity::Refusal;
            f.message.push_str(" (refused: soundness must be decided)");
        }
        f
    }));
    let mut patterns = patterns;
    if findings.iter().any(|f| f.kind == FindingKind::MultiMerge) {
        patterns.push("WCP-8 multi-merge");
    }
    let general = compiled.net.general_or_joins();
    if general != 0 {
        let structured = model
            .tasks
            .iter()
            .enumerate()
            .any(|(i, t)| t.join == Join::Or && t.inputs.len() > 1 && general & (1 << i) == 0);
        if !structured {
            patterns.retain(|p| !p.starts_with("WCP-7 "));
        }
        patterns.push("WCP-37/38 general synchronizing merge");
        for t in (0..64).filter(|t| general & (1u64 << t) != 0) {
            let id = model.task_id(t).to_string();
            findings.push(Finding {
                kind: FindingKind::GeneralOrJoin,
                severity: Severity::Info,
                message: format!(
                    "task '{id}': non-local OR-join (WCP-37/38, no matching structured \
                     OR-split): decided as the YAWL engine decides it, from tables the kernel's \
                     seal derived over the reachable states"
                ),
                elements: vec![id],
            });
        }
    }
    Report {
        findings,
        patterns,
        states: ex.states,
        exhaustive: ex.exhaustive,
    }
}
