//! `knhk.v1` messages ↔ the engine's vocabulary.

use std::collections::HashMap;

use knhk_engine::engine::CaseView;
use knhk_engine::workers::{OpKind, State};
use knhk_engine::workflow::{RegisteredTimer, Workflow};
use knhk_engine::{BatchEvent, Data, EventKind, EventResult, TaskRef, Value};
use knhk_import::Format;
use tonic::Status;

use super::status::code;
use crate::proto;

/// A request value.
pub fn value_in(v: &proto::Value) -> Value {
    use proto::value::Kind;
    match &v.kind {
        Some(Kind::Int(i)) => Value::Int(*i),
        Some(Kind::Bool(b)) => Value::Bool(*b),
        Some(Kind::String(s)) => Value::Str(s.clone()),
        None => Value::Missing,
    }
}

/// Request data.
pub fn data_in(d: &HashMap<String, proto::Value>) -> Data {
    d.iter().map(|(k, v)| (k.clone(), value_in(v))).collect()
}

/// A value in a reply.
pub fn value_out(v: Value) -> proto::Value {
    use proto::value::Kind;
    let kind = match v {
        Value::Int(i) => Some(Kind::Int(i)),
        Value::Bool(b) => Some(Kind::Bool(b)),
        Value::Str(s) => Some(Kind::String(s)),
        Value::Missing => None,
    };
    proto::Value { kind }
}

/// A case state in a reply.
pub fn state_out(s: State) -> proto::CaseState {
    match s {
        State::Running => proto::CaseState::Running,
        State::Complete => proto::CaseState::Complete,
        State::Deadlocked => proto::CaseState::Deadlocked,
        State::Cancelled => proto::CaseState::Cancelled,
    }
}

/// A task event's lifecycle on the wire (a timer's completion is a COMPLETE with `timer` set).
pub fn lifecycle_out(l: knhk_engine::command::Lifecycle) -> proto::Lifecycle {
    use knhk_engine::command::Lifecycle as L;
    match l {
        L::Start => proto::Lifecycle::Start,
        L::Complete | L::TimerComplete => proto::Lifecycle::Complete,
        L::Withdraw => proto::Lifecycle::Withdraw,
        L::AteAbort => proto::Lifecycle::AteAbort,
        L::PiAbort => proto::Lifecycle::PiAbort,
        L::TimerSkip => proto::Lifecycle::Autoskip,
    }
}

/// A task timer of a registration.
pub fn task_timer_in(t: &proto::TaskTimer) -> Result<RegisteredTimer, Status> {
    use knhk_import::ir::TimerTrigger;
    let trigger = match proto::TimerTrigger::try_from(t.trigger) {
        Ok(proto::TimerTrigger::Enabled) => TimerTrigger::OnEnabled,
        Ok(proto::TimerTrigger::Started) => TimerTrigger::OnExecuting,
        _ => {
            return Err(Status::invalid_argument(format!(
                "task timer for {}: trigger must be TIMER_TRIGGER_ENABLED or \
                 TIMER_TRIGGER_STARTED",
                knhk_engine::error::echo(&t.task)
            )))
        }
    };
    Ok(RegisteredTimer {
        task: t.task.clone(),
        trigger,
        duration: t.duration.clone(),
    })
}

/// A requested case state (ListCases filter): None for unspecified.
pub fn state_in(s: proto::CaseState) -> Option<State> {
    match s {
        proto::CaseState::Unspecified => None,
        proto::CaseState::Running => Some(State::Running),
        proto::CaseState::Complete => Some(State::Complete),
        proto::CaseState::Deadlocked => Some(State::Deadlocked),
        proto::CaseState::Cancelled => Some(State::Cancelled),
    }
}

/// An event kind in a reply.
pub fn event_kind_out(k: EventKind) -> proto::EventKind {
    match k {
        EventKind::Task => proto::EventKind::Task,
        EventKind::CaseCreated => proto::EventKind::CaseCreated,
        EventKind::CaseCompleted => proto::EventKind::CaseCompleted,
        EventKind::CaseCancelled => proto::EventKind::CaseCancelled,
        EventKind::CaseDeadlocked => proto::EventKind::CaseDeadlocked,
    }
}

/// A case view in a reply.
pub fn case_out(v: &CaseView) -> proto::Case {
    let wf = &v.workflow;
    proto::Case {
        case_id: v.id,
        workflow_id: wf.id.clone(),
        workflow_version: wf.version,
        state: state_out(v.last.state) as i32,
        marking: wf.marking_names(v.last.marking),
        enabled_tasks: wf.task_names(v.last.enabled),
        busy_tasks: wf.task_names(v.last.busy),
        // Straight into the reply's map (no intermediate engine-side map per reply).
        data: wf
            .variables
            .iter()
            .filter_map(|var| {
                v.regs
                    .get(usize::from(var.register))
                    .map(|raw| (var.name.clone(), value_out(wf.value_of(var, *raw))))
            })
            .collect(),
        seq: v.last.seq,
        created_unix_nanos: v.created_ns,
        explicit_termination: v.last.flags & knhk_kernel::flags::EXPLICIT_TERMINATION != 0,
        archived: v.archived,
        timers: v
            .timers
            .iter()
            .map(|t| proto::ArmedTimer {
                task: wf.task_name(t.task).to_string(),
                deadline_unix_nanos: t.deadline_ns,
            })
            .collect(),
        parent_case_id: v.parent.as_ref().map_or(0, |(p, _, _)| *p),
        parent_task: v
            .parent
            .as_ref()
            .map(|(_, t, _)| t.clone())
            .unwrap_or_default(),
        parent_instance: v
            .parent
            .as_ref()
            .and_then(|(_, _, i)| (*i != knhk_engine::command::NO_INSTANCE).then_some(*i)),
        subnet_cases: v
            .children
            .iter()
            .map(|(task, instance, case_id)| proto::SubnetCase {
                task: task.clone(),
                case_id: *case_id,
                instance: (*instance != knhk_engine::command::NO_INSTANCE).then_some(*instance),
            })
            .collect(),
    }
}

/// A model format in a reply.
pub fn format_out(f: Format) -> proto::ModelFormat {
    match f {
        Format::Yawl => proto::ModelFormat::Yawl,
        Format::Pnml => proto::ModelFormat::Pnml,
        Format::Json => proto::ModelFormat::Json,
    }
}

/// A requested model format: None for unspecified (detect it).
pub fn format_in(raw: i32) -> Result<Option<Format>, Status> {
    match proto::ModelFormat::try_from(raw) {
        Ok(proto::ModelFormat::Unspecified) => Ok(None),
        Ok(proto::ModelFormat::Yawl) => Ok(Some(Format::Yawl)),
        Ok(proto::ModelFormat::Pnml) => Ok(Some(Format::Pnml)),
        Ok(proto::ModelFormat::Json) => Ok(Some(Format::Json)),
        Err(_) => Err(Status::invalid_argument(format!(
            "format {raw} is not a ModelFormat"
        ))),
    }
}

/// A workflow in a reply.
pub fn workflow_out(w: &Workflow) -> proto::Workflow {
    proto::Workflow {
        workflow_id: w.id.clone(),
        version: w.version,
        name: w.name.clone(),
        format: format_out(w.format) as i32,
        conditions: w.conditions.clone(),
        tasks: w
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| proto::TaskInfo {
                name: t.name.clone(),
                index: u32::try_from(i).unwrap_or(u32::MAX),
                join: t.join.clone(),
                split: t.split.clone(),
                label: t.label.clone(),
                silent: t.silent,
                automatic: t.automatic,
                timer: t.timer.as_ref().map(|x| x.to_string()).unwrap_or_default(),
                subnet: t.subnet.clone().unwrap_or_default(),
            })
            .collect(),
        input_condition: w.input_condition.clone(),
        output_condition: w.output_condition.clone(),
        variables: w.variables.iter().map(|v| v.name.clone()).collect(),
        cases_created: w.cases_created(),
        registered_unix_nanos: w.registered_unix_nanos,
        client_predicates: w
            .tasks
            .iter()
            .flat_map(|t| {
                t.client_predicates.iter().map(|p| proto::ClientPredicate {
                    task: t.name.clone(),
                    bit: p.bit,
                    target: p.target.clone(),
                    predicate: p.predicate.clone(),
                })
            })
            .collect(),
        manual_silent_tasks: w.manual_silent_tasks,
        retired: w.retired.load(std::sync::atomic::Ordering::Acquire),
        deleted: w.deleted.load(std::sync::atomic::Ordering::Acquire),
        subnets: w.subnets.iter().map(|s| workflow_out(s)).collect(),
    }
}

/// A bulk event.
pub fn event_in(ev: proto::Event) -> BatchEvent {
    use proto::event::Task;
    let op = match proto::EventOp::try_from(ev.op) {
        Ok(proto::EventOp::CreateCase) => Ok(OpKind::Create),
        Ok(proto::EventOp::Start) => Ok(OpKind::Start),
        Ok(proto::EventOp::Complete) => Ok(OpKind::Complete),
        Ok(proto::EventOp::Fire) => Ok(OpKind::Fire),
        Ok(proto::EventOp::CancelTask) => Ok(OpKind::CancelTask),
        Ok(proto::EventOp::CancelCase) => Ok(OpKind::CancelCase),
        _ => Err(ev.op),
    };
    BatchEvent {
        op,
        case_id: ev.case_id,
        task: ev.task.map(|t| match t {
            Task::TaskName(n) => TaskRef::Name(n),
            Task::TaskIndex(i) => TaskRef::Index(i),
        }),
        workflow_id: ev.workflow_id,
        data: if ev.data.is_empty() {
            Data::new()
        } else {
            data_in(&ev.data)
        },
        branch_bits: ev.branch_bits,
        expected_seq: ev.expected_seq,
    }
}

/// A bulk event's result.
pub fn result_out(r: EventResult) -> proto::EventResult {
    let (state, case_seq) = r
        .state
        .map_or((0, 0), |(s, seq)| (state_out(s) as i32, seq));
    match r.error {
        None => proto::EventResult {
            code: 0,
            message: String::new(),
            case_id: r.case_id,
            state,
            case_seq,
        },
        Some(e) => proto::EventResult {
            code: code(&e) as i32,
            message: e.to_string(),
            case_id: r.case_id,
            state,
            case_seq,
        },
    }
}
