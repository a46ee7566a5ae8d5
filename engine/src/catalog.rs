//! Model bytes → a compiled workflow: import, verification and lowering to a sealed kernel
//! net (the cold path: run it off the async runtime). Used for registration and for replay,
//! so a logged model compiles exactly as it did when it was registered.

use knhk_import::{Format, Model};
use knhk_kernel::Net;

use crate::error::EngineError;

/// A compiled model: the imported model, its sealed net and the detected format.
#[allow(missing_debug_implementations)] // the kernel's Net has no Debug
pub struct Compiled {
    pub model: Model,
    pub net: Box<Net>,
    pub format: Format,
    /// What verification found that does not refuse the model: warnings (soundness not
    /// decided at the state cap...) and notes (mapping decisions, constructs not executed).
    pub findings: Vec<knhk_import::Finding>,
    /// The soundness exploration visited every reachable state.
    pub soundness_decided: bool,
    /// The sealed nets of `model.subnets`, in order (composite tasks run as sub-net cases).
    pub subnet_nets: Vec<Box<Net>>,
}

/// Imports, verifies and compiles a model. `format`, when given, must match the document.
pub fn compile(model: &[u8], format: Option<Format>) -> Result<Compiled, EngineError> {
    compile_with(model, format, &knhk_import::Options::default())
}

/// [`compile`] with import options (a cancellation flag: a registration whose caller went
/// away stops at the importer's next check).
pub fn compile_with(
    model: &[u8],
    format: Option<Format>,
    opts: &knhk_import::Options,
) -> Result<Compiled, EngineError> {
    let text = String::from_utf8_lossy(model);
    let detected = knhk_import::detect(&text).map_err(|e| EngineError::BadModel(e.to_string()))?;
    if let Some(f) = format.filter(|f| *f != detected) {
        return Err(EngineError::BadModel(format!(
            "format says {} but the document is {}",
            format_name(f),
            format_name(detected)
        )));
    }
    let m =
        knhk_import::import_bytes(model, opts).map_err(|e| EngineError::BadModel(e.to_string()))?;
    let report = knhk_import::verify(&m, opts);
    if !report.accepted() {
        let why: Vec<String> = report.refusals().map(|f| f.message.clone()).collect();
        return Err(EngineError::BadModel(format!(
            "'{}' refused by verification: {}",
            m.name,
            why.join("; ")
        )));
    }
    // Branch bits travel as 32 bits through the API: a client predicate on a flow past the
    // 32nd of its task could never be set.
    for t in &m.tasks {
        if let Some((k, _)) = t
            .outputs
            .iter()
            .enumerate()
            .find(|(k, f)| *k >= 32 && f.guard == knhk_import::ir::FlowGuard::External)
        {
            return Err(EngineError::BadModel(format!(
                "task '{}': flow {k} has a predicate the client evaluates, but branch_bits \
                 holds the first 32 flows of a task",
                t.id
            )));
        }
    }
    let compiled = knhk_import::lower(&m).map_err(|e| EngineError::BadModel(e.message))?;
    let mut subnet_nets = Vec::with_capacity(m.subnets.len());
    for sub in &m.subnets {
        let c = knhk_import::lower(sub).map_err(|e| {
            EngineError::BadModel(format!("sub-net '{}': {}", sub.net_id, e.message))
        })?;
        subnet_nets.push(c.net);
    }
    Ok(Compiled {
        model: m,
        net: compiled.net,
        format: detected,
        findings: report.findings,
        soundness_decided: report.exhaustive,
        subnet_nets,
    })
}

/// The API name of a format (as `knhk.v1.ModelFormat` spells it).
pub fn format_name(f: Format) -> &'static str {
    match f {
        Format::Yawl => "MODEL_FORMAT_YAWL",
        Format::Pnml => "MODEL_FORMAT_PNML",
        Format::Json => "MODEL_FORMAT_JSON",
    }
}
