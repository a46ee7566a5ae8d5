//! The JSON form: the same model as YAWL, written by hand. Schema: `docs/workflow.schema.json`;
//! examples: `docs/examples/`.
//!
//! ```json
//! { "name": "approval", "id": "Net",
//!   "variables": [ { "name": "amount", "type": "int", "initial": "0" } ],
//!   "conditions": [ { "id": "start", "kind": "input", "flows": [ { "to": "A" } ] },
//!                   { "id": "end", "kind": "output" } ],
//!   "tasks": [ { "id": "A", "join": "xor", "split": "xor",
//!                "flows": [ { "to": "B", "predicate": "/Net/amount > 100" },
//!                           { "to": "end", "default": true } ] },
//!              { "id": "B", "flows": [ { "to": "end" } ] } ] }
//! ```

use serde::Deserialize;

use crate::error::ImportError;
use crate::ir::{Join, MultiInstance, SourceFormat, Split, Timer, TimerTrigger, TimerWhen};
use crate::raw::{Kind, RawElement, RawFlow, RawNet, RawSpec, RawTask, RawVar};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonSpec {
    name: Option<String>,
    #[serde(rename = "$schema")]
    _schema: Option<String>,
    #[serde(default = "default_net_id")]
    id: String,
    #[serde(default)]
    variables: Vec<JsonVar>,
    #[serde(default)]
    conditions: Vec<JsonCondition>,
    #[serde(default)]
    tasks: Vec<JsonTask>,
    #[serde(default)]
    subnets: Vec<JsonNet>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonNet {
    #[serde(default = "default_net_id")]
    id: String,
    #[serde(default)]
    variables: Vec<JsonVar>,
    #[serde(default)]
    conditions: Vec<JsonCondition>,
    #[serde(default)]
    tasks: Vec<JsonTask>,
}

fn default_net_id() -> String {
    "Net".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonVar {
    name: String,
    #[serde(rename = "type", default = "default_type")]
    ty: String,
    initial: Option<serde_json::Value>,
    #[serde(default)]
    input: bool,
}

fn default_type() -> String {
    "string".into()
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum CondKind {
    Input,
    Output,
    Condition,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonCondition {
    id: String,
    name: Option<String>,
    kind: Option<CondKind>,
    #[serde(default)]
    flows: Vec<JsonFlow>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonFlow {
    to: String,
    predicate: Option<String>,
    ordering: Option<i64>,
    #[serde(default)]
    default: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum JsonJoin {
    And,
    Xor,
    Or,
    Discriminator,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum JsonSplit {
    And,
    Xor,
    Or,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JsonMi {
    min: Option<serde_json::Value>,
    max: Option<serde_json::Value>,
    threshold: Option<serde_json::Value>,
    creation_mode: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JsonTask {
    id: String,
    name: Option<String>,
    label: Option<String>,
    join: Option<JsonJoin>,
    split: Option<JsonSplit>,
    #[serde(default)]
    flows: Vec<JsonFlow>,
    #[serde(default)]
    cancels: Vec<String>,
    #[serde(default)]
    cancels_flows: Vec<[String; 2]>,
    multi_instance: Option<JsonMi>,
    decomposes_to: Option<String>,
    #[serde(default)]
    silent: bool,
    timer: Option<JsonTimer>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum JsonTrigger {
    Enabled,
    Started,
}

/// A task deadline: `trigger` says when it starts; exactly one of `duration` (ISO 8601),
/// `expiry` (ms since the Unix epoch) or `variable` (an integer variable holding milliseconds,
/// read when the timer starts).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonTimer {
    trigger: JsonTrigger,
    duration: Option<String>,
    expiry: Option<i64>,
    variable: Option<String>,
}

fn timer(task: &str, t: JsonTimer) -> Result<Timer, ImportError> {
    let trigger = match t.trigger {
        JsonTrigger::Enabled => TimerTrigger::OnEnabled,
        JsonTrigger::Started => TimerTrigger::OnExecuting,
    };
    match (t.duration, t.expiry, t.variable) {
        (Some(d), None, None) => Timer::after(trigger, &d)
            .map_err(|why| ImportError::malformed(task, format!("timer: {why}"))),
        (None, Some(unix_ms), None) => Ok(Timer {
            trigger,
            when: TimerWhen::At { unix_ms },
        }),
        (None, None, Some(name)) => Ok(Timer {
            trigger,
            when: TimerWhen::Variable {
                name,
                register: None,
            },
        }),
        _ => Err(ImportError::malformed(
            task,
            "timer: give exactly one of duration, expiry, variable",
        )),
    }
}

fn scalar(v: Option<serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn flows(v: Vec<JsonFlow>) -> Vec<RawFlow> {
    v.into_iter()
        .map(|f| RawFlow {
            to: f.to,
            predicate: f.predicate,
            ordering: f.ordering,
            default: f.default,
        })
        .collect()
}

fn net(n: JsonNet) -> Result<RawNet, ImportError> {
    let mut elements = Vec::new();
    for c in n.conditions {
        let kind = match c.kind {
            Some(CondKind::Input) => Kind::Input,
            Some(CondKind::Output) => Kind::Output,
            Some(CondKind::Condition) | None => Kind::Condition,
        };
        elements.push(RawElement {
            id: c.id,
            name: c.name,
            kind,
            flows: flows(c.flows),
        });
    }
    for t in n.tasks {
        let join = match t.join {
            Some(JsonJoin::And) => Join::And,
            Some(JsonJoin::Xor) | None => Join::Xor,
            Some(JsonJoin::Or) => Join::Or,
            Some(JsonJoin::Discriminator) => Join::Discriminator,
        };
        let split = match t.split {
            Some(JsonSplit::And) | None => Split::And,
            Some(JsonSplit::Xor) => Split::Xor,
            Some(JsonSplit::Or) => Split::Or,
        };
        let mut rt = RawTask::new(join, split);
        rt.cancels = t.cancels;
        rt.cancel_flows = t.cancels_flows.into_iter().map(|[a, b]| (a, b)).collect();
        rt.mi = t.multi_instance.map(|m| MultiInstance {
            min: scalar(m.min),
            max: scalar(m.max),
            threshold: scalar(m.threshold),
            creation_mode: m.creation_mode,
        });
        rt.decomposes_to = t.decomposes_to;
        rt.silent = t.silent;
        rt.label = t.label;
        rt.timer = t.timer.map(|x| timer(&t.id, x)).transpose()?;
        elements.push(RawElement {
            id: t.id,
            name: t.name,
            kind: Kind::Task(rt),
            flows: flows(t.flows),
        });
    }
    let variables = n
        .variables
        .into_iter()
        .map(|v| RawVar {
            name: v.name,
            ty: v.ty,
            initial: scalar(v.initial),
            input: v.input,
        })
        .collect();
    Ok(RawNet {
        id: n.id,
        elements,
        variables,
    })
}

/// Reads the JSON form.
pub(crate) fn read(src: &str) -> Result<RawSpec, ImportError> {
    let spec: JsonSpec = serde_json::from_str(src).map_err(|e| ImportError::Syntax {
        format: "JSON",
        reason: e.to_string(),
    })?;
    let name = spec.name.unwrap_or_else(|| spec.id.clone());
    let root = JsonNet {
        id: spec.id,
        variables: spec.variables,
        conditions: spec.conditions,
        tasks: spec.tasks,
    };
    let mut nets = vec![net(root)?];
    for n in spec.subnets {
        nets.push(net(n)?);
    }
    Ok(RawSpec {
        name,
        format: SourceFormat::Json,
        nets,
        notes: Vec::new(),
    })
}
