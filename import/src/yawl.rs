//! YAWL XML reader: schema 2.x, 3.0, 4.0 (`http://www.yawlfoundation.org/yawlschema`) and Beta
//! (`http://www.citi.qut.edu.au/yawl`, with the old `<rootNet>` form). Element names are matched
//! by local name, so every version's namespace is read the same way.

use std::collections::BTreeMap;

use roxmltree::Node;

use crate::error::ImportError;
use crate::ir::{Join, MultiInstance, SourceFormat, Split, Timer, TimerTrigger, TimerWhen};
use crate::raw::{Kind, RawElement, RawFlow, RawNet, RawSpec, RawTask, RawVar};
use crate::xml::{attr, child, child_text, children, parse, req_attr, text};

const BETA_NS: &str = "http://www.citi.qut.edu.au/yawl";

/// Reads a YAWL specification set (the first specification in it).
pub(crate) fn read(src: &str) -> Result<RawSpec, ImportError> {
    let doc = parse(src, "YAWL XML")?;
    let root = doc.root_element();
    let spec = if root.tag_name().name() == "specification" {
        root
    } else {
        child(root, "specification")
            .ok_or_else(|| ImportError::malformed("specificationSet", "no <specification>"))?
    };
    let ns = root.tag_name().namespace().unwrap_or("");
    let version = match (ns == BETA_NS, attr(root, "version")) {
        (true, Some(v)) if v.starts_with("Beta") => v.to_string(),
        (true, Some(v)) => format!("Beta {v}"),
        (true, None) => "Beta".to_string(),
        (false, Some(v)) => v.to_string(),
        (false, None) => "unknown".to_string(),
    };
    let name = attr(spec, "uri")
        .or_else(|| attr(spec, "id"))
        .map(str::to_string)
        .or_else(|| child_text(spec, "name"))
        .unwrap_or_else(|| "specification".into());

    let mut nets = Vec::new();
    let mut root_net = None;
    let mut skipped = Unexecuted::default();
    // Beta: <rootNet id="..."> holds the root net directly.
    if let Some(rn) = child(spec, "rootNet") {
        root_net = Some(read_net(rn, &mut skipped)?);
    }
    if child(spec, "schema").is_some_and(|s| s.children().any(|c| c.is_element())) {
        skipped.add(
            "<xs:schema> type definitions (complex data types): not used; variables of those \
             types are not stored (case data is not a document)",
            &name,
        );
    }
    for d in children(spec, "decomposition") {
        let ty = attr(d, "type").unwrap_or("");
        if !ty.ends_with("NetFactsType") {
            work_decomposition(d, &mut skipped);
            continue;
        }
        let net = read_net(d, &mut skipped)?;
        if attr(d, "isRootNet") == Some("true") {
            if root_net.is_some() {
                return Err(ImportError::malformed(&net.id, "second root net"));
            }
            root_net = Some(net);
        } else {
            nets.push(net);
        }
    }
    let root_net = root_net.ok_or_else(|| {
        ImportError::malformed(&name, "no root net (isRootNet=\"true\" or <rootNet>)")
    })?;
    nets.insert(0, root_net);
    Ok(RawSpec {
        name,
        format: SourceFormat::Yawl { version },
        nets,
        notes: skipped.notes(),
    })
}

/// Constructs of the file that knhk does not execute, and where they are: each becomes one
/// note (`knhk check`, `RegisterWorkflow.notes`), so nothing is ignored silently.
#[derive(Default)]
struct Unexecuted {
    /// What is not executed (with why) → ids of the elements carrying it, in file order.
    found: BTreeMap<&'static str, Vec<String>>,
    /// Unknown elements: tag → ids.
    unknown: BTreeMap<String, Vec<String>>,
}

impl Unexecuted {
    fn add(&mut self, what: &'static str, id: &str) {
        let ids = self.found.entry(what).or_default();
        if !ids.iter().any(|x| x == id) {
            ids.push(id.to_string());
        }
    }

    fn unknown(&mut self, tag: &str, id: &str) {
        let ids = self.unknown.entry(tag.to_string()).or_default();
        if !ids.iter().any(|x| x == id) {
            ids.push(id.to_string());
        }
    }

    fn notes(self) -> Vec<String> {
        let mut out: Vec<String> = self
            .found
            .into_iter()
            .map(|(what, ids)| format!("not executed: {what}: {ids:?}"))
            .collect();
        out.extend(self.unknown.into_iter().map(|(tag, ids)| {
            format!(
                "not executed: unknown element <{tag}> (an extension knhk does not read): {ids:?}"
            )
        }));
        out
    }
}

/// Children of a `<task>` that control flow reads (everything else is reported).
const TASK_CONTROL: &[&str] = &[
    "name",
    "documentation",
    "flowsInto",
    "join",
    "split",
    "removesTokens",
    "removesTokensFromFlow",
    "decomposesTo",
    "minimum",
    "maximum",
    "threshold",
    "creationMode",
    "miDataInput",
    "miDataOutput",
];

/// What a task child that knhk does not execute means, by tag.
fn task_construct(tag: &str) -> Option<&'static str> {
    Some(match tag {
        "resourcing" => {
            "<resourcing> (offer, allocation and start of the work by the YAWL resource \
             service; roles, participants): knhk assigns no one, a client starts and completes \
             the task"
        }
        "startingMappings" | "completedMappings" | "enablementMappings" => {
            "task data mappings (<startingMappings>, <completedMappings>): not applied; case \
             data is not a document, guards read the values clients give"
        }
        "timer" => return None,
        "customForm" => "<customForm> (a custom work form): not used, the client presents the work",
        "configuration" | "defaultConfiguration" => {
            "<configuration> (configurable YAWL): not applied, the net runs as written"
        }
        "logPredicate" => "<logPredicate> (what YAWL's process log records): not used",
        _ => return None,
    })
}

/// A non-net decomposition (the work of atomic tasks): what of it knhk does not execute.
fn work_decomposition(d: Node<'_, '_>, skipped: &mut Unexecuted) {
    let id = attr(d, "id").unwrap_or("?");
    for c in d.children().filter(|c| c.is_element()) {
        match c.tag_name().name() {
            "name" | "documentation" | "externalInteraction" => {}
            "yawlService" => {
                let service = attr(c, "id").unwrap_or("");
                if service.to_ascii_lowercase().contains("worklet") {
                    skipped.add(
                        "worklet service (<yawlService> naming the worklet service): no worklet \
                         is selected or run; decompositions",
                        id,
                    );
                } else {
                    skipped.add(
                        "web-service gateway (<yawlService>: a YAWL custom service the engine \
                         would call): not invoked, a client does the work; decompositions",
                        id,
                    );
                }
            }
            "codelet" => skipped.add(
                "<codelet> (Java code YAWL runs for an automated task): not run, a client \
                 completes the task; decompositions",
                id,
            ),
            "inputParam" | "outputParam" => skipped.add(
                "task parameters (<inputParam>/<outputParam> of a task's decomposition: the data \
                 handed to and returned by the work): not passed; decompositions",
                id,
            ),
            "externalDataGateway" => skipped.add(
                "<externalDataGateway> (data from an external source): not read",
                id,
            ),
            other => skipped.unknown(other, id),
        }
    }
}

fn read_var(v: Node<'_, '_>, input: bool) -> Result<RawVar, ImportError> {
    let name = child_text(v, "name")
        .or_else(|| attr(v, "name").map(str::to_string))
        .ok_or_else(|| ImportError::malformed(format!("<{}>", v.tag_name().name()), "no name"))?;
    let ty = child_text(v, "type")
        .or_else(|| attr(v, "type").map(str::to_string))
        .unwrap_or_else(|| "string".into());
    let initial = child_text(v, "initialValue").or_else(|| child_text(v, "defaultValue"));
    Ok(RawVar {
        name,
        ty,
        initial,
        input,
    })
}

fn read_net(d: Node<'_, '_>, skipped: &mut Unexecuted) -> Result<RawNet, ImportError> {
    let id = req_attr(d, "id", "net")?.to_string();
    for c in d.children().filter(|c| c.is_element()) {
        match c.tag_name().name() {
            "externalDataGateway" => skipped.add(
                "<externalDataGateway> (data from an external source): not read",
                &id,
            ),
            "name"
            | "documentation"
            | "inputParam"
            | "localVariable"
            | "outputParam"
            | "processControlElements" => {}
            other => skipped.unknown(other, &id),
        }
    }
    let mut variables: Vec<RawVar> = Vec::new();
    for v in d.children().filter(|c| c.is_element()) {
        let input = match v.tag_name().name() {
            "inputParam" => true,
            "localVariable" | "outputParam" => false,
            _ => continue,
        };
        let rv = read_var(v, input)?;
        match variables.iter_mut().find(|x| x.name == rv.name) {
            Some(x) => x.input |= rv.input,
            None => variables.push(rv),
        }
    }
    let pce = child(d, "processControlElements")
        .ok_or_else(|| ImportError::malformed(&id, "net has no <processControlElements>"))?;
    let mut elements = Vec::new();
    for e in pce.children().filter(|c| c.is_element()) {
        let tag = e.tag_name().name();
        let kind = match tag {
            "inputCondition" => Kind::Input,
            "outputCondition" => Kind::Output,
            "condition" => Kind::Condition,
            "task" => {
                let tid = attr(e, "id").unwrap_or("?");
                for c in e.children().filter(|c| c.is_element()) {
                    let tag = c.tag_name().name();
                    if tag == "timer" && child(c, "netparam").is_some() {
                        skipped.add(
                            "<timer><netparam> (YAWL's late-bound timer, read from a YTimerType \
                             variable when the task is enabled): not armed, case data is not a \
                             document; the task waits for a client",
                            tid,
                        );
                    }
                    if TASK_CONTROL.contains(&tag) || tag == "timer" {
                        continue;
                    }
                    match task_construct(tag) {
                        Some(what) => skipped.add(what, tid),
                        None => skipped.unknown(tag, tid),
                    }
                }
                Kind::Task(read_task(e)?)
            }
            other => {
                skipped.unknown(other, &id);
                continue;
            }
        };
        let eid = req_attr(e, "id", tag)?.to_string();
        let mut flows = Vec::new();
        for f in children(e, "flowsInto") {
            let to = child(f, "nextElementRef")
                .and_then(|n| attr(n, "id"))
                .ok_or_else(|| {
                    ImportError::malformed(&eid, "<flowsInto> without <nextElementRef id>")
                })?;
            let pred = child(f, "predicate");
            let ordering = match pred.and_then(|p| attr(p, "ordering")) {
                None => None,
                Some(o) => Some(o.trim().parse::<i64>().map_err(|_| {
                    ImportError::malformed(
                        &eid,
                        format!("predicate ordering '{o}' is not an integer"),
                    )
                })?),
            };
            flows.push(RawFlow {
                to: to.to_string(),
                predicate: pred.and_then(text),
                ordering,
                default: child(f, "isDefaultFlow").is_some(),
            });
        }
        elements.push(RawElement {
            id: eid,
            name: child_text(e, "name"),
            kind,
            flows,
        });
    }
    Ok(RawNet {
        id,
        elements,
        variables,
    })
}

/// A task's `<timer>`: `<trigger>` with `<duration>` (ISO 8601), `<durationparams>` (ticks of
/// an interval) or `<expiry>` (ms since the Unix epoch); or `<netparam>`, a variable naming
/// the timer at run time.
fn read_timer(n: Node<'_, '_>, task: &str) -> Result<Option<Timer>, ImportError> {
    let bad = |why: String| ImportError::malformed(task, format!("<timer>: {why}"));
    if child(n, "netparam").is_some() {
        // noted by read_net: not armed
        return Ok(None);
    }
    let trigger = match child_text(n, "trigger").as_deref().map(str::trim) {
        Some("OnEnabled") => TimerTrigger::OnEnabled,
        Some("OnExecuting") => TimerTrigger::OnExecuting,
        Some(other) => return Err(bad(format!("unknown <trigger> '{other}'"))),
        None => return Err(bad("no <trigger> (OnEnabled or OnExecuting)".into())),
    };
    if let Some(d) = child_text(n, "duration") {
        return Timer::after(trigger, &d).map(Some).map_err(bad);
    }
    if let Some(p) = child(n, "durationparams") {
        let ticks = child_text(p, "ticks")
            .and_then(|t| t.trim().parse::<u64>().ok())
            .ok_or_else(|| bad("<durationparams> without a whole number of <ticks>".into()))?;
        let unit = child_text(p, "interval").unwrap_or_default();
        let iso = match unit.trim() {
            "YEAR" => format!("P{ticks}Y"),
            "MONTH" => format!("P{ticks}M"),
            "WEEK" => format!("P{}D", ticks.saturating_mul(7)),
            "DAY" => format!("P{ticks}D"),
            "HOUR" => format!("PT{ticks}H"),
            "MIN" => format!("PT{ticks}M"),
            "SEC" => format!("PT{ticks}S"),
            "MSEC" => {
                return Ok(Some(Timer {
                    trigger,
                    when: TimerWhen::After {
                        months: 0,
                        millis: ticks,
                        text: format!("{ticks} ms"),
                    },
                }))
            }
            other => return Err(bad(format!("unknown <interval> '{other}'"))),
        };
        return Timer::after(trigger, &iso).map(Some).map_err(bad);
    }
    if let Some(x) = child_text(n, "expiry") {
        let unix_ms = x.trim().parse::<i64>().map_err(|_| {
            bad(format!(
                "<expiry> '{x}' is not milliseconds since the Unix epoch"
            ))
        })?;
        return Ok(Some(Timer {
            trigger,
            when: TimerWhen::At { unix_ms },
        }));
    }
    Err(bad("none of <duration>, <durationparams>, <expiry>".into()))
}

fn read_task(e: Node<'_, '_>) -> Result<RawTask, ImportError> {
    let id = attr(e, "id").unwrap_or("?");
    let code = |tag: &'static str| -> Result<Option<String>, ImportError> {
        match child(e, tag) {
            None => Ok(None),
            Some(n) => Ok(Some(req_attr(n, "code", tag)?.to_string())),
        }
    };
    let join = match code("join")?.as_deref() {
        None | Some("xor") => Join::Xor,
        Some("and") => Join::And,
        Some("or") => Join::Or,
        Some(other) => {
            return Err(ImportError::malformed(
                id,
                format!("unknown join code '{other}'"),
            ))
        }
    };
    let split = match code("split")?.as_deref() {
        None | Some("and") => Split::And,
        Some("xor") => Split::Xor,
        Some("or") => Split::Or,
        Some(other) => {
            return Err(ImportError::malformed(
                id,
                format!("unknown split code '{other}'"),
            ))
        }
    };
    let mut t = RawTask::new(join, split);
    for r in children(e, "removesTokens") {
        t.cancels
            .push(req_attr(r, "id", "removesTokens")?.to_string());
    }
    for r in children(e, "removesTokensFromFlow") {
        let src = child(r, "flowSource").and_then(|n| attr(n, "id"));
        let dst = child(r, "flowDestination").and_then(|n| attr(n, "id"));
        match (src, dst) {
            (Some(a), Some(b)) => t.cancel_flows.push((a.to_string(), b.to_string())),
            _ => {
                return Err(ImportError::malformed(
                    id,
                    "<removesTokensFromFlow> needs <flowSource id> and <flowDestination id>",
                ))
            }
        }
    }
    t.decomposes_to = child(e, "decomposesTo")
        .and_then(|n| attr(n, "id"))
        .map(str::to_string);
    t.empty = t.decomposes_to.is_none();
    t.timer = match child(e, "timer") {
        None => None,
        Some(n) => read_timer(n, id)?,
    };
    let mi = MultiInstance {
        min: child_text(e, "minimum"),
        max: child_text(e, "maximum"),
        threshold: child_text(e, "threshold"),
        creation_mode: child(e, "creationMode")
            .and_then(|n| attr(n, "code"))
            .map(str::to_string),
    };
    let is_mi = attr(e, "type").is_some_and(|ty| ty.contains("MultipleInstance"));
    if is_mi || mi != MultiInstance::default() {
        t.mi = Some(mi);
    }
    Ok(t)
}
