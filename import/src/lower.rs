//! Lowering of a [`Model`] into a sealed kernel [`Net`]. Condition and task indices are the
//! model's indices, so kernel reports map straight back to element ids.

use knhk_kernel::{Element, Error, Net, SealError};

use crate::ir::{self, FlowGuard, Model};

/// A model lowered into a sealed kernel net (boxed: the hot form is ~33 KB).
pub struct Compiled {
    pub net: Box<Net>,
}

/// Why lowering failed, with the element ids involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowerError {
    /// The kernel status name (`KNHK_MULTI_MERGE`, ...) or builder error.
    pub status: String,
    /// Human-readable reason naming the elements.
    pub message: String,
    /// Ids of the elements involved.
    pub elements: Vec<String>,
    /// The kernel error, when it came from the kernel.
    pub error: Option<Error>,
}

fn join(j: ir::Join) -> knhk_kernel::Join {
    match j {
        ir::Join::And => knhk_kernel::Join::And,
        ir::Join::Xor => knhk_kernel::Join::Xor,
        ir::Join::Or => knhk_kernel::Join::Or,
        ir::Join::Discriminator => knhk_kernel::Join::Discriminator,
    }
}

fn split(s: ir::Split) -> knhk_kernel::Split {
    match s {
        ir::Split::And => knhk_kernel::Split::And,
        ir::Split::Xor => knhk_kernel::Split::Xor,
        ir::Split::Or => knhk_kernel::Split::Or,
    }
}

/// What a kernel status means, in words.
pub fn explain(e: Error) -> &'static str {
    match e {
        Error::CapacityConditions => "more than 64 conditions (the kernel's hot form holds 64)",
        Error::CapacityTasks => "more than 64 tasks (the kernel's hot form holds 64)",
        Error::CapacityBranches => "more than 8 outgoing flows on one task",
        Error::DuplicateFlow => "the same flow twice",
        Error::BadGuard => "a guard the kernel cannot evaluate",
        Error::NoInput => "no input condition",
        Error::NoOutput => "no output condition",
        Error::InputHasInflow => "a flow enters the input condition",
        Error::OutputHasOutflow => "a flow leaves the output condition",
        Error::TaskNoInput => "task without an incoming flow",
        Error::TaskNoOutput => "task without an outgoing flow",
        Error::Unreachable => "not reachable from the input condition",
        Error::CannotComplete => "the output condition cannot be reached from here",
        Error::NoDefault => "XOR/OR split without a default flow",
        Error::TwoDefaults => "XOR/OR split with more than one default flow",
        Error::MultiMerge => {
            "multi-merge (WCP-8): concurrent branches can put two tokens on one condition; \
             the kernel runs 1-safe nets"
        }
        Error::NonlocalOrJoin => {
            "non-local OR-join: no matching structured OR-split (refused by libknhk before \
             ABI 3)"
        }
        Error::OrJoinCap => {
            "non-local OR-join (WCP-37/38) whose seal-time analysis exceeds a cap: the kernel \
             decides it exactly (the YAWL rule, precomputed over the reachable states) or \
             refuses it"
        }
        Error::InputIsOutput => "input and output are the same condition",
        Error::CapacityMi => {
            "more than 4 multiple-instance tasks in one net (the kernel keeps a slot per MI \
             task in every case)"
        }
        Error::BadMi => "multiple-instance attributes the kernel cannot take",
        _ => "refused by the kernel",
    }
}

fn element_id(model: &Model, e: Element) -> Option<String> {
    match e {
        Element::None => None,
        Element::Condition(c) => Some(model.condition_id(c as usize).to_string()),
        Element::Task(t) => Some(model.task_id(t as usize).to_string()),
    }
}

fn seal_error(model: &Model, e: SealError) -> LowerError {
    let mut elements = Vec::new();
    let mut message = String::new();
    if let Some(id) = element_id(model, e.element) {
        let kind = if matches!(e.element, Element::Task(_)) {
            "task"
        } else {
            "condition"
        };
        message.push_str(&format!("{kind} '{id}': "));
        elements.push(id);
    }
    message.push_str(explain(e.error));
    if let Some(cap) = e.or_join_cap() {
        // `other` names the cap, not an element
        message.push_str(&format!(" (cap {})", cap.describe()));
    } else if let Some(o) = e.other {
        // For a multi-merge, `other` is the split whose branches meet; otherwise a task too.
        let id = model.task_id(o as usize).to_string();
        message.push_str(&format!(" (with task '{id}')"));
        elements.push(id);
    }
    LowerError {
        status: e.error.name().to_string(),
        message,
        elements,
        error: Some(e.error),
    }
}

fn builder_error(e: Error, what: String, elements: Vec<String>) -> LowerError {
    LowerError {
        status: e.name().to_string(),
        message: format!("{what}: {}", explain(e)),
        elements,
        error: Some(e),
    }
}

/// The kernel's multiple-instance attributes for YAWL's: a number is taken as is (YAWL's
/// "unbounded" 2147483647, and any maximum past [`knhk_kernel::MI_MAX_INSTANCES`], is capped
/// there; a threshold past the maximum is the maximum); an absent or non-numeric (XQuery) maximum is the cap, threshold the
/// maximum, minimum 1 (YAWL's own fallback for a query it cannot count). `creationMode
/// dynamic` allows instances to be added while the task runs. Err names what does not fit.
pub fn mi_spec(mi: &crate::ir::MultiInstance) -> Result<knhk_kernel::MiSpec, String> {
    let cap = knhk_kernel::MI_MAX_INSTANCES;
    let num = |v: &Option<String>| v.as_deref().and_then(|s| s.trim().parse::<u64>().ok());
    let minimum = num(&mi.min).unwrap_or(1);
    if minimum == 0 || minimum > u64::from(cap) {
        return Err(format!(
            "minimum {minimum} is outside 1..{cap} (the kernel's instances per task)"
        ));
    }
    let maximum = num(&mi.max).unwrap_or(u64::from(cap)).min(u64::from(cap));
    if maximum < minimum {
        return Err(format!("maximum {maximum} is below minimum {minimum}"));
    }
    // a threshold past the maximum (YAWL's "unbounded") waits for every instance: the maximum
    let threshold = num(&mi.threshold).unwrap_or(maximum).min(maximum);
    if threshold == 0 {
        return Err("threshold 0 (YAWL requires at least 1)".into());
    }
    Ok(knhk_kernel::MiSpec {
        minimum: minimum as u32,
        maximum: maximum as u32,
        threshold: threshold as u32,
        dynamic: mi
            .creation_mode
            .as_deref()
            .is_some_and(|m| m.eq_ignore_ascii_case("dynamic")),
        keep: false,
        count_register: None,
    })
}

fn u32_of(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// Builds and seals the kernel net for `model`.
pub fn lower(model: &Model) -> Result<Compiled, LowerError> {
    let mut net = Box::new(Net::new());
    for c in &model.conditions {
        net.add_condition()
            .map_err(|e| builder_error(e, format!("condition '{}'", c.id), vec![c.id.clone()]))?;
    }
    for t in &model.tasks {
        net.add_task(join(t.join), split(t.split))
            .map_err(|e| builder_error(e, format!("task '{}'", t.id), vec![t.id.clone()]))?;
    }
    net.set_input(u32_of(model.input)).map_err(|e| {
        builder_error(
            e,
            "input condition".into(),
            vec![model.condition_id(model.input).into()],
        )
    })?;
    net.set_output(u32_of(model.output)).map_err(|e| {
        builder_error(
            e,
            "output condition".into(),
            vec![model.condition_id(model.output).into()],
        )
    })?;
    for (ti, t) in model.tasks.iter().enumerate() {
        for &c in &t.inputs {
            net.input_flow(u32_of(c), u32_of(ti)).map_err(|e| {
                builder_error(
                    e,
                    format!("flow '{}' -> '{}'", model.condition_id(c), t.id),
                    vec![model.condition_id(c).into(), t.id.clone()],
                )
            })?;
        }
        for f in &t.outputs {
            let g = match &f.guard {
                FlowGuard::Compiled(g) => Some(*g),
                FlowGuard::Always | FlowGuard::External => None,
            };
            net.output_flow(u32_of(ti), u32_of(f.target), g.as_ref(), f.default)
                .map_err(|e| {
                    builder_error(
                        e,
                        format!("flow '{}' -> '{}'", t.id, f.target_element),
                        vec![t.id.clone(), f.target_element.clone()],
                    )
                })?;
        }
        for &c in &t.cancel_conditions {
            net.add_cancel_condition(u32_of(ti), u32_of(c))
                .map_err(|e| {
                    builder_error(
                        e,
                        format!("cancellation set of '{}'", t.id),
                        vec![t.id.clone()],
                    )
                })?;
        }
        for &v in &t.cancel_tasks {
            net.add_cancel_task(u32_of(ti), u32_of(v)).map_err(|e| {
                builder_error(
                    e,
                    format!("cancellation set of '{}'", t.id),
                    vec![t.id.clone()],
                )
            })?;
        }
        // multiple instances of an atomic task (a flattened composite task's entry runs its
        // sub-net once: see check.rs)
        if let (Some(mi), None) = (&t.mi, &t.composite) {
            let spec = mi_spec(mi).map_err(|m| LowerError {
                status: "KNHK_BAD_MI".into(),
                message: format!("multiple-instance task '{}': {m}", t.id),
                elements: vec![t.id.clone()],
                error: Some(Error::BadMi),
            })?;
            net.set_mi(u32_of(ti), spec).map_err(|e| {
                builder_error(
                    e,
                    format!("multiple-instance task '{}'", t.id),
                    vec![t.id.clone()],
                )
            })?;
        }
    }
    net.seal().map_err(|e| seal_error(model, e))?;
    Ok(Compiled { net })
}
