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
use knhk_log::{ExportSink, Exported, Position};

use crate::xes::{escape, timestamp};

const FOOTER: &str = "</log>\n";
const POSITION_MAGIC: &str = "knhk-export 1";

/// Appends committed task events to an XES document.
pub struct XesFileSink {
    path: PathBuf,
    engine: Arc<Engine>,
    file: Option<File>,
    /// The document's length after the last delivery (footer included).
    len: u64,
    /// Workflows by kernel index, looked up once each.
    workflows: HashMap<u16, Option<Arc<Workflow>>>,
    /// The last timestamp written per running case (µs): a case's events get strictly
    /// increasing times, as in `ExportCaseXes`; dropped when the case ends.
    last_us: HashMap<u64, u64>,
}

impl XesFileSink {
    /// A sink writing to `path` (created at the first start; continued after a restart).
    pub fn new(path: &Path, engine: Arc<Engine>) -> XesFileSink {
        XesFileSink {
            path: path.to_path_buf(),
            engine,
            file: None,
            len: 0,
            workflows: HashMap::new(),
            last_us: HashMap::new(),
        }
    }

    fn position_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".position");
        PathBuf::from(p)
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> String {
        format!("{}: {what}: {e}", self.path.display())
    }

    /// Records `at` (None: nothing delivered yet) and the document length, atomically.
    fn save_position(&self, at: Option<Position>) -> Result<(), String> {
        let pos = self.position_path();
        let tmp = {
            let mut t = pos.clone().into_os_string();
            t.push(".tmp");
            PathBuf::from(t)
        };
        let text = format!(
            "{POSITION_MAGIC}\nposition {}\nlength {}\n",
            at.map_or_else(|| "start".to_string(), |p| p.to_string()),
            self.len
        );
        let io = |what: &Path, e: std::io::Error| format!("{}: {e}", what.display());
        let mut f = File::create(&tmp).map_err(|e| io(&tmp, e))?;
        f.write_all(text.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &pos).map_err(|e| io(&pos, e))?;
        if let Some(dir) = pos.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io(dir, e))?;
        }
        Ok(())
    }

    fn workflow(&mut self, index: u16) -> Option<Arc<Workflow>> {
        let engine = &self.engine;
        self.workflows
            .entry(index)
            .or_insert_with(|| engine.workflow_at(index))
            .clone()
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
            let Some(wf) = self.workflow(e.workflow) else {
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
        let pos_path = self.position_path();
        let saved = match std::fs::read_to_string(&pos_path) {
            Ok(t) => Some(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("{}: {e}", pos_path.display())),
        };
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
        let Some(text) = saved else {
            if on_disk > 0 {
                return Err(format!(
                    "{} exists and is not empty, but {} is missing: it is not a knhk export or \
                     its position was lost; move it away or name another file",
                    self.path.display(),
                    pos_path.display()
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
        let bad = |why: &str| format!("{}: {why}", pos_path.display());
        let mut lines = text.lines();
        if lines.next() != Some(POSITION_MAGIC) {
            return Err(bad("not a knhk export position file"));
        }
        let position = lines
            .next()
            .and_then(|l| l.strip_prefix("position "))
            .ok_or_else(|| bad("no position line"))?;
        let length: u64 = lines
            .next()
            .and_then(|l| l.strip_prefix("length "))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad("no length line"))?;
        if on_disk < length {
            return Err(format!(
                "{} is {on_disk} bytes, shorter than the {length} bytes {} records: it was \
                 changed by something else",
                self.path.display(),
                pos_path.display()
            ));
        }
        // what was appended after the recorded position is delivered again
        file.set_len(length)
            .map_err(|e| self.err("cannot truncate", e))?;
        file.sync_all().map_err(|e| self.err("cannot sync", e))?;
        self.len = length;
        self.file = Some(file);
        if position == "start" {
            Ok(None)
        } else {
            position.parse::<Position>().map(Some).map_err(|e| bad(&e))
        }
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
