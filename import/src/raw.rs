//! The source graph every parser produces, and its compilation into a [`Model`]: composite
//! tasks flattened, implicit conditions materialised, flows ordered, predicates compiled,
//! registers allocated.

use std::collections::{HashMap, HashSet};

use crate::error::ImportError;
use crate::ir::{
    Condition, Flow, FlowGuard, Join, Model, MultiInstance, SourceFormat, Split, Task, Timer,
    TimerWhen, VarType, Variable,
};
use crate::{xpath, Options, SubnetCases, MAX_CONDITIONS, MAX_TASKS, REGISTERS};

/// Deepest composite-task nesting flattened.
const MAX_NESTING: usize = 16;

/// Kind of a source element.
#[derive(Debug, Clone, PartialEq)]
// One per element of a model, read once: a task's size is no concern.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Kind {
    Input,
    Output,
    Condition,
    Task(RawTask),
}

/// Task attributes as found in the source.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawTask {
    pub join: Join,
    pub split: Split,
    /// Element ids in the cancellation set (`removesTokens`).
    pub cancels: Vec<String>,
    /// Flows (source id, destination id) whose implicit condition is cancelled
    /// (`removesTokensFromFlow`).
    pub cancel_flows: Vec<(String, String)>,
    pub mi: Option<MultiInstance>,
    /// `decomposesTo` id.
    pub decomposes_to: Option<String>,
    pub silent: bool,
    /// A YAWL task without a decomposition (an empty routing task): no work is attached.
    pub empty: bool,
    /// Activity label (defaults to the name, then the id).
    pub label: Option<String>,
    /// The task's timer, as read (a variable timer's register is assigned when lowering).
    pub timer: Option<Timer>,
}

impl RawTask {
    pub fn new(join: Join, split: Split) -> Self {
        RawTask {
            join,
            split,
            cancels: Vec::new(),
            cancel_flows: Vec::new(),
            mi: None,
            decomposes_to: None,
            silent: false,
            empty: false,
            label: None,
            timer: None,
        }
    }
}

/// An outgoing flow as found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawFlow {
    pub to: String,
    pub predicate: Option<String>,
    pub ordering: Option<i64>,
    pub default: bool,
}

impl RawFlow {
    pub fn to(id: impl Into<String>) -> Self {
        RawFlow {
            to: id.into(),
            predicate: None,
            ordering: None,
            default: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawElement {
    pub id: String,
    pub name: Option<String>,
    pub kind: Kind,
    pub flows: Vec<RawFlow>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawVar {
    pub name: String,
    pub ty: String,
    pub initial: Option<String>,
    pub input: bool,
}

/// One net (YAWL decomposition of type NetFactsType).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawNet {
    pub id: String,
    pub elements: Vec<RawElement>,
    pub variables: Vec<RawVar>,
}

/// A whole specification: its nets, the root first.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawSpec {
    pub name: String,
    pub format: SourceFormat,
    pub nets: Vec<RawNet>,
    pub notes: Vec<String>,
}

pub(crate) fn var_type(t: &str) -> VarType {
    let local = t.rsplit(':').next().unwrap_or(t);
    match local {
        "int" | "integer" | "long" | "short" | "byte" | "nonNegativeInteger"
        | "positiveInteger" | "negativeInteger" | "nonPositiveInteger" | "unsignedInt"
        | "unsignedLong" | "unsignedShort" | "unsignedByte" => VarType::Int,
        "double" | "decimal" | "float" => VarType::Decimal,
        "boolean" => VarType::Bool,
        other => VarType::Str(other.to_string()),
    }
}

/// The flattened net, still with string ids.
struct Flat {
    elements: Vec<RawElement>,
    /// Which net each element came from (for predicates).
    net_of: Vec<String>,
    notes: Vec<String>,
}

/// `keep`: composite tasks whose decomposition it names stay atomic tasks (sub-net cases)
/// instead of being flattened.
fn flatten(spec: &RawSpec, keep: Option<&HashMap<String, usize>>) -> Result<Flat, ImportError> {
    let root = spec
        .nets
        .first()
        .ok_or_else(|| ImportError::malformed("specification", "no root net"))?;
    let by_id: HashMap<&str, &RawNet> = spec.nets.iter().map(|n| (n.id.as_str(), n)).collect();
    let mut flat = Flat {
        elements: Vec::new(),
        net_of: Vec::new(),
        notes: Vec::new(),
    };
    let mut stack = vec![root.id.clone()];
    expand(root, "", &by_id, keep.is_some(), &mut stack, &mut flat)?;
    // Cancellation of a composite task cancels everything it was flattened into.
    let mut groups: HashMap<String, Vec<String>> = HashMap::new();
    for (e, _) in flat.elements.iter().zip(&flat.net_of) {
        if let Kind::Task(t) = &e.kind {
            if t.decomposes_to
                .as_deref()
                .is_some_and(|d| by_id.contains_key(d))
            {
                let prefix = format!("{}/", e.id);
                let members: Vec<String> = flat
                    .elements
                    .iter()
                    .filter(|x| x.id.starts_with(&prefix))
                    .map(|x| x.id.clone())
                    .collect();
                groups.insert(e.id.clone(), members);
            }
        }
    }
    if !groups.is_empty() {
        for e in &mut flat.elements {
            if let Kind::Task(t) = &mut e.kind {
                let mut extra = Vec::new();
                for c in &t.cancels {
                    if let Some(m) = groups.get(c) {
                        extra.extend(m.iter().cloned());
                    }
                }
                t.cancels.extend(extra);
            }
        }
    }
    Ok(flat)
}

fn expand(
    net: &RawNet,
    prefix: &str,
    nets: &HashMap<&str, &RawNet>,
    keep: bool,
    stack: &mut Vec<String>,
    flat: &mut Flat,
) -> Result<(), ImportError> {
    let pid = |id: &str| format!("{prefix}{id}");
    let top = prefix.is_empty();
    for e in &net.elements {
        let composite = match &e.kind {
            Kind::Task(t) if !keep => t
                .decomposes_to
                .as_deref()
                .and_then(|d| nets.get(d))
                .copied(),
            _ => None,
        };
        let mut el = e.clone();
        el.id = pid(&e.id);
        for f in &mut el.flows {
            f.to = pid(&f.to);
        }
        if !top {
            // Inside a flattened sub-net the input and output are ordinary conditions.
            if matches!(el.kind, Kind::Input | Kind::Output) {
                el.kind = Kind::Condition;
            }
        }
        if let Kind::Task(t) = &mut el.kind {
            for c in &mut t.cancels {
                *c = pid(c);
            }
            for (a, b) in &mut t.cancel_flows {
                *a = pid(a);
                *b = pid(b);
            }
        }
        let Some(sub) = composite else {
            flat.elements.push(el);
            flat.net_of.push(net.id.clone());
            continue;
        };
        if stack.contains(&sub.id) {
            return Err(ImportError::unsupported(
                el.id,
                format!(
                    "decomposes into net '{}', which contains it (recursive decomposition)",
                    sub.id
                ),
            ));
        }
        if stack.len() >= MAX_NESTING {
            return Err(ImportError::unsupported(
                el.id,
                format!("composite tasks nested deeper than {MAX_NESTING}"),
            ));
        }
        let Kind::Task(t) = &el.kind else { continue };
        let sub_in = sub.elements.iter().find(|x| x.kind == Kind::Input);
        let sub_out = sub.elements.iter().find(|x| x.kind == Kind::Output);
        let (Some(sub_in), Some(sub_out)) = (sub_in, sub_out) else {
            return Err(ImportError::malformed(
                &sub.id,
                "sub-net needs one input and one output condition",
            ));
        };
        let inner = format!("{}/", el.id);
        // Entry: the composite's join and incoming flows, then the sub-net's input condition.
        let mut entry_task = RawTask::new(t.join, Split::And);
        entry_task.mi = t.mi.clone();
        entry_task.label = t.label.clone();
        entry_task.decomposes_to = t.decomposes_to.clone();
        // kept so that lowering notes it as not armed (no timer runs on a composite task)
        entry_task.timer = t.timer.clone();
        let entry = RawElement {
            id: el.id.clone(),
            name: el.name.clone(),
            kind: Kind::Task(entry_task),
            flows: vec![RawFlow::to(format!("{inner}{}", sub_in.id))],
        };
        // Exit: leaves the sub-net's output condition with the composite's split and flows.
        let mut exit_task = RawTask::new(Join::Xor, t.split);
        exit_task.cancels = t.cancels.clone();
        exit_task.cancel_flows = t.cancel_flows.clone();
        exit_task.silent = true;
        let exit_id = format!("{inner}exit");
        let exit = RawElement {
            id: exit_id.clone(),
            name: el.name.as_ref().map(|n| format!("{n} (exit)")),
            kind: Kind::Task(exit_task),
            flows: el.flows.clone(),
        };
        flat.elements.push(entry);
        flat.net_of.push(net.id.clone());
        stack.push(sub.id.clone());
        let start = flat.elements.len();
        expand(sub, &inner, nets, keep, stack, flat)?;
        stack.pop();
        // The sub-net's output condition flows into the exit task.
        let out_id = format!("{inner}{}", sub_out.id);
        for x in &mut flat.elements[start..] {
            if x.id == out_id {
                x.flows.push(RawFlow::to(exit_id.clone()));
            }
        }
        flat.elements.push(exit);
        flat.net_of.push(net.id.clone());
        flat.notes.push(format!(
            "composite task '{}' flattened: entry task '{}', sub-net '{}' under '{inner}', exit task '{exit_id}'",
            el.id, el.id, sub.id
        ));
    }
    Ok(())
}

struct VarScope<'a> {
    vars: &'a mut Vec<Variable>,
    strings: &'a mut Vec<String>,
    next_reg: u8,
}

impl xpath::Scope for VarScope<'_> {
    fn variable(&mut self, net: &str, name: &str) -> Result<(u8, VarType), String> {
        let v = self
            .vars
            .iter_mut()
            .find(|v| v.net == net && v.name == name)
            .ok_or_else(|| format!("unknown variable /{net}/{name}"))?;
        if let Some(r) = v.register {
            return Ok((r, v.ty.clone()));
        }
        if usize::from(self.next_reg) >= REGISTERS {
            return Err(format!(
                "variable /{net}/{name} would need register {}; the kernel has {REGISTERS}",
                self.next_reg
            ));
        }
        let r = self.next_reg;
        self.next_reg += 1;
        v.register = Some(r);
        Ok((r, v.ty.clone()))
    }
    fn intern(&mut self, s: &str) -> i64 {
        intern(self.strings, s)
    }
}

fn intern(strings: &mut Vec<String>, s: &str) -> i64 {
    let i = match strings.iter().position(|x| x == s) {
        Some(i) => i,
        None => {
            strings.push(s.to_string());
            strings.len() - 1
        }
    };
    i64::try_from(i).unwrap_or(i64::MAX)
}

/// Compiles a source spec into the IR: composite tasks flattened, or run as sub-net cases
/// ([`Options::subnet_cases`]).
pub(crate) fn build(spec: RawSpec, opts: &Options) -> Result<Model, ImportError> {
    let nested = nesting(&spec);
    let any_composite = nested.is_some();
    match opts.subnet_cases {
        SubnetCases::Never => build_net(spec, opts, None),
        SubnetCases::Always if any_composite => {
            build_tree(spec, opts, "sub-net cases were asked for")
        }
        SubnetCases::Always => build_net(spec, opts, None),
        SubnetCases::Auto => match nested {
            Some(Nesting::Recursive(net)) => build_tree(
                spec,
                opts,
                &format!("net '{net}' decomposes into itself (recursion cannot be flattened)"),
            ),
            Some(Nesting::Deep) => build_tree(
                spec,
                opts,
                &format!("composite tasks nest deeper than {MAX_NESTING} (too deep to flatten)"),
            ),
            Some(Nesting::Flat) => {
                let flat = build_net(spec.clone(), opts, None)?;
                if flat.conditions.len() <= MAX_CONDITIONS && flat.tasks.len() <= MAX_TASKS {
                    return Ok(flat);
                }
                build_tree(
                    spec,
                    opts,
                    &format!(
                        "flattened, the net has {} conditions and {} tasks, past the kernel's \
                         {MAX_CONDITIONS} and {MAX_TASKS}",
                        flat.conditions.len(),
                        flat.tasks.len()
                    ),
                )
            }
            None => build_net(spec, opts, None),
        },
    }
}

/// How a specification's composite tasks nest.
enum Nesting {
    /// Every chain of decompositions ends within [`MAX_NESTING`] levels.
    Flat,
    /// A chain is longer than [`MAX_NESTING`].
    Deep,
    /// The named net decomposes (directly or through others) into itself.
    Recursive(String),
}

/// The decomposition targets of `net`'s composite tasks (nets of the spec only).
fn decompositions<'a>(net: &'a RawNet, by_id: &HashMap<&str, usize>) -> Vec<&'a str> {
    net.elements
        .iter()
        .filter_map(|e| match &e.kind {
            Kind::Task(t) => t.decomposes_to.as_deref().filter(|d| by_id.contains_key(d)),
            _ => None,
        })
        .collect()
}

/// Each net's position in the spec, by id.
fn net_positions(spec: &RawSpec) -> HashMap<&str, usize> {
    spec.nets
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect()
}

/// How the spec's composite tasks nest (None: it has none).
fn nesting(spec: &RawSpec) -> Option<Nesting> {
    let by_id = net_positions(spec);
    let root = spec.nets.first()?;
    if decompositions(root, &by_id).is_empty() {
        return None;
    }
    // Depth-first over the decomposition graph, with the path: a net on its own path is a
    // recursion; a path longer than MAX_NESTING is too deep.
    fn walk(
        spec: &RawSpec,
        by_id: &HashMap<&str, usize>,
        net: usize,
        path: &mut Vec<usize>,
        done: &mut HashSet<usize>,
    ) -> Nesting {
        if let Some(n) = path.iter().find(|&&p| p == net) {
            return Nesting::Recursive(spec.nets[*n].id.clone());
        }
        if path.len() > MAX_NESTING {
            return Nesting::Deep;
        }
        if done.contains(&net) {
            return Nesting::Flat;
        }
        path.push(net);
        let mut verdict = Nesting::Flat;
        for d in decompositions(&spec.nets[net], by_id) {
            match walk(spec, by_id, by_id[d], path, done) {
                Nesting::Flat => {}
                other => {
                    verdict = other;
                    break;
                }
            }
        }
        path.pop();
        if matches!(verdict, Nesting::Flat) {
            done.insert(net);
        }
        verdict
    }
    Some(walk(spec, &by_id, 0, &mut Vec::new(), &mut HashSet::new()))
}

/// Builds the root net and every net its composite tasks decompose into as models of their
/// own, composite tasks kept atomic and linked to their sub-net ([`Task::subnet`]).
fn build_tree(spec: RawSpec, opts: &Options, why: &str) -> Result<Model, ImportError> {
    let by_id = net_positions(&spec);
    // Sub-nets in discovery order (breadth first from the root): their index is their place.
    let mut order: Vec<usize> = Vec::new();
    let mut index_of: HashMap<String, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([0usize]);
    while let Some(n) = queue.pop_front() {
        for d in decompositions(&spec.nets[n], &by_id) {
            if !index_of.contains_key(d) {
                index_of.insert(d.to_string(), order.len());
                order.push(by_id[d]);
                queue.push_back(by_id[d]);
            }
        }
    }
    let mut subnets = Vec::with_capacity(order.len());
    for &n in &order {
        opts.check_cancelled()?;
        let mut nets = Vec::with_capacity(spec.nets.len());
        nets.push(spec.nets[n].clone());
        nets.extend(
            spec.nets
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != n)
                .map(|(_, x)| x.clone()),
        );
        let sub = RawSpec {
            name: format!("{}/{}", spec.name, spec.nets[n].id),
            format: spec.format.clone(),
            nets,
            notes: Vec::new(),
        };
        subnets.push(build_net(sub, opts, Some(&index_of))?);
    }
    let mut root = build_net(spec, opts, Some(&index_of))?;
    let mut notes = Vec::new();
    for m in std::iter::once(&root).chain(subnets.iter()) {
        for t in m.tasks.iter().filter(|t| t.subnet.is_some()) {
            let net = t
                .subnet
                .and_then(|k| subnets.get(k))
                .map_or("", |s| &s.net_id);
            notes.push(format!(
                "composite task '{}' of net '{}' runs net '{net}' as a sub-net case ({why}): the \
                 engine starts a child case when the task starts and completes the task when \
                 the child completes",
                t.id, m.net_id
            ));
        }
        for n in m
            .notes
            .iter()
            .filter(|n| n.contains("multiple-instance composite"))
        {
            notes.push(n.clone());
        }
    }
    root.notes.extend(notes);
    root.subnets = subnets;
    Ok(root)
}

/// Compiles one net of a source spec (its first) into the IR; with `keep`, composite tasks
/// stay atomic tasks that run the named sub-net as a child case (`keep` gives each sub-net's
/// index), otherwise they are flattened.
fn build_net(
    spec: RawSpec,
    opts: &Options,
    keep: Option<&HashMap<String, usize>>,
) -> Result<Model, ImportError> {
    let flat = flatten(&spec, keep)?;
    let mut notes = spec.notes.clone();
    notes.extend(flat.notes);
    let elements = flat.elements;

    // Ids must be unique.
    let mut seen = HashSet::new();
    for e in &elements {
        if !seen.insert(e.id.as_str()) {
            return Err(ImportError::DuplicateId(e.id.clone()));
        }
    }
    let index: HashMap<&str, usize> = elements
        .iter()
        .enumerate()
        .map(|(i, e)| (e.id.as_str(), i))
        .collect();
    for e in &elements {
        for f in &e.flows {
            if !index.contains_key(f.to.as_str()) {
                return Err(ImportError::UnknownElement {
                    from: e.id.clone(),
                    id: f.to.clone(),
                });
            }
        }
    }

    // Conditions: explicit ones in document order, then implicit ones.
    let mut conditions = Vec::new();
    let mut cond_of: HashMap<String, usize> = HashMap::new();
    let (mut input, mut output) = (None, None);
    for e in &elements {
        match e.kind {
            Kind::Input | Kind::Output | Kind::Condition => {
                let i = conditions.len();
                conditions.push(Condition {
                    id: e.id.clone(),
                    name: e.name.clone(),
                    implicit: false,
                });
                cond_of.insert(e.id.clone(), i);
                let slot = match e.kind {
                    Kind::Input => &mut input,
                    Kind::Output => &mut output,
                    _ => continue,
                };
                if slot.is_some() {
                    let what = if e.kind == Kind::Input {
                        "input"
                    } else {
                        "output"
                    };
                    return Err(ImportError::malformed(
                        &e.id,
                        format!("second {what} condition (a net has exactly one)"),
                    ));
                }
                *slot = Some(i);
            }
            Kind::Task(_) => {}
        }
    }
    let input = input.ok_or_else(|| ImportError::malformed(&spec.name, "no input condition"))?;
    let output = output.ok_or_else(|| ImportError::malformed(&spec.name, "no output condition"))?;

    let task_of: HashMap<&str, usize> = elements
        .iter()
        .filter(|e| matches!(e.kind, Kind::Task(_)))
        .enumerate()
        .map(|(t, e)| (e.id.as_str(), t))
        .collect();
    // Every "<id>/" prefix of a flattened element: a composite task's sub-net elements sit
    // under it (one set, not a scan of all elements per task).
    let prefixes: HashSet<&str> = elements
        .iter()
        .flat_map(|x| x.id.match_indices('/').map(|(i, _)| &x.id[..=i]))
        .collect();
    let empty: Vec<&str> = elements
        .iter()
        .filter(
            |e| matches!(&e.kind, Kind::Task(rt) if rt.empty && !rt.silent && rt.timer.is_none()),
        )
        .map(|e| e.id.as_str())
        .collect();
    if !empty.is_empty() {
        notes.push(if opts.empty_tasks_silent {
            format!(
                "tasks without a decomposition (empty routing tasks) {empty:?}: silent, run by the \
                 engine as soon as they are enabled (no event in a log corresponds to them)"
            )
        } else {
            format!(
                "tasks without a decomposition (empty routing tasks) {empty:?}: driven by the \
                 client like any other task (manual silent tasks)"
            )
        });
    }
    let mut tasks: Vec<Task> = elements
        .iter()
        .filter_map(|e| {
            let Kind::Task(rt) = &e.kind else { return None };
            let inner = format!("{}/", e.id);
            Some(Task {
                id: e.id.clone(),
                name: e.name.clone(),
                join: rt.join,
                split: rt.split,
                inputs: Vec::new(),
                outputs: Vec::new(),
                cancel_conditions: Vec::new(),
                cancel_tasks: Vec::new(),
                mi: rt.mi.clone(),
                silent: rt.silent || (rt.empty && opts.empty_tasks_silent),
                label: rt
                    .label
                    .clone()
                    .or_else(|| e.name.clone())
                    .unwrap_or_else(|| e.id.clone()),
                composite: rt
                    .decomposes_to
                    .clone()
                    .filter(|_| prefixes.contains(inner.as_str())),
                subnet: rt
                    .decomposes_to
                    .as_deref()
                    .and_then(|d| keep.and_then(|k| k.get(d)))
                    .copied(),
                timer: rt.timer.clone(),
            })
        })
        .collect();

    // Variables of every net, in declaration order.
    let mut variables = Vec::new();
    for n in &spec.nets {
        for v in &n.variables {
            variables.push(Variable {
                net: n.id.clone(),
                name: v.name.clone(),
                ty: var_type(&v.ty),
                input: v.input,
                initial: v.initial.clone(),
                register: None,
                initial_value: 0,
            });
        }
    }
    let mut strings = vec![String::new()];
    let mut scope = VarScope {
        vars: &mut variables,
        strings: &mut strings,
        next_reg: 0,
    };

    // Flows: condition -> task are inputs; task -> condition outputs; task -> task through an
    // implicit condition; condition -> condition is not a YAWL flow.
    let mut implicit: HashMap<(String, String), usize> = HashMap::new();
    for (ei, e) in elements.iter().enumerate() {
        let net = &flat.net_of[ei];
        match &e.kind {
            Kind::Task(rt) => {
                let t = task_of[e.id.as_str()];
                let mut outs = Vec::new();
                let mut targets = HashSet::new();
                for (k, f) in e.flows.iter().enumerate() {
                    if !targets.insert(f.to.as_str()) {
                        return Err(ImportError::malformed(
                            &e.id,
                            format!("two flows into '{}'", f.to),
                        ));
                    }
                    let target = match cond_of.get(&f.to) {
                        Some(&c) => c,
                        None => {
                            // task -> task: materialise the implicit condition.
                            let c = conditions.len();
                            let id = format!("{}->{}", e.id, f.to);
                            conditions.push(Condition {
                                id: id.clone(),
                                name: None,
                                implicit: true,
                            });
                            implicit.insert((e.id.clone(), f.to.clone()), c);
                            tasks[task_of[f.to.as_str()]].inputs.push(c);
                            c
                        }
                    };
                    let flow_name = format!("{} -> {}", e.id, f.to);
                    let guard = match (&f.predicate, rt.split) {
                        (_, Split::And) | (None, _) => FlowGuard::Always,
                        (Some(p), _) => match xpath::compile(p, &mut scope) {
                            Ok(g) => FlowGuard::Compiled(g),
                            Err(_) if opts.external_predicates => FlowGuard::External,
                            Err(reason) => {
                                return Err(ImportError::Predicate {
                                    flow: flow_name,
                                    expr: p.clone(),
                                    reason,
                                })
                            }
                        },
                    };
                    outs.push((
                        k,
                        Flow {
                            target,
                            target_element: f.to.clone(),
                            guard,
                            default: f.default && rt.split != Split::And,
                            predicate: f.predicate.clone(),
                            ordering: f.ordering,
                        },
                    ));
                }
                if rt.split != Split::And {
                    // Kernel order: non-default flows by `ordering` (document order among
                    // equals or when absent), the default flow last.
                    outs.sort_by_key(|(k, f)| (f.default, f.ordering.unwrap_or(i64::MAX), *k));
                }
                tasks[t].outputs = outs.into_iter().map(|(_, f)| f).collect();
            }
            _ => {
                let c = cond_of[&e.id];
                for f in &e.flows {
                    match task_of.get(f.to.as_str()) {
                        Some(&t) => {
                            if !tasks[t].inputs.contains(&c) {
                                tasks[t].inputs.push(c);
                            }
                        }
                        None => {
                            return Err(ImportError::malformed(
                                &e.id,
                                format!("flow from condition to condition '{}'", f.to),
                            ))
                        }
                    }
                }
            }
        }
        let _ = net;
    }

    // Timers: a variable timer reads its variable's register; timers the engine cannot run
    // (on a multiple-instance or composite task) are dropped with a note.
    for (ei, e) in elements.iter().enumerate() {
        let Some(&t) = task_of.get(e.id.as_str()) else {
            continue;
        };
        let task = &mut tasks[t];
        let Some(timer) = task.timer.as_mut() else {
            continue;
        };
        if task.mi.is_some() || task.composite.is_some() || task.subnet.is_some() {
            let what = if task.mi.is_some() {
                "a multiple-instance task"
            } else {
                "a composite task"
            };
            notes.push(format!(
                "timer of task '{}' ({timer}): not armed, the engine runs no timer on {what}",
                e.id
            ));
            task.timer = None;
            continue;
        }
        if let TimerWhen::Variable { name, register } = &mut timer.when {
            let (r, ty) = xpath::Scope::variable(&mut scope, &flat.net_of[ei], name)
                .map_err(|reason| ImportError::malformed(&e.id, format!("timer: {reason}")))?;
            if !matches!(ty, VarType::Int) {
                return Err(ImportError::malformed(
                    &e.id,
                    format!(
                        "timer variable '{name}' is of type {ty}; a timer reads milliseconds \
                         from an integer variable"
                    ),
                ));
            }
            *register = Some(r);
        }
    }
    for t in tasks.iter().filter(|t| t.timer.is_some()) {
        if let Some(timer) = &t.timer {
            notes.push(format!(
                "timer of task '{}': {timer}; on expiry the engine completes the task (an enabled \
                 task is skipped, a started one completed){}",
                t.id,
                if t.silent {
                    "; the task is silent (no work), so it waits for its timer"
                } else {
                    ""
                }
            ));
        }
    }

    // Initial values of the variables that got registers.
    for v in scope.vars.iter_mut() {
        if v.register.is_none() {
            continue;
        }
        let init = v.initial.as_deref().map(str::trim).unwrap_or("");
        v.initial_value = match &v.ty {
            VarType::Int | VarType::Decimal => {
                if init.is_empty() {
                    0
                } else {
                    init.parse::<i64>()
                        .ok()
                        .or_else(|| {
                            init.parse::<f64>()
                                .ok()
                                .filter(|f| f.fract() == 0.0)
                                .map(|f| f as i64)
                        })
                        .ok_or_else(|| {
                            ImportError::malformed(
                                format!("/{}/{}", v.net, v.name),
                                format!("initial value '{init}' is not an integer"),
                            )
                        })?
                }
            }
            VarType::Bool => i64::from(init == "true" || init == "1"),
            VarType::Str(_) => intern(scope.strings, init),
        };
    }

    // Cancellation sets.
    for e in &elements {
        let Kind::Task(rt) = &e.kind else { continue };
        let t = task_of[e.id.as_str()];
        for c in &rt.cancels {
            if let Some(&ci) = cond_of.get(c) {
                push_unique(&mut tasks[t].cancel_conditions, ci);
            } else if let Some(&ti) = task_of.get(c.as_str()) {
                push_unique(&mut tasks[t].cancel_tasks, ti);
            } else {
                return Err(ImportError::UnknownElement {
                    from: e.id.clone(),
                    id: c.clone(),
                });
            }
        }
        for (a, b) in &rt.cancel_flows {
            let c = implicit
                .get(&(a.clone(), b.clone()))
                .copied()
                .ok_or_else(|| ImportError::UnknownElement {
                    from: e.id.clone(),
                    id: format!("{a}->{b}"),
                })?;
            push_unique(&mut tasks[t].cancel_conditions, c);
        }
    }

    if opts.empty_tasks_silent {
        notes.extend(automatic_notes(&tasks, &conditions));
    }

    let net_id = spec.nets.first().map(|n| n.id.clone()).unwrap_or_default();
    Ok(Model {
        name: spec.name,
        format: spec.format,
        subnets: Vec::new(),
        net_id,
        conditions,
        tasks,
        input,
        output,
        variables,
        strings,
        notes,
    })
}

fn push_unique(v: &mut Vec<usize>, x: usize) {
    if !v.contains(&x) {
        v.push(x);
    }
}

/// What the engine does with silent tasks (they run themselves, docs/api.md "Tasks without
/// work"): which it runs, and the deferred choices between a silent task and another task,
/// which the client's next request decides.
fn automatic_notes(tasks: &[Task], conditions: &[Condition]) -> Vec<String> {
    let auto: Vec<usize> = (0..tasks.len())
        .filter(|&t| tasks[t].silent && !tasks[t].has_external() && tasks[t].timer.is_none())
        .collect();
    if auto.is_empty() {
        return Vec::new();
    }
    let names: Vec<&str> = auto.iter().map(|&t| tasks[t].id.as_str()).collect();
    let mut notes = vec![format!(
        "silent tasks run by the engine as soon as they are enabled: {names:?}"
    )];
    for &s in &auto {
        for (t, other) in tasks.iter().enumerate() {
            if t == s {
                continue;
            }
            let shared: Vec<&str> = tasks[s]
                .inputs
                .iter()
                .filter(|c| other.inputs.contains(c))
                .map(|&c| conditions.get(c).map_or("?", |c| c.id.as_str()))
                .collect();
            // Each pair once: a silent-silent pair is named from its lower index.
            if shared.is_empty() || (auto.contains(&t) && t < s) {
                continue;
            }
            notes.push(format!(
                "silent task '{}' and task '{}' share input {shared:?} (a deferred choice): \
                 the engine does not run '{}' while both are enabled; the client's next request \
                 decides (starting '{}' withdraws '{}'; naming a task that '{}' leads to runs it \
                 first)",
                tasks[s].id, other.id, tasks[s].id, other.id, tasks[s].id, tasks[s].id
            ));
        }
    }
    notes
}
