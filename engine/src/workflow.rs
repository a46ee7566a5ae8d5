//! Registered workflows: the sealed kernel net of each, and the names that the API speaks in
//! (condition, task and variable names ↔ kernel indices), plus data conversion to registers.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use knhk_import::ir::{Model, VarType};
use knhk_kernel::Net;

use knhk_import::Format;

use crate::command::{Data, Value};
use crate::error::EngineError;
use crate::workers::REGISTERS;

/// One task as the API names it.
#[derive(Debug, Clone)]
pub struct TaskMeta {
    /// The task's id in the model: the name requests use.
    pub name: String,
    /// The activity label events are matched against (XES `concept:name`).
    pub label: String,
    /// No event corresponds to it (invisible / synthesised task): not exported to XES.
    pub silent: bool,
    /// The engine runs it itself once it is enabled (a silent task of a workflow registered
    /// without `manual_silent_tasks`, whose flows need no client predicate): see
    /// [`Workflow::free_auto`] and `crate::auto`.
    pub automatic: bool,
    pub join: String,
    pub split: String,
    /// Its outgoing flows whose predicate the client evaluates (registered with client
    /// predicates): completing it takes `branch_bits`.
    pub client_predicates: Vec<ClientPredicate>,
    /// Its timer: on expiry the engine skips it (enabled) or completes it (started).
    pub timer: Option<knhk_import::ir::Timer>,
    /// A composite task run as a sub-net case: the id of the sub-net workflow its child cases
    /// run.
    pub subnet: Option<String>,
}

/// A flow whose predicate the client evaluates: bit `bit` of the completion's branch bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientPredicate {
    pub bit: u32,
    /// The element the flow leads to, as the model names it.
    pub target: String,
    pub predicate: String,
}

/// A variable that a guard reads, and the register it lives in.
#[derive(Debug, Clone)]
pub struct VarMeta {
    pub name: String,
    pub register: u8,
    pub ty: VarType,
}

/// The namespace of a workflow registered without one (and of every workflow logged before
/// namespaces existed).
pub const DEFAULT_NAMESPACE: &str = "default";

/// A compiled, sealed, registered workflow. Immutable once registered.
pub struct Workflow {
    /// Index in the worker's net table.
    pub index: u16,
    pub id: String,
    /// 1 for the first registration under `id` in its namespace, then +1 for each model
    /// registered under it with other content (`Engine::register_in`); cases keep the version
    /// they were created on.
    pub version: u32,
    /// The namespace the workflow and its cases belong to ([`DEFAULT_NAMESPACE`] unless the
    /// registration named one).
    pub namespace: String,
    /// Registered with client predicates: flows the compiler cannot evaluate take the
    /// client's branch bits (recorded so that a replay compiles it the same way).
    pub client_predicates: bool,
    /// Silent tasks are left to the client (registered with `manual_silent_tasks`, or logged
    /// before silent tasks ran themselves): `auto` is empty.
    pub manual_silent_tasks: bool,
    /// Tasks the engine runs itself (bit t: task t), see [`TaskMeta::automatic`].
    pub auto: u64,
    /// Each task's input conditions (bit c: condition c), from the sealed net: two enabled
    /// tasks that share a marked input are in a deferred choice.
    pub pre: Vec<u64>,
    pub name: String,
    pub format: Format,
    pub net: Arc<Net>,
    pub conditions: Vec<String>,
    pub input_condition: String,
    pub output_condition: String,
    pub tasks: Vec<TaskMeta>,
    pub variables: Vec<VarMeta>,
    /// Register file of a new case (variables' initial values).
    pub initial_regs: [i64; REGISTERS],
    /// Interned strings: id = position.
    strings: Vec<String>,
    task_by_name: HashMap<String, u8>,
    var_by_name: HashMap<String, usize>,
    /// Every variable the model declares (data for those no guard reads is accepted and
    /// ignored).
    declared: std::collections::HashSet<String>,
    pub cases_created: AtomicU64,
    pub registered_unix_nanos: u64,
    /// Timers the registration gave tasks of the model (already in the model the workflow
    /// was built from; kept so that the log records them for a replay).
    pub registered_timers: Vec<RegisteredTimer>,
    /// [`registration_digest`] of what registered it (None: not known, never matched).
    pub source_digest: Option<[u8; 32]>,
    /// Retired (`Engine::retire_in`): no new case; its cases run on.
    pub retired: std::sync::atomic::AtomicBool,
    /// Deleted (`Engine::delete_in`): neither listed nor found by id, no new case; the
    /// history of its finished cases still names it.
    pub deleted: std::sync::atomic::AtomicBool,
    /// Deleted with its history (`DeleteWorkflow` with `delete_history`): its finished cases
    /// are removed from memory and from the archive, and never archived again.
    pub history_deleted: std::sync::atomic::AtomicBool,
    /// Tasks run as sub-net cases (bit t: task t): the engine starts them once enabled (when
    /// in no deferred choice), runs a child case of [`Workflow::child_workflow`] for each
    /// start and completes them when the child completes.
    pub composite: u64,
    /// Per task: the index of the sub-net workflow its child cases run (composite tasks).
    pub child_workflow: Vec<Option<u16>>,
    /// A sub-net of a registered workflow: the root workflow's index. Sub-nets are not
    /// listed and take no case from clients; their id is `<root id>/<net id>`.
    pub subnet_of: Option<u16>,
    /// The root's sub-nets, at indices `index + 1 ..` (registered with it).
    pub subnets: Vec<Arc<Workflow>>,
    /// Registered asking for every composite task to run as a sub-net case
    /// (`RegisterWorkflowRequest.subnet_cases`; recorded so that a replay compiles it the same
    /// way).
    pub subnet_cases: bool,
}

/// What makes two registrations the same (`Engine::register_in`'s idempotence): SHA-256 over
/// the model's bytes, its format, the options that change what is compiled or run, and the
/// timers the registration gives tasks.
pub fn registration_digest(
    model: &[u8],
    format: Format,
    client_predicates: bool,
    manual_silent_tasks: bool,
    subnet_cases: bool,
    timers: &[RegisteredTimer],
) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update((model.len() as u64).to_le_bytes());
    h.update(model);
    h.update([
        match format {
            Format::Yawl => 1,
            Format::Pnml => 2,
            Format::Json => 3,
        },
        u8::from(client_predicates),
        u8::from(manual_silent_tasks),
    ]);
    // only when asked, so that a digest from before the option is still the same
    if subnet_cases {
        h.update(b"subnet-cases");
    }
    for t in timers {
        h.update((t.task.len() as u64).to_le_bytes());
        h.update(t.task.as_bytes());
        h.update([match t.trigger {
            knhk_import::ir::TimerTrigger::OnEnabled => 1,
            knhk_import::ir::TimerTrigger::OnExecuting => 2,
        }]);
        h.update((t.duration.len() as u64).to_le_bytes());
        h.update(t.duration.as_bytes());
    }
    h.finalize().into()
}

/// A task timer given at registration (`RegisterWorkflowRequest.task_timers`): a duration
/// from the task's enablement or start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredTimer {
    pub task: String,
    pub trigger: knhk_import::ir::TimerTrigger,
    /// ISO 8601.
    pub duration: String,
}

impl RegisteredTimer {
    /// Gives the model's task this timer (before the workflow is built from the model).
    pub fn apply(&self, model: &mut Model) -> Result<(), EngineError> {
        let bad = |why: String| EngineError::BadData {
            reason: format!("task timer for {}: {why}", crate::error::echo(&self.task)),
        };
        let timer = knhk_import::ir::Timer::after(self.trigger, &self.duration).map_err(bad)?;
        model.set_timer(&self.task, timer).map_err(bad)
    }
}

impl std::fmt::Debug for Workflow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workflow")
            .field("id", &self.id)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl Workflow {
    /// Builds the name tables from the imported model and its sealed net.
    pub fn new(
        index: u16,
        id: String,
        format: Format,
        model: &Model,
        net: Net,
        registered_unix_nanos: u64,
    ) -> Workflow {
        let conditions: Vec<String> = model
            .conditions
            .iter()
            .map(|c| {
                if c.implicit {
                    c.name.clone().unwrap_or_else(|| c.id.clone())
                } else {
                    c.id.clone()
                }
            })
            .collect();
        let tasks: Vec<TaskMeta> = model
            .tasks
            .iter()
            .map(|t| TaskMeta {
                name: t.id.clone(),
                label: t.label.clone(),
                silent: t.silent,
                // A multiple-instance task needs the client to say how many instances start; a
                // silent task with a timer waits for it.
                automatic: t.silent && !t.has_external() && t.mi.is_none() && t.timer.is_none(),
                join: t.join.to_string(),
                split: t.split.to_string(),
                client_predicates: t
                    .outputs
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.guard == knhk_import::ir::FlowGuard::External)
                    .map(|(k, f)| ClientPredicate {
                        bit: k as u32,
                        target: f.target_element.clone(),
                        predicate: f.predicate.clone().unwrap_or_default(),
                    })
                    .collect(),
                timer: t.timer.clone(),
                subnet: None,
            })
            .collect();
        let mut task_by_name = HashMap::new();
        // Labels first (when unique), then ids, so that an id always wins over a label.
        let mut label_count: HashMap<&str, usize> = HashMap::new();
        for t in &tasks {
            *label_count.entry(t.label.as_str()).or_default() += 1;
        }
        for (i, t) in tasks.iter().enumerate() {
            if label_count.get(t.label.as_str()) == Some(&1) {
                if let Ok(i) = u8::try_from(i) {
                    task_by_name.insert(t.label.clone(), i);
                }
            }
        }
        for (i, t) in tasks.iter().enumerate() {
            if let Ok(i) = u8::try_from(i) {
                task_by_name.insert(t.name.clone(), i);
            }
        }
        let variables: Vec<VarMeta> = model
            .variables
            .iter()
            .filter_map(|v| {
                v.register.map(|r| VarMeta {
                    name: v.name.clone(),
                    register: r,
                    ty: v.ty.clone(),
                })
            })
            .collect();
        let var_by_name = variables
            .iter()
            .enumerate()
            .map(|(i, v)| (v.name.clone(), i))
            .collect();
        let pre: Vec<u64> = (0..net.task_count())
            .map(|t| net.task(t).map_or(0, |v| v.pre()))
            .collect();
        let auto = tasks
            .iter()
            .enumerate()
            .filter(|(i, t)| t.automatic && *i < 64)
            .fold(0u64, |m, (i, _)| m | (1u64 << i));
        let input_condition = conditions.get(model.input).cloned().unwrap_or_default();
        let output_condition = conditions.get(model.output).cloned().unwrap_or_default();
        Workflow {
            index,
            id,
            version: 1,
            namespace: DEFAULT_NAMESPACE.to_string(),
            client_predicates: false,
            manual_silent_tasks: false,
            auto,
            pre,
            name: model.name.clone(),
            format,
            net: Arc::new(net),
            conditions,
            input_condition,
            output_condition,
            tasks,
            variables,
            initial_regs: model.initial_registers(),
            strings: model.strings.clone(),
            task_by_name,
            var_by_name,
            declared: model.variables.iter().map(|v| v.name.clone()).collect(),
            cases_created: AtomicU64::new(0),
            registered_unix_nanos,
            registered_timers: Vec::new(),
            source_digest: None,
            retired: std::sync::atomic::AtomicBool::new(false),
            deleted: std::sync::atomic::AtomicBool::new(false),
            history_deleted: std::sync::atomic::AtomicBool::new(false),
            composite: 0,
            child_workflow: Vec::new(),
            subnet_of: None,
            subnets: Vec::new(),
            subnet_cases: false,
        }
    }

    /// The same workflow, registered asking for sub-net cases (set before registration).
    pub fn with_subnet_cases(mut self, on: bool) -> Workflow {
        self.subnet_cases = on;
        self
    }

    /// The same workflow with the sub-nets its composite tasks run as child cases
    /// ([`Model::subnets`], `nets` their sealed nets in the same order): each becomes a
    /// workflow at index `self.index + 1 + k`, with this one's namespace and options. Call it
    /// last among the builders.
    pub fn with_subnets(mut self, model: &Model, nets: Vec<Box<Net>>) -> Workflow {
        let root = self.index;
        let root_id = self.id.clone();
        let link = |wf: &mut Workflow, m: &Model| {
            for (meta, t) in wf.tasks.iter_mut().zip(&m.tasks) {
                meta.subnet = t
                    .subnet
                    .and_then(|k| model.subnets.get(k))
                    .map(|s| format!("{root_id}/{}", s.net_id));
            }
            wf.child_workflow = m
                .tasks
                .iter()
                .map(|t| {
                    t.subnet
                        .and_then(|k| u16::try_from(usize::from(root) + 1 + k).ok())
                })
                .collect();
            wf.composite = wf
                .child_workflow
                .iter()
                .enumerate()
                .filter(|(t, c)| c.is_some() && *t < 64)
                .fold(0u64, |m, (t, _)| m | (1u64 << t));
            // a composite task is started by the engine, never fired as a silent task
            wf.auto &= !wf.composite;
        };
        link(&mut self, model);
        let mut subnets = Vec::with_capacity(nets.len());
        for (k, (m, net)) in model.subnets.iter().zip(nets).enumerate() {
            let index = u16::try_from(usize::from(root) + 1 + k).unwrap_or(u16::MAX);
            let mut sub = Workflow::new(
                index,
                format!("{}/{}", self.id, m.net_id),
                self.format,
                m,
                *net,
                self.registered_unix_nanos,
            )
            .in_namespace(&self.namespace)
            .with_client_predicates(self.client_predicates)
            .with_manual_silent_tasks(self.manual_silent_tasks);
            sub.subnet_of = Some(root);
            sub.version = self.version;
            link(&mut sub, m);
            subnets.push(Arc::new(sub));
        }
        self.subnets = subnets;
        self
    }

    /// The composite tasks that are enabled and in no deferred choice (the engine starts
    /// them).
    pub fn free_composite(&self, marking: u64, enabled: u64) -> u64 {
        self.free_of(self.composite, marking, enabled)
    }

    /// Whether the engine acts on this workflow's cases after requests (automatic tasks,
    /// composite tasks, or a sub-net whose completion completes its parent's task).
    pub fn settles(&self) -> bool {
        self.auto != 0 || self.has_subnet_cases()
    }

    /// Whether its cases take part in sub-net cases: as parents (composite tasks) or as
    /// children (a sub-net).
    pub fn has_subnet_cases(&self) -> bool {
        self.composite != 0 || self.subnet_of.is_some()
    }

    /// The same workflow, recording the timers its registration gave (already applied to the
    /// model it was built from, [`RegisteredTimer::apply`]).
    pub fn with_registered_timers(mut self, timers: Vec<RegisteredTimer>) -> Workflow {
        self.registered_timers = timers;
        self
    }

    /// The same workflow, with the digest of what registered it.
    pub fn with_source_digest(mut self, digest: [u8; 32]) -> Workflow {
        self.source_digest = Some(digest);
        self
    }

    /// The same workflow, registered with client predicates (set before registration).
    pub fn with_client_predicates(mut self, on: bool) -> Workflow {
        self.client_predicates = on;
        self
    }

    /// The same workflow with silent tasks left to the client (`manual`, set before
    /// registration): the engine runs no task itself.
    pub fn with_manual_silent_tasks(mut self, manual: bool) -> Workflow {
        self.manual_silent_tasks = manual;
        if manual {
            self.auto = 0;
            for t in &mut self.tasks {
                t.automatic = false;
            }
        }
        self
    }

    /// The tasks the engine runs at once in the state `o` reports: the enabled automatic tasks
    /// that are in no deferred choice, i.e. share no marked input condition with another
    /// enabled task. An automatic task in a deferred choice is left for the client's next
    /// request to decide (`crate::auto`).
    pub fn free_auto(&self, marking: u64, enabled: u64) -> u64 {
        self.free_of(self.auto, marking, enabled)
    }

    /// The tasks of `mask` that are enabled and share no marked input with another enabled
    /// task.
    fn free_of(&self, mask: u64, marking: u64, enabled: u64) -> u64 {
        let mut free = 0u64;
        for t in bits(enabled & mask) {
            let mine = self.pre.get(t).copied().unwrap_or(0) & marking;
            let contested = bits(enabled & !(1u64 << t))
                .any(|u| self.pre.get(u).copied().unwrap_or(0) & mine != 0);
            if !contested {
                free |= 1u64 << t;
            }
        }
        free
    }

    /// The same workflow in namespace `namespace` (set before registration).
    pub fn in_namespace(mut self, namespace: &str) -> Workflow {
        self.namespace = namespace.to_string();
        for sub in &mut self.subnets {
            if let Some(sub) = Arc::get_mut(sub) {
                sub.namespace = namespace.to_string();
            }
        }
        self
    }

    /// The kernel index of a task named by id (or by its label when that is unique).
    pub fn task(&self, name: &str) -> Result<u8, EngineError> {
        self.task_by_name
            .get(name)
            .copied()
            .ok_or_else(|| EngineError::NoTask {
                task: name.to_string(),
                workflow: self.id.clone(),
            })
    }

    /// The name of task `t`.
    /// The multiple-instance attributes of task `t`, if it is an MI task.
    pub fn mi_spec(&self, t: u8) -> Option<knhk_kernel::MiSpec> {
        self.net.mi_spec(u32::from(t))
    }

    pub fn task_name(&self, t: u8) -> &str {
        self.tasks
            .get(usize::from(t))
            .map(|t| t.name.as_str())
            .unwrap_or("?")
    }

    /// Names of the conditions in a marking.
    pub fn marking_names(&self, marking: u64) -> Vec<String> {
        bits(marking)
            .filter_map(|c| self.conditions.get(c).cloned())
            .collect()
    }

    /// Names of the tasks in a task set.
    pub fn task_names(&self, set: u64) -> Vec<String> {
        bits(set)
            .filter_map(|t| self.tasks.get(t).map(|t| t.name.clone()))
            .collect()
    }

    /// Converts request data to register writes: (mask, values). Unknown variables and values
    /// of the wrong type are refused, naming the variable.
    pub fn registers(&self, data: &Data) -> Result<(u8, [i64; REGISTERS]), EngineError> {
        let mut mask = 0u8;
        let mut regs = [0i64; REGISTERS];
        for (name, value) in data {
            let Some(var) = self
                .var_by_name
                .get(name)
                .and_then(|&i| self.variables.get(i))
            else {
                if self.declared.contains(name) {
                    // Declared by the model but read by no guard: nothing to store.
                    continue;
                }
                return Err(EngineError::BadData {
                    reason: format!(
                        "workflow '{}' has no variable '{}' (variables guards read: {})",
                        self.id,
                        name,
                        self.variables
                            .iter()
                            .map(|v| v.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            };
            let r = usize::from(var.register);
            if r >= REGISTERS {
                continue;
            }
            regs[r] = self.value(var, value)?;
            mask |= 1 << r;
        }
        Ok((mask, regs))
    }

    fn value(&self, var: &VarMeta, value: &Value) -> Result<i64, EngineError> {
        let bad = |what: &str| EngineError::BadData {
            reason: format!("variable '{}' is {}; got {}", var.name, var.ty, what),
        };
        match (&var.ty, value) {
            (_, Value::Missing) => Err(bad("an empty value")),
            (VarType::Int | VarType::Decimal, Value::Int(i)) => Ok(*i),
            (VarType::Int | VarType::Decimal, Value::Str(s)) => s
                .trim()
                .parse::<i64>()
                .map_err(|_| bad(&format!("the string {s:?}"))),
            (VarType::Bool, Value::Bool(b)) => Ok(i64::from(*b)),
            (VarType::Bool, Value::Int(i)) if *i == 0 || *i == 1 => Ok(*i),
            (VarType::Bool, Value::Str(s)) => match s.trim() {
                "true" => Ok(1),
                "false" => Ok(0),
                _ => Err(bad(&format!("the string {s:?}"))),
            },
            (VarType::Str(_), Value::Str(s)) => Ok(self.intern(s)),
            (VarType::Str(_), Value::Int(i)) => Ok(self.intern(&i.to_string())),
            (VarType::Str(_), Value::Bool(b)) => Ok(self.intern(if *b { "true" } else { "false" })),
            (_, Value::Bool(_)) => Err(bad("a boolean")),
            (_, Value::Int(_)) => Err(bad("an integer")),
        }
    }

    /// The register value of a string: its interned id, or for a string no guard mentions, a
    /// negative value no interned id equals.
    fn intern(&self, s: &str) -> i64 {
        match self.strings.iter().position(|x| x == s) {
            Some(i) => i64::try_from(i).unwrap_or(i64::MAX),
            None => {
                // FNV-1a, folded negative: distinct strings stay distinct with high probability.
                let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                for b in s.bytes() {
                    h ^= u64::from(b);
                    h = h.wrapping_mul(0x0100_0000_01b3);
                }
                -1 - i64::try_from(h >> 2).unwrap_or(0)
            }
        }
    }

    /// The value of a register as its variable's type reads it.
    pub fn value_of(&self, var: &VarMeta, raw: i64) -> Value {
        match &var.ty {
            VarType::Bool => Value::Bool(raw != 0),
            VarType::Str(_) => match usize::try_from(raw).ok().and_then(|i| self.strings.get(i)) {
                Some(s) => Value::Str(s.clone()),
                None => Value::Int(raw),
            },
            _ => Value::Int(raw),
        }
    }

    /// Cases created so far.
    pub fn cases_created(&self) -> u64 {
        self.cases_created.load(Ordering::Relaxed)
    }
}

/// Indices of the set bits of a mask, lowest first.
pub fn bits(mut set: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if set == 0 {
            None
        } else {
            let i = set.trailing_zeros() as usize;
            set &= set - 1;
            Some(i)
        }
    })
}
