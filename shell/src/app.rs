//! Composition of the engine with its event log: the one place that knows both. The engine
//! never sees the log's type (only its [`BatchHook`] side), and the log never starts the
//! engine: this module opens the log, starts the engine with the layout the log's case ids
//! encode, has the log replay itself into it, and on shutdown stops them in that order's
//! reverse.

use std::io;
use std::sync::Arc;

use knhk_engine::{BatchHook, Engine, EngineConfig, Immediate};
use knhk_log::{apply_layout, CommitPeer, EventLog, ExporterStats, Journal, JournalConfig};

/// A started engine and, when durability is on, the event log it was recovered from.
#[derive(Debug, Clone)]
pub struct Core {
    pub engine: Arc<Engine>,
    pub log: Option<Arc<dyn EventLog>>,
    /// The event log's exporters (`--export-xes`, `--export-otlp-logs`).
    pub exporters: Vec<Arc<ExporterStats>>,
}

/// The exporters to start: `xes_file`, the document of `--export-xes`; `otlp_logs`, the
/// collector of `--export-otlp-logs`, reached over TLS (`https://`) as `otlp_logs_tls` says.
#[derive(Debug, Clone, Default)]
pub struct ExportConfig {
    pub xes_file: Option<std::path::PathBuf>,
    pub otlp_logs: Option<String>,
    pub otlp_logs_tls: crate::exporter::OtlpTls,
}

/// An exporter's sink.
type Sink = Box<dyn knhk_log::ExportSink>;

impl ExportConfig {
    fn any(&self) -> bool {
        self.xes_file.is_some() || self.otlp_logs.is_some()
    }
}

/// Starts the engine on `cfg` with the event log of `journal` when given (opened, the engine
/// started with its layout, replayed), else with `hook` (or none). Blocking: run it on a
/// blocking thread.
pub fn start(
    cfg: EngineConfig,
    hook: Option<Arc<dyn BatchHook>>,
    journal: Option<JournalConfig>,
    commit_peer: Option<Arc<dyn CommitPeer>>,
) -> io::Result<Core> {
    start_exporting(cfg, hook, journal, commit_peer, &ExportConfig::default())
}

/// [`start`], then the exporters of `export` (they need the event log: refused without it).
pub fn start_exporting(
    mut cfg: EngineConfig,
    hook: Option<Arc<dyn BatchHook>>,
    journal: Option<JournalConfig>,
    commit_peer: Option<Arc<dyn CommitPeer>>,
    export: &ExportConfig,
) -> io::Result<Core> {
    let Some(jc) = journal else {
        if export.any() {
            return Err(io::Error::other(
                "--export-xes and --export-otlp-logs need the event log: exporters read \
                 committed events from it (drop --durability off)",
            ));
        }
        let engine = Engine::start(cfg, hook.unwrap_or_else(|| Arc::new(Immediate)))?;
        return Ok(Core {
            engine,
            log: None,
            exporters: Vec::new(),
        });
    };
    let data_dir = jc.dir.clone();
    let journal = Journal::open(jc)?;
    let log: Arc<dyn EventLog> = journal.clone();
    if let Some(peer) = commit_peer {
        log.set_commit_peer(peer);
    }
    apply_layout(log.as_ref(), &mut cfg);
    let engine = Engine::start(cfg, log.clone())?;
    if let Err(e) = log.recover(&engine) {
        engine.stop();
        return Err(e);
    }
    // (flag, the sink or why it could not be made)
    let mut sinks: Vec<(&str, Result<Sink, String>)> = Vec::new();
    if let Some(path) = &export.xes_file {
        let sink = crate::exporter::XesFileSink::new(path, engine.clone());
        sinks.push(("--export-xes", Ok(Box::new(sink))));
    }
    if let Some(url) = &export.otlp_logs {
        let sink = crate::exporter::OtlpLogsSink::new(
            url,
            &export.otlp_logs_tls,
            &data_dir,
            engine.clone(),
        )
        .map(|s| Box::new(s) as Sink);
        sinks.push(("--export-otlp-logs", sink));
    }
    let mut exporters = Vec::new();
    for (flag, sink) in sinks {
        match sink.and_then(|s| journal.add_exporter(&engine, s).map_err(|e| e.to_string())) {
            Ok(s) => exporters.push(s),
            Err(e) => {
                engine.stop();
                log.close();
                return Err(io::Error::other(format!("{flag}: {e}")));
            }
        }
    }
    Ok(Core {
        engine,
        log: Some(log),
        exporters,
    })
}

impl Core {
    /// Stops the workers, then makes the log's buffered records durable and stops it.
    /// Blocking.
    pub fn stop(&self) {
        self.engine.stop();
        if let Some(log) = &self.log {
            log.close();
        }
    }
}
