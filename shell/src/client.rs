//! The `knhk` subcommands that talk to a running server over gRPC (a thin tonic client), so
//! that the README's walk-through needs no outside tool.

use std::collections::HashMap;
use std::path::PathBuf;

use tokio_stream::StreamExt;

use crate::proto::knhk_client::KnhkClient;
use crate::proto::{self, value::Kind, Value};

/// A client command.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ClientCommand {
    /// Register a workflow from a YAWL, PNML or JSON file.
    Register {
        file: PathBuf,
        /// Id to register under (default: the model's name).
        #[arg(long)]
        id: Option<String>,
        /// Accept predicates the server cannot evaluate: the client gives their branch bits
        /// when completing the task (GetWorkflow lists those flows).
        #[arg(long)]
        client_predicates: bool,
        /// Leave silent tasks (tasks without a decomposition, silent transitions) to the
        /// client, as before they ran themselves.
        #[arg(long)]
        manual_silent_tasks: bool,
        /// Run every composite task as a sub-net case (a child case of its decomposition)
        /// instead of flattening it.
        #[arg(long)]
        subnet_cases: bool,
    },
    /// List registered workflows.
    Workflows,
    /// Retire a workflow: it takes no new case; its cases run on.
    Retire { workflow: String },
    /// Delete one version of a workflow (it must have no unfinished case); the history of
    /// its finished cases stays.
    DeleteWorkflow {
        workflow: String,
        /// The version to delete (as `knhk workflows` lists it, from 1).
        #[arg(long)]
        version: u32,
        /// Also delete the history of its finished cases (memory and archive), on purpose.
        #[arg(long)]
        delete_history: bool,
    },
    /// Create a case of a workflow.
    Create {
        workflow: String,
        /// Initial data, `name=value` (repeatable).
        #[arg(long = "data", value_name = "NAME=VALUE")]
        data: Vec<String>,
        /// Cluster mode: cases with one business key share a partition.
        #[arg(long)]
        business_key: Option<String>,
    },
    /// Start a task.
    Start { case: u64, task: String },
    /// Complete a started task, with output data.
    Complete {
        case: u64,
        task: String,
        #[arg(long = "data", value_name = "NAME=VALUE")]
        data: Vec<String>,
    },
    /// Start and complete a task, with output data.
    Fire {
        case: u64,
        task: String,
        #[arg(long = "data", value_name = "NAME=VALUE")]
        data: Vec<String>,
    },
    /// Cancel a case.
    Cancel { case: u64 },
    /// Show a case.
    Case {
        case: u64,
        /// Only once what it shows is durable (read-committed; docs/api.md, GetCase).
        #[arg(long)]
        committed: bool,
    },
    /// List cases (optionally of one workflow).
    Cases {
        #[arg(long)]
        workflow: Option<String>,
        /// Also the archived cases (finished, no longer in memory), after those in memory.
        #[arg(long)]
        archived: bool,
        /// At most this many cases (0: all).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Print the events of a case, or of every case of a workflow, as they happen.
    Watch {
        #[arg(long)]
        case: Option<u64>,
        #[arg(long)]
        workflow: Option<String>,
        /// With --case: the case's earlier events first.
        #[arg(long)]
        from_start: bool,
    },
    /// Export cases as XES (streamed: any size): one case, the cases of a workflow, or those
    /// created in a time range; the filters combine.
    Export {
        #[arg(long)]
        case: Option<u64>,
        #[arg(long)]
        workflow: Option<String>,
        /// Only cases created at or after this time (nanoseconds since the Unix epoch).
        #[arg(long, value_name = "UNIX_NANOS")]
        from: Option<u64>,
        /// Only cases created before this time (nanoseconds since the Unix epoch).
        #[arg(long, value_name = "UNIX_NANOS")]
        to: Option<u64>,
        /// Output file (default: standard output). Written as `FILE.part` and renamed once
        /// complete, so FILE is never a truncated document; a name ending in `.gz` is
        /// written gzip-compressed (`knhk replay` reads it as it is).
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn parse_data(items: &[String]) -> Result<HashMap<String, Value>, BoxError> {
    let mut out = HashMap::new();
    for item in items {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("--data '{item}': expected NAME=VALUE"))?;
        let kind = if let Ok(i) = v.parse::<i64>() {
            Kind::Int(i)
        } else if v == "true" || v == "false" {
            Kind::Bool(v == "true")
        } else {
            Kind::String(v.to_string())
        };
        out.insert(k.to_string(), Value { kind: Some(kind) });
    }
    Ok(out)
}

fn show_value(v: &Value) -> String {
    match &v.kind {
        Some(Kind::Int(i)) => i.to_string(),
        Some(Kind::Bool(b)) => b.to_string(),
        Some(Kind::String(s)) => format!("{s:?}"),
        None => "-".into(),
    }
}

fn state_name(s: i32) -> &'static str {
    proto::CaseState::try_from(s)
        .map(|s| s.as_str_name())
        .unwrap_or("?")
}

fn print_case(c: &proto::Case) {
    let mut data: Vec<_> = c
        .data
        .iter()
        .map(|(k, v)| format!("{k}={}", show_value(v)))
        .collect();
    data.sort();
    println!(
        "case {} of {}: {}{} seq={} marking=[{}] enabled=[{}] busy=[{}] data={{{}}}",
        c.case_id,
        c.workflow_id,
        state_name(c.state),
        if c.archived { " (archived)" } else { "" },
        c.seq,
        c.marking.join(", "),
        c.enabled_tasks.join(", "),
        c.busy_tasks.join(", "),
        data.join(", ")
    );
    let instance = |i: Option<u32>| i.map_or_else(String::new, |i| format!(" instance {i}"));
    if c.parent_case_id != 0 {
        println!(
            "  sub-net case of case {} task {}{}",
            c.parent_case_id,
            c.parent_task,
            instance(c.parent_instance)
        );
    }
    for s in &c.subnet_cases {
        println!(
            "  task {}{}: sub-net case {}",
            s.task,
            instance(s.instance),
            s.case_id
        );
    }
}

/// Credentials and namespace the client commands send with every call.
#[derive(Debug, Clone, Default)]
pub struct CallAuth {
    /// File holding a bearer JWT (`--token-file`): sent as `authorization: Bearer <JWT>`.
    pub token_file: Option<PathBuf>,
    /// Namespace to act in (`--namespace`): sent as `knhk-namespace`.
    pub namespace: Option<String>,
}

impl CallAuth {
    /// The metadata to add to every call. Errors name the file (never the token).
    fn metadata(
        &self,
    ) -> Result<
        Vec<(
            &'static str,
            tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
        )>,
        BoxError,
    > {
        let mut v = Vec::new();
        if let Some(p) = &self.token_file {
            let raw = std::fs::read_to_string(p)
                .map_err(|e| format!("--token-file {}: {e}", p.display()))?;
            let token = raw.trim();
            if token.is_empty() {
                return Err(format!("--token-file {}: the file is empty", p.display()).into());
            }
            let mut value: tonic::metadata::MetadataValue<tonic::metadata::Ascii> =
                format!("Bearer {token}").parse().map_err(|_| {
                    format!(
                        "--token-file {}: the token holds characters a header cannot carry",
                        p.display()
                    )
                })?;
            value.set_sensitive(true);
            v.push(("authorization", value));
        }
        if let Some(ns) = &self.namespace {
            let value = ns
                .parse()
                .map_err(|_| format!("--namespace {ns:?} is not a namespace name"))?;
            v.push((crate::auth::NAMESPACE_HEADER, value));
        }
        Ok(v)
    }
}

/// Runs one client command against `server` (e.g. `http://127.0.0.1:50051`).
/// `https://` servers are reached over TLS as `tls` says (crate::tls::ClientTls); every call
/// carries `auth`'s token and namespace.
pub async fn run(
    server: &str,
    tls: &crate::tls::ClientTls,
    auth: &CallAuth,
    cmd: ClientCommand,
) -> Result<(), BoxError> {
    let metadata = auth.metadata()?;
    let channel = tls.channel(server).await?;
    let mut c = KnhkClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
        for (k, v) in &metadata {
            req.metadata_mut().insert(*k, v.clone());
        }
        Ok(req)
    })
    .max_decoding_message_size(64 << 20)
    .max_encoding_message_size(64 << 20);
    match cmd {
        ClientCommand::Register {
            file,
            id,
            client_predicates,
            manual_silent_tasks,
            subnet_cases,
        } => {
            let model = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let r = c
                .register_workflow(proto::RegisterWorkflowRequest {
                    model,
                    format: proto::ModelFormat::Unspecified as i32,
                    workflow_id: id.unwrap_or_default(),
                    client_predicates,
                    manual_silent_tasks,
                    subnet_cases,
                    ..Default::default()
                })
                .await?
                .into_inner();
            if let Some(w) = r.workflow {
                let tasks: Vec<_> = w
                    .tasks
                    .iter()
                    .filter(|t| !t.silent)
                    .map(|t| t.name.as_str())
                    .collect();
                println!(
                    "{} (version {})  tasks: {}",
                    w.workflow_id,
                    w.version,
                    tasks.join(", ")
                );
                let auto: Vec<_> = w
                    .tasks
                    .iter()
                    .filter(|t| t.automatic)
                    .map(|t| t.name.as_str())
                    .collect();
                if !auto.is_empty() {
                    println!("  run by the server: {}", auto.join(", "));
                }
            }
            if !r.soundness_decided {
                println!("  soundness: not decided (the exploration hit its state cap)");
            }
            for m in &r.warnings {
                println!("  [warning] {m}");
            }
            for m in &r.notes {
                println!("  [note] {m}");
            }
        }
        ClientCommand::Workflows => {
            for w in c
                .list_workflows(proto::ListWorkflowsRequest {})
                .await?
                .into_inner()
                .workflows
            {
                println!(
                    "{}  (version {}, {} tasks, {} cases{})",
                    w.workflow_id,
                    w.version,
                    w.tasks.len(),
                    w.cases_created,
                    if w.retired { ", retired" } else { "" }
                );
            }
        }
        ClientCommand::Retire { workflow } => {
            let w = c
                .retire_workflow(proto::RetireWorkflowRequest {
                    workflow_id: workflow,
                })
                .await?
                .into_inner();
            println!(
                "{} retired: it takes no new case ({} cases created)",
                w.workflow_id, w.cases_created
            );
        }
        ClientCommand::DeleteWorkflow {
            workflow,
            version,
            delete_history,
        } => {
            let w = c
                .delete_workflow(proto::DeleteWorkflowRequest {
                    workflow_id: workflow,
                    version,
                    delete_history,
                })
                .await?
                .into_inner();
            println!(
                "{} version {} deleted ({} cases created on it){}",
                w.workflow_id,
                w.version,
                w.cases_created,
                if delete_history {
                    ", with the history of its finished cases"
                } else {
                    ""
                }
            );
        }
        ClientCommand::Create {
            workflow,
            data,
            business_key,
        } => {
            let data = parse_data(&data)?;
            let r = c
                .create_case(proto::CreateCaseRequest {
                    workflow_id: workflow,
                    data,
                    business_key: business_key.unwrap_or_default(),
                })
                .await?;
            print_case(r.get_ref());
        }
        ClientCommand::Start { case, task } => {
            let r = c
                .start_task(proto::TaskRequest {
                    case_id: case,
                    task,
                    ..Default::default()
                })
                .await?;
            print_case(r.get_ref());
        }
        ClientCommand::Complete { case, task, data } => {
            let data = parse_data(&data)?;
            let r = c
                .complete_task(proto::TaskRequest {
                    case_id: case,
                    task,
                    data,
                    ..Default::default()
                })
                .await?;
            print_case(r.get_ref());
        }
        ClientCommand::Fire { case, task, data } => {
            let data = parse_data(&data)?;
            let r = c
                .fire_task(proto::TaskRequest {
                    case_id: case,
                    task,
                    data,
                    ..Default::default()
                })
                .await?;
            print_case(r.get_ref());
        }
        ClientCommand::Cancel { case } => {
            let r = c
                .cancel_case(proto::CancelCaseRequest { case_id: case })
                .await?;
            print_case(r.get_ref());
        }
        ClientCommand::Case { case, committed } => {
            let r = c
                .get_case(proto::GetCaseRequest {
                    case_id: case,
                    committed,
                })
                .await?;
            print_case(r.get_ref());
        }
        ClientCommand::Cases {
            workflow,
            archived,
            limit,
        } => {
            let mut s = c
                .list_cases(proto::ListCasesRequest {
                    workflow_id: workflow.unwrap_or_default(),
                    include_archived: archived,
                    limit,
                    ..Default::default()
                })
                .await?
                .into_inner();
            while let Some(case) = s.next().await {
                print_case(&case?);
            }
        }
        ClientCommand::Watch {
            case,
            workflow,
            from_start,
        } => {
            let mut s = c
                .watch_case(proto::WatchCaseRequest {
                    case_id: case.unwrap_or(0),
                    workflow_id: workflow.unwrap_or_default(),
                    from_start,
                })
                .await?
                .into_inner();
            while let Some(ev) = s.next().await {
                let ev = ev?;
                let kind = proto::EventKind::try_from(ev.kind)
                    .map(|k| k.as_str_name())
                    .unwrap_or("?");
                let lc = proto::Lifecycle::try_from(ev.lifecycle)
                    .map(|l| l.as_str_name())
                    .unwrap_or("?");
                let lag = if ev.lagged > 0 {
                    format!(" (lost {} events)", ev.lagged)
                } else {
                    String::new()
                };
                if ev.kind == proto::EventKind::Task as i32 {
                    println!(
                        "case {} {} {} {}{lag}",
                        ev.case_id,
                        ev.task,
                        lc,
                        state_name(ev.state)
                    );
                } else {
                    println!("case {} {}{lag}", ev.case_id, kind);
                }
            }
        }
        ClientCommand::Export {
            case,
            workflow,
            from,
            to,
            output,
        } => {
            let stream = c
                .export_xes(proto::ExportXesRequest {
                    case_id: case.unwrap_or(0),
                    workflow_id: workflow.unwrap_or_default(),
                    created_from_unix_nanos: from.unwrap_or(0),
                    created_to_unix_nanos: to.unwrap_or(0),
                    chunk_bytes: 0,
                })
                .await?
                .into_inner();
            match output {
                Some(path) => {
                    let mut part = path.clone().into_os_string();
                    part.push(".part");
                    let part = PathBuf::from(part);
                    let file = std::fs::File::create(&part)
                        .map_err(|e| format!("{}: {e}", part.display()))?;
                    let written = if path.extension().is_some_and(|e| e == "gz") {
                        let gz = flate2::write::GzEncoder::new(
                            std::io::BufWriter::new(file),
                            flate2::Compression::fast(),
                        );
                        write_gzip_chunks(stream, gz).await
                    } else {
                        write_chunks(stream, std::io::BufWriter::new(file)).await
                    };
                    match written {
                        Ok(last) => {
                            std::fs::rename(&part, &path)
                                .map_err(|e| format!("{}: {e}", path.display()))?;
                            eprintln!(
                                "{} traces, {} events -> {}{}",
                                last.traces,
                                last.events,
                                path.display(),
                                export_notes(&last)
                            );
                        }
                        Err(e) => {
                            let _ = std::fs::remove_file(&part);
                            return Err(e);
                        }
                    }
                }
                None => {
                    let last = write_chunks(stream, std::io::stdout().lock()).await?;
                    let notes = export_notes(&last);
                    if !notes.is_empty() {
                        eprintln!("{}", notes.trim_start_matches(", "));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Writes an export stream's chunks to `out` as they arrive; the last chunk (with the counts)
/// or an error when the stream failed or ended without it.
async fn write_chunks(
    mut stream: tonic::Streaming<proto::XesChunk>,
    mut out: impl std::io::Write,
) -> Result<proto::XesChunk, BoxError> {
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        out.write_all(&chunk.xes)?;
        if chunk.last {
            out.flush()?;
            return Ok(chunk);
        }
    }
    Err("the export stream ended before its last chunk: the document is incomplete".into())
}

/// As `write_chunks`, through gzip: the gzip trailer is written (and the file flushed) once
/// the last chunk came.
async fn write_gzip_chunks<W: std::io::Write>(
    stream: tonic::Streaming<proto::XesChunk>,
    mut gz: flate2::write::GzEncoder<W>,
) -> Result<proto::XesChunk, BoxError> {
    let last = write_chunks(stream, &mut gz).await?;
    gz.finish()?.flush()?;
    Ok(last)
}

/// What the counts of an export say beyond traces and events.
fn export_notes(last: &proto::XesChunk) -> String {
    let mut s = String::new();
    if last.dropped_events != 0 {
        s.push_str(&format!(
            ", {} older events dropped (history limit)",
            last.dropped_events
        ));
    }
    if last.evicted_cases != 0 {
        s.push_str(&format!(
            ", {} cases evicted during the export",
            last.evicted_cases
        ));
    }
    s
}
