//! The XES file exporter (`knhk serve --export-xes FILE`): every committed task event, as it
//! happens, appended to an XES document that is well-formed after each delivery (its footer is
//! rewritten behind the new events), for process-mining pipelines that read events as they
//! come (docs/durability.md, "Exporters").
//!
//! Layout: the header of `ExportCaseXes`, then one `<trace>` per run of a case's events within
//! a delivery (`concept:name` the case id, so tools that group by case name join a case's
//! traces), each event with `concept:name`, `lifecycle:transition`, `time:timestamp`,
//! `knhk:position` (the log position of its record: a consumer drops repeats by it) and, for a
//! task instance, `knhk:instance`. Silent tasks and case-level events are left out, as in
//! `ExportCaseXes`.
//!
//! Position: `FILE.position` holds the log position delivered last and the document's length
//! then, replaced atomically (written aside, synced, renamed) after the document is synced. At
//! start the document is cut back to that length, so events delivered but not yet recorded
//! there are written once again, not twice.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use knhk_engine::command::{EventKind, NO_INSTANCE};
use knhk_engine::workflow::Workflow;
use knhk_engine::Engine;
use knhk_log::{ExportSink, Exported, Position, PositionFile, SavedPosition};

use crate::xes::{escape, timestamp};

const FOOTER: &str = "</log>\n";

/// Workflows by kernel index, looked up in the engine once each.
struct Workflows {
    engine: Arc<Engine>,
    seen: HashMap<u16, Arc<Workflow>>,
}

impl Workflows {
    fn new(engine: Arc<Engine>) -> Workflows {
        Workflows {
            engine,
            seen: HashMap::new(),
        }
    }

    fn get(&mut self, index: u16) -> Option<Arc<Workflow>> {
        if let Some(w) = self.seen.get(&index) {
            return Some(w.clone());
        }
        let w = self.engine.workflow_at(index)?;
        self.seen.insert(index, w.clone());
        Some(w)
    }
}

/// Appends committed task events to an XES document.
pub struct XesFileSink {
    path: PathBuf,
    positions: PositionFile,
    file: Option<File>,
    /// The document's length after the last delivery (footer included).
    len: u64,
    workflows: Workflows,
    /// The last timestamp written per running case (µs): a case's events get strictly
    /// increasing times, as in `ExportCaseXes`; dropped when the case ends.
    last_us: HashMap<u64, u64>,
}

impl XesFileSink {
    /// A sink writing to `path` (created at the first start; continued after a restart).
    pub fn new(path: &Path, engine: Arc<Engine>) -> XesFileSink {
        let mut positions = path.to_path_buf().into_os_string();
        positions.push(".position");
        XesFileSink {
            path: path.to_path_buf(),
            positions: PositionFile::new(PathBuf::from(positions)),
            file: None,
            len: 0,
            workflows: Workflows::new(engine),
            last_us: HashMap::new(),
        }
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> String {
        format!("{}: {what}: {e}", self.path.display())
    }

    /// Records `at` (None: nothing delivered yet) and the document length, atomically.
    fn save_position(&self, at: Option<Position>) -> Result<(), String> {
        self.positions.write(&SavedPosition {
            position: at,
            length: Some(self.len),
        })
    }

    /// The XML of `events`' task events: a trace per run of one case's events.
    fn render(&mut self, events: &[Exported]) -> String {
        let mut out = String::new();
        let mut open_case: Option<u64> = None;
        for x in events {
            let e = &x.event;
            if e.kind != EventKind::Task {
                if matches!(e.kind, EventKind::CaseCompleted | EventKind::CaseCancelled) {
                    self.last_us.remove(&e.case_id);
                }
                continue;
            }
            let Some(lc) = e.lifecycle else { continue };
            let Some(wf) = self.workflows.get(e.workflow) else {
                continue;
            };
            let Some(task) = wf.tasks.get(usize::from(e.task)) else {
                continue;
            };
            if task.silent {
                continue;
            }
            if open_case != Some(e.case_id) {
                if open_case.is_some() {
                    out.push_str("  </trace>\n");
                }
                out.push_str("  <trace>\n");
                let _ = writeln!(
                    out,
                    "    <string key=\"concept:name\" value=\"{}\"/>",
                    e.case_id
                );
                let _ = writeln!(
                    out,
                    "    <string key=\"knhk:workflow\" value=\"{}\"/>",
                    escape(&wf.id)
                );
                open_case = Some(e.case_id);
            }
            let last = self.last_us.entry(e.case_id).or_insert(0);
            let us = (e.time_ns / 1000).max(*last + 1);
            *last = us;
            out.push_str("    <event>\n");
            let _ = writeln!(
                out,
                "      <string key=\"concept:name\" value=\"{}\"/>",
                escape(&task.label)
            );
            let _ = writeln!(
                out,
                "      <string key=\"lifecycle:transition\" value=\"{}\"/>",
                lc.xes()
            );
            let _ = writeln!(
                out,
                "      <date key=\"time:timestamp\" value=\"{}\"/>",
                timestamp(us)
            );
            let _ = writeln!(
                out,
                "      <string key=\"knhk:position\" value=\"{}\"/>",
                x.position
            );
            if e.instance != NO_INSTANCE {
                let _ = writeln!(
                    out,
                    "      <int key=\"knhk:instance\" value=\"{}\"/>",
                    e.instance
                );
            }
            if lc.by_timer() {
                out.push_str("      <boolean key=\"knhk:timer\" value=\"true\"/>\n");
            }
            out.push_str("    </event>\n");
        }
        if open_case.is_some() {
            out.push_str("  </trace>\n");
        }
        out
    }
}

impl ExportSink for XesFileSink {
    fn name(&self) -> String {
        "xes-file".into()
    }

    fn resume(&mut self) -> Result<Option<Position>, String> {
        let saved = self.positions.read()?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .map_err(|e| self.err("cannot open", e))?;
        let on_disk = file
            .metadata()
            .map_err(|e| self.err("cannot stat", e))?
            .len();
        let Some(saved) = saved else {
            if on_disk > 0 {
                return Err(format!(
                    "{} exists and is not empty, but {} is missing: it is not a knhk export or \
                     its position was lost; move it away or name another file",
                    self.path.display(),
                    self.positions.path().display()
                ));
            }
            // the header of ExportCaseXes and no trace yet (finish writes the footer)
            let head = crate::xes::Writer::new("knhk committed events", usize::MAX)
                .finish()
                .0;
            file.write_all(head.as_bytes())
                .and_then(|_| file.sync_all())
                .map_err(|e| self.err("cannot write", e))?;
            self.len = head.len() as u64;
            self.file = Some(file);
            self.save_position(None)?;
            return Ok(None);
        };
        let length = saved
            .length
            .ok_or_else(|| format!("{}: no length line", self.positions.path().display()))?;
        if on_disk < length {
            return Err(format!(
                "{} is {on_disk} bytes, shorter than the {length} bytes {} records: it was \
                 changed by something else",
                self.path.display(),
                self.positions.path().display()
            ));
        }
        // what was appended after the recorded position is delivered again
        file.set_len(length)
            .map_err(|e| self.err("cannot truncate", e))?;
        file.sync_all().map_err(|e| self.err("cannot sync", e))?;
        self.len = length;
        self.file = Some(file);
        Ok(saved.position)
    }

    fn deliver(&mut self, events: &[Exported], upto: Position) -> Result<(), String> {
        let body = self.render(events);
        if !body.is_empty() {
            let footer_at = self.len.saturating_sub(FOOTER.len() as u64);
            let path = self.path.clone();
            let file = self
                .file
                .as_mut()
                .ok_or_else(|| format!("{}: not opened", path.display()))?;
            let write = |f: &mut File| -> std::io::Result<()> {
                f.set_len(footer_at)?;
                f.seek(SeekFrom::Start(footer_at))?;
                f.write_all(body.as_bytes())?;
                f.write_all(FOOTER.as_bytes())?;
                f.sync_data()
            };
            if let Err(e) = write(file) {
                // the next try starts over from the recorded length
                let _ = file.set_len(self.len);
                return Err(format!("{}: cannot append: {e}", path.display()));
            }
            let before = self.len;
            self.len = footer_at + (body.len() + FOOTER.len()) as u64;
            if let Err(e) = self.save_position(Some(upto)) {
                // undone, so that the retry writes these events once
                self.len = before;
                if let Some(f) = self.file.as_mut() {
                    let _ = f.set_len(footer_at).and_then(|_| {
                        f.seek(SeekFrom::Start(footer_at))?;
                        f.write_all(FOOTER.as_bytes())
                    });
                }
                return Err(e);
            }
            return Ok(());
        }
        self.save_position(Some(upto))
    }
}

// --------------------------------------------------------------------------- OTLP logs

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// TLS of the OTLP logs exporter (`--export-otlp-logs https://...`): the PEM CA bundle that
/// signs the collector's certificate (`None`: the system's roots) and a client certificate
/// with its key for a collector that asks for one (mutual TLS).
#[derive(Debug, Clone, Default)]
pub struct OtlpTls {
    pub ca: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

impl OtlpTls {
    /// The client configuration, every file read now: an error names the flag and the file.
    fn client_config(&self) -> Result<tonic::transport::ClientTlsConfig, String> {
        let identity = match (&self.client_cert, &self.client_key) {
            (Some(c), Some(k)) => Some((
                ("--export-otlp-logs-client-cert", c.as_path()),
                ("--export-otlp-logs-client-key", k.as_path()),
            )),
            (None, None) => None,
            _ => {
                return Err(
                    "--export-otlp-logs-client-cert and --export-otlp-logs-client-key \
                            go together"
                        .into(),
                )
            }
        };
        crate::tls::client_tls_config(
            self.ca.as_deref().map(|ca| ("--export-otlp-logs-ca", ca)),
            identity,
        )
    }
}

/// How long one export call to the collector may take before the delivery fails (and is
/// retried).
const OTLP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Ships every committed event as an OTLP log record to a collector's gRPC logs service
/// (`knhk serve --export-otlp-logs URL`): one `ExportLogsService/Export` call per delivery.
///
/// Each record: `time_unix_nano` the event's time, `event_name` `knhk.task` or `knhk.case`,
/// body a short text ("A complete", "case completed"), and attributes `knhk.case_id` (int),
/// `knhk.workflow` (its id), `knhk.workflow_version` (int), `knhk.namespace`, `knhk.event`
/// (`task`, `case_created`, `case_completed`, `case_cancelled`, `case_deadlocked`), for task
/// events `knhk.task` (its id), `knhk.activity` (its label), `knhk.lifecycle` (the XES
/// transition), `knhk.instance` (an instance of a multiple-instance task), and
/// `knhk.position` (`segment:offset` of its record; with `knhk.index`, its place in that
/// record: the pair identifies the event, so a consumer drops repeats by it). Silent tasks'
/// events are included (with `knhk.silent`): a log consumer filters, an XES one would not.
///
/// Position: `<data-dir>/export-otlp-logs.position` holds the position after the last batch
/// the collector accepted, replaced atomically; a batch accepted but not yet recorded is sent
/// again after a restart (at least once). Records the collector rejects in a partial success
/// are logged and counted as failures of that delivery, not retried (the collector said no).
pub struct OtlpLogsSink {
    endpoint: String,
    /// For an `https://` endpoint: the collector's CA (or the system's roots) and the client
    /// certificate, read at start.
    tls: Option<tonic::transport::ClientTlsConfig>,
    positions: PositionFile,
    rt: tokio::runtime::Runtime,
    client: Option<LogsServiceClient<tonic::transport::Channel>>,
    workflows: Workflows,
}

impl OtlpLogsSink {
    /// A sink for the collector at `endpoint` (`http://host:port`, or `https://host:port`
    /// reached over TLS as `tls` says), keeping its position in `data_dir`. Fails on an
    /// endpoint that is not an http(s) URL, and on TLS files that cannot be read.
    pub fn new(
        endpoint: &str,
        tls: &OtlpTls,
        data_dir: &Path,
        engine: Arc<Engine>,
    ) -> Result<Self, String> {
        let tls = if endpoint.starts_with("https://") {
            Some(tls.client_config()?)
        } else if endpoint.starts_with("http://") {
            if tls.ca.is_some() || tls.client_cert.is_some() {
                return Err(format!(
                    "--export-otlp-logs {endpoint}: TLS files are given for a plaintext \
                     endpoint (use https://)"
                ));
            }
            None
        } else {
            return Err(format!(
                "--export-otlp-logs {endpoint}: expected http://host:port or https://host:port"
            ));
        };
        tonic::transport::Endpoint::from_shared(endpoint.to_string())
            .map_err(|e| format!("--export-otlp-logs {endpoint}: {e}"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("--export-otlp-logs: cannot start its runtime: {e}"))?;
        Ok(OtlpLogsSink {
            endpoint: endpoint.to_string(),
            tls,
            positions: PositionFile::new(data_dir.join("export-otlp-logs.position")),
            rt,
            client: None,
            workflows: Workflows::new(engine),
        })
    }

    fn records(&mut self, events: &[Exported]) -> Vec<LogRecord> {
        let mut out = Vec::with_capacity(events.len());
        let mut index = 0u32;
        let mut last_position = None;
        for x in events {
            if last_position != Some(x.position) {
                (last_position, index) = (Some(x.position), 0);
            }
            let e = &x.event;
            let wf = self.workflows.get(e.workflow);
            let s = |v: &str| AnyValue {
                value: Some(any_value::Value::StringValue(v.to_string())),
            };
            let i = |v: i64| AnyValue {
                value: Some(any_value::Value::IntValue(v)),
            };
            let kv = |k: &str, v: AnyValue| KeyValue {
                key: k.to_string(),
                value: Some(v),
                ..Default::default()
            };
            let mut attributes = vec![
                kv("knhk.case_id", i(e.case_id as i64)),
                kv("knhk.position", s(&x.position.to_string())),
                kv("knhk.index", i(i64::from(index))),
            ];
            if let Some(w) = &wf {
                attributes.push(kv("knhk.workflow", s(&w.id)));
                attributes.push(kv("knhk.workflow_version", i(i64::from(w.version))));
                attributes.push(kv("knhk.namespace", s(&w.namespace)));
            }
            let (event_name, event, body) = match e.kind {
                EventKind::Task => {
                    let task = wf.as_ref().and_then(|w| w.tasks.get(usize::from(e.task)));
                    let name = task.map_or_else(|| format!("#{}", e.task), |t| t.name.clone());
                    let lc = e.lifecycle.map_or("", |l| l.xes());
                    attributes.push(kv("knhk.task", s(&name)));
                    if let Some(t) = task {
                        attributes.push(kv("knhk.activity", s(&t.label)));
                        if t.silent {
                            attributes.push(kv(
                                "knhk.silent",
                                AnyValue {
                                    value: Some(any_value::Value::BoolValue(true)),
                                },
                            ));
                        }
                    }
                    attributes.push(kv("knhk.lifecycle", s(lc)));
                    if e.instance != NO_INSTANCE {
                        attributes.push(kv("knhk.instance", i(i64::from(e.instance))));
                    }
                    ("knhk.task", "task", format!("{name} {lc}"))
                }
                EventKind::CaseCreated => ("knhk.case", "case_created", "case created".into()),
                EventKind::CaseCompleted => {
                    ("knhk.case", "case_completed", "case completed".into())
                }
                EventKind::CaseCancelled => {
                    ("knhk.case", "case_cancelled", "case cancelled".into())
                }
                EventKind::CaseDeadlocked => {
                    ("knhk.case", "case_deadlocked", "case deadlocked".into())
                }
            };
            attributes.push(kv("knhk.event", s(event)));
            out.push(LogRecord {
                time_unix_nano: e.time_ns,
                observed_time_unix_nano: e.time_ns,
                severity_number: SeverityNumber::Info as i32,
                severity_text: "INFO".into(),
                body: Some(s(&body)),
                attributes,
                event_name: event_name.into(),
                ..Default::default()
            });
            index += 1;
        }
        out
    }
}

impl ExportSink for OtlpLogsSink {
    fn name(&self) -> String {
        "otlp-logs".into()
    }

    fn resume(&mut self) -> Result<Option<Position>, String> {
        Ok(self.positions.read()?.and_then(|p| p.position))
    }

    fn deliver(&mut self, events: &[Exported], upto: Position) -> Result<(), String> {
        if !events.is_empty() {
            let records = self.records(events);
            let n = records.len();
            let request = ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    resource: Some(Resource {
                        attributes: vec![KeyValue {
                            key: "service.name".into(),
                            value: Some(AnyValue {
                                value: Some(any_value::Value::StringValue("knhk".into())),
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    scope_logs: vec![ScopeLogs {
                        scope: Some(InstrumentationScope {
                            name: "knhk.exporter".into(),
                            version: env!("CARGO_PKG_VERSION").into(),
                            ..Default::default()
                        }),
                        log_records: records,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            };
            let endpoint = self.endpoint.clone();
            let tls = self.tls.clone();
            let mut client = self.client.take();
            let result = self.rt.block_on(async move {
                let mut c = match client.take() {
                    Some(c) => c,
                    None => {
                        let mut ep = tonic::transport::Endpoint::from_shared(endpoint.clone())
                            .map_err(|e| format!("{endpoint}: {e}"))?;
                        if let Some(tls) = tls {
                            ep = ep
                                .tls_config(tls)
                                .map_err(|e| format!("{endpoint}: TLS: {e}"))?;
                        }
                        let ch = ep
                            .connect_timeout(OTLP_TIMEOUT)
                            .timeout(OTLP_TIMEOUT)
                            .connect()
                            .await
                            .map_err(|e| {
                                format!("cannot reach the collector at {endpoint}: {e}")
                            })?;
                        LogsServiceClient::new(ch)
                    }
                };
                let r = c
                    .export(request)
                    .await
                    .map_err(|s| format!("the collector at {endpoint} answered {s}"))?;
                Ok::<_, String>((c, r.into_inner()))
            });
            let (c, response) = result?;
            self.client = Some(c);
            if let Some(p) = response
                .partial_success
                .filter(|p| p.rejected_log_records > 0)
            {
                tracing::warn!(
                    rejected = p.rejected_log_records,
                    of = n,
                    message = %p.error_message,
                    "otlp-logs exporter: the collector rejected records (not sent again)"
                );
            }
        }
        self.positions.write(&SavedPosition {
            position: Some(upto),
            length: None,
        })
    }
}
