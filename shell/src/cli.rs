//! The `knhk check`, `knhk compile` and `knhk replay` commands: they print what the import
//! library reports (verification findings, compiled nets, replay results) and choose the exit
//! code. Each writes its report to `out`, diagnostics to `err`, and returns the exit code.
//!
//! Exit codes: `check` 0 when every file is accepted, 1 when any is refused, 2 when any is
//! unreadable (cannot be read, not well-formed XML/JSON, unknown format, over the size limit);
//! `compile` the same for one file; `replay` 0 when every trace fits, 1 otherwise, 2 on
//! unreadable input or a refused model.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use knhk_import::check::{verify, Report, Severity};
use knhk_import::error::ImportError;
use knhk_import::ir::{FlowGuard, GuardText, Model};
use knhk_import::replay::Outcome;
use knhk_import::{import_file, lower, Options};

/// Exit code: everything accepted / fits.
pub const EXIT_OK: i32 = 0;
/// Exit code: a model refused / a trace does not fit.
pub const EXIT_REFUSED: i32 = 1;
/// Exit code: unreadable input.
pub const EXIT_UNREADABLE: i32 = 2;

/// True for errors that mean "could not read a model at all" (exit 2) rather than "read a
/// model and refused it" (exit 1).
pub fn is_unreadable(e: &ImportError) -> bool {
    matches!(
        e,
        ImportError::Io { .. }
            | ImportError::TooLarge { .. }
            | ImportError::Syntax { .. }
            | ImportError::UnknownFormat(_)
    )
}

fn counts(m: &Model) -> String {
    let implicit = m.conditions.iter().filter(|c| c.implicit).count();
    format!(
        "conditions {} ({} implicit), tasks {}, flows {}",
        m.conditions.len(),
        implicit,
        m.tasks.len(),
        m.flow_count()
    )
}

fn soundness(r: &Report) -> String {
    if r.states == 0 {
        return "not explored (refused before the exploration)".into();
    }
    if !r.exhaustive {
        return format!("{} states explored (cap reached): not decided", r.states);
    }
    use knhk_import::check::FindingKind as K;
    let yes = |k: K, good: &'static str, bad: &'static str| if r.has(k) { bad } else { good };
    format!(
        "{} states explored: {}, {}, {}, {}",
        r.states,
        yes(K::NotSafe, "1-safe", "NOT 1-safe"),
        if r.has(K::NoOptionToComplete) || r.has(K::Deadlock) {
            "NO option to complete"
        } else {
            "option to complete"
        },
        yes(
            K::ImproperCompletion,
            "proper completion",
            "IMPROPER completion"
        ),
        yes(K::DeadTask, "no dead tasks", "DEAD tasks"),
    )
}

/// `knhk check FILE...`: per file, the verdict with reasons, counts, patterns and soundness
/// findings.
pub fn check(paths: &[PathBuf], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    check_with(paths, &Options::default(), out, err)
}

/// [`check`] with explicit options.
pub fn check_with(
    paths: &[PathBuf],
    opts: &Options,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let mut code = EXIT_OK;
    if paths.is_empty() {
        let _ = writeln!(err, "knhk check: no files given");
        return EXIT_UNREADABLE;
    }
    for p in paths {
        let t0 = Instant::now();
        let model = match import_file(p, opts) {
            Ok(m) => m,
            Err(e) => {
                if is_unreadable(&e) {
                    let _ = writeln!(out, "{}: unreadable\n  error: {e}", p.display());
                    let _ = writeln!(err, "knhk check: {}: {e}", p.display());
                    code = code.max(EXIT_UNREADABLE);
                } else {
                    let ms = t0.elapsed().as_secs_f64() * 1e3;
                    let _ = writeln!(
                        out,
                        "{}: refused\n  reason: {e}\n  time: {ms:.2} ms",
                        p.display()
                    );
                    code = code.max(EXIT_REFUSED);
                }
                continue;
            }
        };
        let report = verify(&model, opts);
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let verdict = if report.accepted() {
            "accepted"
        } else {
            "refused"
        };
        let _ = writeln!(out, "{}: {verdict}", p.display());
        for f in report.refusals() {
            let _ = writeln!(out, "  reason: {}", f.message);
            if !f.elements.is_empty() {
                let _ = writeln!(out, "    elements: {}", f.elements.join(", "));
            }
        }
        let _ = writeln!(
            out,
            "  model: {} ({}), {}",
            model.name,
            model.format,
            counts(&model)
        );
        let pats = if report.patterns.is_empty() {
            "none".into()
        } else {
            report.patterns.join(", ")
        };
        let _ = writeln!(out, "  patterns: {pats}");
        let _ = writeln!(out, "  soundness: {}", soundness(&report));
        for f in report
            .findings
            .iter()
            .filter(|f| f.severity != Severity::Refusal)
        {
            let _ = writeln!(out, "  {f}");
        }
        for n in &model.notes {
            let _ = writeln!(out, "  [note] {n}");
        }
        let _ = writeln!(out, "  time: {ms:.2} ms");
        if !report.accepted() {
            code = code.max(EXIT_REFUSED);
        }
    }
    code
}

/// Writes the model in a readable form.
pub fn write_model(m: &Model, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "net {} ({})", m.name, m.format)?;
    writeln!(out, "  {}", counts(m))?;
    writeln!(
        out,
        "  input c{} '{}', output c{} '{}'",
        m.input,
        m.condition_id(m.input),
        m.output,
        m.condition_id(m.output)
    )?;
    writeln!(out, "conditions:")?;
    for (i, c) in m.conditions.iter().enumerate() {
        let name = c
            .name
            .as_deref()
            .map(|n| format!(" \"{n}\""))
            .unwrap_or_default();
        let imp = if c.implicit { " (implicit)" } else { "" };
        writeln!(out, "  c{i:<3} {}{name}{imp}", c.id)?;
    }
    writeln!(out, "tasks:")?;
    for (i, t) in m.tasks.iter().enumerate() {
        let name = t
            .name
            .as_deref()
            .map(|n| format!(" \"{n}\""))
            .unwrap_or_default();
        let silent = if t.silent { " silent" } else { "" };
        let ins: Vec<String> = t.inputs.iter().map(|&c| format!("c{c}")).collect();
        writeln!(
            out,
            "  t{i:<3} {}{name} join={} split={}{silent} in=[{}]",
            t.id,
            t.join,
            t.split,
            ins.join(", ")
        )?;
        if t.label != t.id && !t.silent && Some(&t.label) != t.name.as_ref() {
            writeln!(out, "         label \"{}\"", t.label)?;
        }
        for (k, f) in t.outputs.iter().enumerate() {
            let g = match &f.guard {
                FlowGuard::Always => "always".to_string(),
                FlowGuard::Compiled(g) => format!("guard {}", GuardText(g)),
                FlowGuard::External => "external (client supplies bit)".to_string(),
            };
            let d = if f.default { " default" } else { "" };
            let p = f
                .predicate
                .as_deref()
                .map(|p| format!("  <- {p}"))
                .unwrap_or_default();
            writeln!(
                out,
                "         branch {k}: -> c{} {} [{g}]{d}{p}",
                f.target,
                m.condition_id(f.target)
            )?;
        }
        if !t.cancel_conditions.is_empty() || !t.cancel_tasks.is_empty() {
            let cs: Vec<&str> = t
                .cancel_conditions
                .iter()
                .map(|&c| m.condition_id(c))
                .collect();
            let ts: Vec<&str> = t.cancel_tasks.iter().map(|&x| m.task_id(x)).collect();
            writeln!(out, "         cancels conditions {cs:?} tasks {ts:?}")?;
        }
        if let Some(mi) = &t.mi {
            writeln!(
                out,
                "         multiple instances: min {} max {} threshold {} creation {}",
                mi.min.as_deref().unwrap_or("-"),
                mi.max.as_deref().unwrap_or("-"),
                mi.threshold.as_deref().unwrap_or("-"),
                mi.creation_mode.as_deref().unwrap_or("-")
            )?;
        }
    }
    if !m.variables.is_empty() {
        writeln!(out, "variables:")?;
        for v in &m.variables {
            let reg = v
                .register
                .map(|r| format!("r{r} = {}", v.initial_value))
                .unwrap_or_else(|| "no register".into());
            let io = if v.input { " input" } else { "" };
            let init = v
                .initial
                .as_deref()
                .map(|i| format!(" initial '{i}'"))
                .unwrap_or_default();
            writeln!(out, "  /{}/{}: {}{io}{init} ({reg})", v.net, v.name, v.ty)?;
        }
    }
    if m.strings.len() > 1 {
        writeln!(out, "strings:")?;
        for (i, s) in m.strings.iter().enumerate().skip(1) {
            writeln!(out, "  {i} = {s:?}")?;
        }
    }
    for n in &m.notes {
        writeln!(out, "note: {n}")?;
    }
    Ok(())
}

/// `knhk compile FILE`: the compiled net in a readable form, then the verdict.
pub fn compile(path: &Path, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let opts = Options::default();
    let model = match import_file(path, &opts) {
        Ok(m) => m,
        Err(e) => {
            let _ = writeln!(err, "knhk compile: {}: {e}", path.display());
            return if is_unreadable(&e) {
                EXIT_UNREADABLE
            } else {
                EXIT_REFUSED
            };
        }
    };
    if let Err(e) = write_model(&model, out) {
        let _ = writeln!(err, "knhk compile: write: {e}");
        return EXIT_UNREADABLE;
    }
    let report = verify(&model, &opts);
    if report.accepted() {
        let _ = writeln!(out, "verdict: accepted");
        EXIT_OK
    } else {
        let _ = writeln!(out, "verdict: refused");
        for f in report.refusals() {
            let _ = writeln!(out, "  reason: {}", f.message);
        }
        EXIT_REFUSED
    }
}

/// `knhk replay MODEL LOG`: replays an XES log (plain or gzip) on the model through the
/// kernel; per variant whether it fits, else the first refused event and the marking there;
/// then the share of fitting traces.
pub fn replay(model_path: &Path, log_path: &Path, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let opts = Options {
        external_predicates: true,
        ..Options::default()
    };
    let model = match import_file(model_path, &opts) {
        Ok(m) => m,
        Err(e) => {
            let _ = writeln!(err, "knhk replay: {}: {e}", model_path.display());
            return EXIT_UNREADABLE;
        }
    };
    let compiled = match lower(&model) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(
                err,
                "knhk replay: {}: refused: {} [{}]",
                model_path.display(),
                e.message,
                e.status
            );
            return EXIT_UNREADABLE;
        }
    };
    let log = match knhk_import::xes::read_file(log_path) {
        Ok(l) => l,
        Err(e) => {
            let _ = writeln!(err, "knhk replay: {}: {e}", log_path.display());
            return EXIT_UNREADABLE;
        }
    };
    let r = knhk_import::replay::replay(&model, &compiled.net, &log);
    let _ = writeln!(
        out,
        "replay of {} ({} traces, {} variants) on {} ({})",
        log_path.display(),
        r.traces,
        r.variants.len(),
        model_path.display(),
        model.format
    );
    for (i, v) in r.variants.iter().enumerate() {
        let n = v.traces.len();
        let head = format!(
            "variant {} ({} trace{}, {} events)",
            i + 1,
            n,
            if n == 1 { "" } else { "s" },
            v.events.len()
        );
        match &v.outcome {
            Outcome::Fits => {
                let _ = writeln!(out, "{head}: fits");
            }
            Outcome::Refused {
                index,
                event,
                reason,
                markings,
            } => {
                let _ = writeln!(
                    out,
                    "{head}: does not fit: event {} '{event}' refused ({reason}); traces {}",
                    index + 1,
                    v.traces.join(", ")
                );
                for m in markings {
                    let _ = writeln!(out, "    marking: {{{}}}", m.join(", "));
                }
            }
            Outcome::Undecided { index, event } => {
                let at = if event.is_empty() {
                    "after the last event".to_string()
                } else {
                    format!("at event {} '{event}'", index + 1)
                };
                let _ = writeln!(
                    out,
                    "{head}: not decided: the replay frontier reached its cap of {} cases {at}, \
                     so cases that could fit were left out; traces {}",
                    knhk_import::replay::FRONTIER_CAP,
                    v.traces.join(", ")
                );
            }
            Outcome::Incomplete { markings } => {
                let _ = writeln!(out, "{head}: does not fit: the case cannot complete after the last event; traces {}", v.traces.join(", "));
                for m in markings {
                    let _ = writeln!(out, "    marking: {{{}}}", m.join(", "));
                }
            }
        }
    }
    let _ = writeln!(
        out,
        "fitting traces: {}/{} ({:.1}%){}",
        r.fitting,
        r.traces,
        r.fitness() * 100.0,
        if r.undecided > 0 {
            format!(", not decided: {}", r.undecided)
        } else {
            String::new()
        }
    );
    if r.fitting == r.traces {
        EXIT_OK
    } else {
        EXIT_REFUSED
    }
}
