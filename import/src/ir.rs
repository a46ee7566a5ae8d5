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

/// Comparison operator of a guard term (mirrors `knhk_guard_op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuardOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    True,
    False,
}

impl GuardOp {
    /// The operator that gives the negated comparison (`!(a < b)` is `a >= b`).
    pub fn negate(self) -> GuardOp {
        match self {
            GuardOp::Eq => GuardOp::Ne,
            GuardOp::Ne => GuardOp::Eq,
            GuardOp::Lt => GuardOp::Ge,
            GuardOp::Le => GuardOp::Gt,
            GuardOp::Gt => GuardOp::Le,
            GuardOp::Ge => GuardOp::Lt,
            GuardOp::True => GuardOp::False,
            GuardOp::False => GuardOp::True,
        }
    }
    /// The operator with its operands swapped (`a < b` is `b > a`).
    pub fn mirror(self) -> GuardOp {
        match self {
            GuardOp::Lt => GuardOp::Gt,
            GuardOp::Le => GuardOp::Ge,
            GuardOp::Gt => GuardOp::Lt,
            GuardOp::Ge => GuardOp::Le,
            other => other,
        }
    }
    /// Evaluates the comparison on two values.
    pub fn eval(self, a: i64, b: i64) -> bool {
        match self {
            GuardOp::Eq => a == b,
            GuardOp::Ne => a != b,
            GuardOp::Lt => a < b,
            GuardOp::Le => a <= b,
            GuardOp::Gt => a > b,
            GuardOp::Ge => a >= b,
            GuardOp::True => true,
            GuardOp::False => false,
        }
    }
    fn symbol(self) -> &'static str {
        match self {
            GuardOp::Eq => "==",
            GuardOp::Ne => "!=",
            GuardOp::Lt => "<",
            GuardOp::Le => "<=",
            GuardOp::Gt => ">",
            GuardOp::Ge => ">=",
            GuardOp::True => "true",
            GuardOp::False => "false",
        }
    }
}

/// Right-hand operand of a guard term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operand {
    Const(i64),
    Reg(u8),
}

/// One comparison `regs[lhs] op rhs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Term {
    pub op: GuardOp,
    pub lhs: u8,
    pub rhs: Operand,
}

impl Term {
    /// The always-true term.
    pub const TRUE: Term = Term {
        op: GuardOp::True,
        lhs: 0,
        rhs: Operand::Const(0),
    };
    /// The always-false term.
    pub const FALSE: Term = Term {
        op: GuardOp::False,
        lhs: 0,
        rhs: Operand::Const(0),
    };

    /// Evaluates the term on a register file.
    pub fn eval(&self, regs: &[i64]) -> bool {
        let a = regs.get(usize::from(self.lhs)).copied().unwrap_or(0);
        let b = match self.rhs {
            Operand::Const(c) => c,
            Operand::Reg(r) => regs.get(usize::from(r)).copied().unwrap_or(0),
        };
        self.op.eval(a, b)
    }
}

/// How the two terms of a guard combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Combine {
    And,
    Or,
}

/// A compiled guard: at most two terms combined by AND or OR (the kernel's guard form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guard {
    pub terms: [Term; 2],
    pub combine: Combine,
}

impl Guard {
    /// The always-true guard.
    pub const TRUE: Guard = Guard {
        terms: [Term::TRUE, Term::TRUE],
        combine: Combine::And,
    };
    /// The always-false guard.
    pub const FALSE: Guard = Guard {
        terms: [Term::FALSE, Term::TRUE],
        combine: Combine::And,
    };

    /// A guard of one term.
    pub fn single(t: Term) -> Guard {
        Guard {
            terms: [t, Term::TRUE],
            combine: Combine::And,
        }
    }

    /// Evaluates the guard on a register file (used by tests and by `compile` output).
    pub fn eval(&self, regs: &[i64]) -> bool {
        let a = self.terms[0].eval(regs);
        let b = self.terms[1].eval(regs);
        match self.combine {
            Combine::And => a && b,
            Combine::Or => a || b,
        }
    }
}

impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.op {
            GuardOp::True | GuardOp::False => f.write_str(self.op.symbol()),
            op => match self.rhs {
                Operand::Const(c) => write!(f, "r{} {} {}", self.lhs, op.symbol(), c),
                Operand::Reg(r) => write!(f, "r{} {} r{}", self.lhs, op.symbol(), r),
            },
        }
    }
}

impl fmt::Display for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b] = &self.terms;
        match (self.combine, b.op) {
            (Combine::And, GuardOp::True) => write!(f, "{a}"),
            (Combine::And, _) => write!(f, "{a} && {b}"),
            (Combine::Or, _) => write!(f, "{a} || {b}"),
        }
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

/// Multiple-instance attributes as found (the kernel runs the task as one instance; the
/// caller counts instances, see `docs/import.md`).
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
