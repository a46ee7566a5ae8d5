//! The intermediate model (IR) every format compiles into, before it is lowered to a kernel net.
//!
//! A [`Model`] is a flat YAWL extended workflow net: named conditions (explicit ones from the
//! file and implicit ones materialised for task→task flows), tasks with join and split codes,
//! output flows in the kernel's evaluation order with compiled guards and default flags,
//! cancellation sets, the case variables with their register allocation and initial values,
//! multiple-instance attributes, and the source element id of everything.

use std::fmt;

/// Which file format (and dialect) a model came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceFormat {
    /// YAWL XML; `version` is the schema version as found (`2.2`, `4.0`, `Beta`, ...).
    Yawl { version: String },
    /// PNML place/transition net; `dialect` is `ptnet`, `pnmlcoremodel`, `woped`, ...
    Pnml { dialect: String },
    /// The project's JSON form (`docs/workflow.schema.json`).
    Json,
}

impl fmt::Display for SourceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceFormat::Yawl { version } => write!(f, "YAWL {version}"),
            SourceFormat::Pnml { dialect } => write!(f, "PNML ({dialect})"),
            SourceFormat::Json => write!(f, "JSON"),
        }
    }
}

/// Join code of a task (DESIGN.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Join {
    And,
    Xor,
    Or,
    Discriminator,
}

/// Split code of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    And,
    Xor,
    Or,
}

impl fmt::Display for Join {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Join::And => "and",
            Join::Xor => "xor",
            Join::Or => "or",
            Join::Discriminator => "discriminator",
        })
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Split::And => "and",
            Split::Xor => "xor",
            Split::Or => "or",
        })
    }
}

/// Guards are the kernel's own types: one definition of what a guard is, and libknhk the one
/// place that says what it means.
pub use knhk_kernel::{Guard, GuardOp, Operand, Term};

/// The always-false guard (the kernel's [`Guard::ALWAYS`] negated).
pub const NEVER: Guard = Guard::Term(Term::FALSE);

/// A guard in the readable form `knhk compile` prints (`r0 > 10 && r1 == 3`).
pub struct GuardText<'a>(pub &'a Guard);

fn write_term(f: &mut fmt::Formatter<'_>, t: &Term) -> fmt::Result {
    let rhs = match t.rhs {
        Operand::Const(c) => c.to_string(),
        Operand::Reg(r) => format!("r{r}"),
    };
    let l = t.lhs;
    match t.op {
        GuardOp::True => f.write_str("true"),
        GuardOp::False => f.write_str("false"),
        GuardOp::Bit => write!(f, "r{l} & {rhs} != 0"),
        GuardOp::NBit => write!(f, "r{l} & {rhs} == 0"),
        GuardOp::Eq => write!(f, "r{l} == {rhs}"),
        GuardOp::Ne => write!(f, "r{l} != {rhs}"),
        GuardOp::Lt => write!(f, "r{l} < {rhs}"),
        GuardOp::Le => write!(f, "r{l} <= {rhs}"),
        GuardOp::Gt => write!(f, "r{l} > {rhs}"),
        GuardOp::Ge => write!(f, "r{l} >= {rhs}"),
    }
}

impl fmt::Display for GuardText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b, sep) = match self.0 {
            Guard::Term(t) => return write_term(f, t),
            Guard::And(a, b) => (a, b, " && "),
            Guard::Or(a, b) => (a, b, " || "),
        };
        write_term(f, a)?;
        f.write_str(sep)?;
        write_term(f, b)
    }
}

/// What decides whether a flow is taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowGuard {
    /// No predicate (AND splits, or a flow without one): always true.
    Always,
    /// A predicate compiled into a kernel guard over case registers.
    Compiled(Guard),
    /// A predicate outside the compiled subset, imported with the external-predicates option:
    /// the client computes it and passes the branch bits when it completes the task.
    External,
}

/// A condition (place). `implicit` conditions were materialised for a task→task flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub id: String,
    pub name: Option<String>,
    pub implicit: bool,
}

/// An outgoing flow of a task, in kernel evaluation order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// Target condition index.
    pub target: usize,
    /// Source id of the flow's target element as written in the file (a task id when the
    /// target condition is implicit).
    pub target_element: String,
    pub guard: FlowGuard,
    pub default: bool,
    /// The predicate text as found in the file.
    pub predicate: Option<String>,
    /// `predicate ordering` as found.
    pub ordering: Option<i64>,
}

/// Multiple-instance attributes as found (lowered to the kernel's by `lower::mi_spec`, see
/// `docs/import.md`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MultiInstance {
    pub min: Option<String>,
    pub max: Option<String>,
    pub threshold: Option<String>,
    /// `static` or `dynamic`.
    pub creation_mode: Option<String>,
}

/// A task (transition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: String,
    pub name: Option<String>,
    pub join: Join,
    pub split: Split,
    /// Input conditions (indices), in source order.
    pub inputs: Vec<usize>,
    /// Output flows in kernel evaluation order (bit k of `branch_bits` is `outputs[k]`).
    pub outputs: Vec<Flow>,
    pub cancel_conditions: Vec<usize>,
    pub cancel_tasks: Vec<usize>,
    pub mi: Option<MultiInstance>,
    /// A silent task (PNML `$invisible$`/unlabelled transition, synthesised start/end,
    /// exit of a flattened composite task): no event in a log corresponds to it.
    pub silent: bool,
    /// The activity name events are matched against (`concept:name`).
    pub label: String,
    /// For the entry task of a flattened composite task: the sub-net's id.
    pub composite: Option<String>,
    /// Run as a sub-net case: index into the root model's [`Model::subnets`] of the net a
    /// child case of this task runs (the kernel task itself is atomic; the engine starts the
    /// child when the task starts and completes the task when the child completes).
    pub subnet: Option<usize>,
    /// The task's timer (YAWL `<timer>`, or a deadline of the JSON form), armed by the engine.
    pub timer: Option<Timer>,
}

/// When a task's timer starts running (YAWL `<trigger>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerTrigger {
    /// When the task is enabled (`OnEnabled`); it keeps running if the task is started.
    OnEnabled,
    /// When the task is started (`OnExecuting`).
    OnExecuting,
}

/// When a task's timer expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerWhen {
    /// A duration after the trigger: `months` calendar months (years count 12), then `millis`
    /// milliseconds. `text` is the duration as the model wrote it.
    After {
        months: u32,
        millis: u64,
        text: String,
    },
    /// A fixed time: milliseconds since the Unix epoch (YAWL `<expiry>`).
    At { unix_ms: i64 },
    /// A duration in milliseconds read from an integer variable when the timer starts; the
    /// register it lives in once lowered.
    Variable { name: String, register: Option<u8> },
}

/// A task timer: on expiry an enabled task is skipped (it completes without being started)
/// and a started one is completed, as the YAWL engine does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    pub trigger: TimerTrigger,
    pub when: TimerWhen,
}

impl fmt::Display for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = match self.trigger {
            TimerTrigger::OnEnabled => "on enablement",
            TimerTrigger::OnExecuting => "on start",
        };
        match &self.when {
            TimerWhen::After { text, .. } => write!(f, "{text}, armed {on}"),
            TimerWhen::At { unix_ms } => {
                write!(f, "at {unix_ms} ms since the Unix epoch, armed {on}")
            }
            TimerWhen::Variable { name, .. } => {
                write!(f, "after the milliseconds in variable '{name}', armed {on}")
            }
        }
    }
}

impl Timer {
    /// Parses an ISO 8601 duration (`PT30M`, `P3D`, `P1Y2M`) into a timer expiring that long
    /// after `trigger`.
    pub fn after(trigger: TimerTrigger, text: &str) -> Result<Timer, String> {
        let d = iso8601::duration(text.trim())
            .map_err(|_| format!("'{text}' is not an ISO 8601 duration (such as PT30M or P3D)"))?;
        let (months, millis) = match d {
            iso8601::Duration::YMDHMS {
                year,
                month,
                day,
                hour,
                minute,
                second,
                millisecond,
            } => {
                let months = u64::from(year) * 12 + u64::from(month);
                let secs = ((u64::from(day) * 24 + u64::from(hour)) * 60 + u64::from(minute)) * 60
                    + u64::from(second);
                (months, secs * 1000 + u64::from(millisecond))
            }
            iso8601::Duration::Weeks(w) => (0, u64::from(w) * 7 * 86_400_000),
        };
        let months = u32::try_from(months).map_err(|_| format!("duration '{text}' is too long"))?;
        Ok(Timer {
            trigger,
            when: TimerWhen::After {
                months,
                millis,
                text: text.trim().to_string(),
            },
        })
    }
}

impl Task {
    /// True when some output flow's predicate is supplied by the client.
    pub fn has_external(&self) -> bool {
        self.outputs.iter().any(|f| f.guard == FlowGuard::External)
    }
}

/// Type of a case variable, as far as guards care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarType {
    /// Integers (`int`, `integer`, `long`, ...); the register holds the value.
    Int,
    /// `double`, `decimal`, `float`: integral values only (registers are integers).
    Decimal,
    /// `boolean`: the register holds 0 or 1.
    Bool,
    /// `string` and every other type: the register holds the interned string id.
    Str(String),
}

impl fmt::Display for VarType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VarType::Int => f.write_str("int"),
            VarType::Decimal => f.write_str("decimal"),
            VarType::Bool => f.write_str("boolean"),
            VarType::Str(t) => f.write_str(t),
        }
    }
}

/// A case variable of a net (`/Net/name` in predicates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    /// The net (decomposition) id the variable belongs to.
    pub net: String,
    pub name: String,
    pub ty: VarType,
    /// `true` for an input parameter of the net, `false` for a local variable.
    pub input: bool,
    /// The initial value as written in the file.
    pub initial: Option<String>,
    /// The register guards read it from, when a predicate uses it.
    pub register: Option<u8>,
    /// The initial register value (integer, 0/1, or interned string id).
    pub initial_value: i64,
}

/// The intermediate model of one workflow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    pub name: String,
    pub format: SourceFormat,
    pub conditions: Vec<Condition>,
    pub tasks: Vec<Task>,
    pub input: usize,
    pub output: usize,
    pub variables: Vec<Variable>,
    /// Interned strings: `strings[i]` has id `i` (id 0 is the empty string).
    pub strings: Vec<String>,
    /// Mapping decisions applied while importing (flattened composites, synthesised start...).
    pub notes: Vec<String>,
    /// The nets that composite tasks run as sub-net cases (root model only; empty when every
    /// composite task was flattened). Each is a model of its own, named `<root>/<net id>`,
    /// whose tasks' [`Task::subnet`] index this list too (a recursive net names itself).
    pub subnets: Vec<Model>,
    /// The id of the net this model was built from (the root net, or a sub-net's
    /// decomposition id).
    pub net_id: String,
}

impl Model {
    /// The id of an interned string, as a guard compares it.
    pub fn intern_id(&self, s: &str) -> Option<i64> {
        self.strings
            .iter()
            .position(|x| x == s)
            .and_then(|i| i64::try_from(i).ok())
    }

    /// The initial register file of a case: each allocated variable's initial value.
    pub fn initial_registers(&self) -> [i64; crate::REGISTERS] {
        let mut regs = [0i64; crate::REGISTERS];
        for v in &self.variables {
            if let Some(r) = v.register {
                if let Some(slot) = regs.get_mut(usize::from(r)) {
                    *slot = v.initial_value;
                }
            }
        }
        regs
    }

    /// Gives task `task` (by id, or by label when no other task has it) the timer `timer`, set
    /// at registration for a model without timers of its own (a deadline): refused for a task
    /// that has a timer already, a multiple-instance or a composite task. Noted in `notes`.
    pub fn set_timer(&mut self, task: &str, timer: Timer) -> Result<(), String> {
        let t = match self.tasks.iter().position(|t| t.id == task) {
            Some(t) => t,
            None => {
                let mut by_label = self
                    .tasks
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| t.label == task);
                match (by_label.next(), by_label.next()) {
                    (Some((t, _)), None) => t,
                    (Some(_), Some(_)) => return Err("more than one task has that label".into()),
                    _ => return Err("the model has no such task".into()),
                }
            }
        };
        let tk = &mut self.tasks[t];
        if let Some(own) = &tk.timer {
            return Err(format!("task '{}' has a timer of its own ({own})", tk.id));
        }
        if tk.mi.is_some() || tk.composite.is_some() {
            return Err(format!(
                "task '{}' is a multiple-instance or composite task: no timer runs on it",
                tk.id
            ));
        }
        self.notes.push(format!(
            "timer of task '{}' (set at registration): {timer}; on expiry the engine completes \
             the task (an enabled task is skipped, a started one completed)",
            tk.id
        ));
        tk.timer = Some(timer);
        Ok(())
    }

    /// Number of flows: input flows plus output flows.
    pub fn flow_count(&self) -> usize {
        self.tasks
            .iter()
            .map(|t| t.inputs.len() + t.outputs.len())
            .sum()
    }

    /// Display name of a condition: its id.
    pub fn condition_id(&self, c: usize) -> &str {
        self.conditions.get(c).map(|c| c.id.as_str()).unwrap_or("?")
    }

    /// Display name of a task: its id.
    pub fn task_id(&self, t: usize) -> &str {
        self.tasks.get(t).map(|t| t.id.as_str()).unwrap_or("?")
    }

    /// Ids of the conditions in a marking bit set.
    pub fn marking_ids(&self, marking: u64) -> Vec<&str> {
        (0..self.conditions.len().min(64))
            .filter(|&c| marking & (1u64 << c) != 0)
            .map(|c| self.condition_id(c))
            .collect()
    }

    /// Ids of the tasks in a task bit set.
    pub fn task_ids(&self, set: u64) -> Vec<&str> {
        (0..self.tasks.len().min(64))
            .filter(|&t| set & (1u64 << t) != 0)
            .map(|t| self.task_id(t))
            .collect()
    }
}
