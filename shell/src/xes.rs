//! XES export (IEEE 1849-2016): one trace per case, one event per task lifecycle transition.
//!
//! Declared: the concept, lifecycle, time and org extensions; globals for the trace
//! (`concept:name`) and the event (`concept:name`, `lifecycle:transition`, `time:timestamp`,
//! `concept:instance`); an activity classifier and an activity+transition classifier.
//! Events of silent tasks (invisible transitions, synthesised start/end tasks) are left out:
//! no log event corresponds to them, and replay tools treat them as invisible.
//! Timestamps are the server's record time; within a trace they are made strictly increasing
//! (by at most a microsecond per event recorded in the same batch) so that tools that sort
//! by time keep the recorded order.

use std::fmt::Write as _;

use crate::engine::{Hist, Lifecycle};
use crate::workflow::Workflow;

/// One case to export.
pub struct TraceInput<'a> {
    pub case_id: u64,
    pub workflow: &'a Workflow,
    pub history: &'a [Hist],
}

/// The document and its counts.
pub struct Xes {
    pub xml: String,
    pub traces: u32,
    pub events: u64,
}

/// Writes a log of the given traces, whole, in memory (tests and small exports; the server
/// streams with [`Writer`]).
pub fn export(log_name: &str, traces: &[TraceInput<'_>]) -> Xes {
    let mut w = Writer::new(log_name, usize::MAX);
    let mut never = |_: String| -> Result<(), std::convert::Infallible> { Ok(()) };
    for t in traces {
        let Ok(()) = w.trace(t, &mut never);
    }
    let (xml, traces, events) = w.finish();
    Xes {
        xml,
        traces: u32::try_from(traces).unwrap_or(u32::MAX),
        events,
    }
}

const HEADER: &str = concat!(
    "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n",
    "<log xes.version=\"1849-2016\" xes.features=\"nested-attributes\" ",
    "openxes.version=\"1.0RC7\" xmlns=\"http://www.xes-standard.org/\">\n",
    "  <extension name=\"Concept\" prefix=\"concept\" uri=\"http://www.xes-standard.org/concept.xesext\"/>\n",
    "  <extension name=\"Lifecycle\" prefix=\"lifecycle\" uri=\"http://www.xes-standard.org/lifecycle.xesext\"/>\n",
    "  <extension name=\"Time\" prefix=\"time\" uri=\"http://www.xes-standard.org/time.xesext\"/>\n",
    "  <extension name=\"Organizational\" prefix=\"org\" uri=\"http://www.xes-standard.org/org.xesext\"/>\n",
    "  <global scope=\"trace\">\n",
    "    <string key=\"concept:name\" value=\"__INVALID__\"/>\n",
    "  </global>\n",
    "  <global scope=\"event\">\n",
    "    <string key=\"concept:name\" value=\"__INVALID__\"/>\n",
    "    <string key=\"lifecycle:transition\" value=\"complete\"/>\n",
    "    <date key=\"time:timestamp\" value=\"1970-01-01T00:00:00.000+00:00\"/>\n",
    "    <string key=\"concept:instance\" value=\"0\"/>\n",
    "  </global>\n",
    "  <classifier name=\"Activity\" keys=\"concept:name\"/>\n",
    "  <classifier name=\"Activity and transition\" keys=\"concept:name lifecycle:transition\"/>\n",
    "  <string key=\"lifecycle:model\" value=\"standard\"/>\n",
);

/// Writes a document trace by trace into chunks of at most `chunk` bytes: the header goes into
/// the first chunk, the footer into the last ([`Writer::finish`]). Chunks end on element
/// boundaries (after a trace's opening, an event or a trace's end), so each holds at most
/// `chunk` bytes unless one element alone is larger (then that element is a chunk by itself).
/// Memory: one chunk, plus what the caller holds.
pub struct Writer {
    buf: String,
    chunk: usize,
    traces: u64,
    events: u64,
}

impl Writer {
    /// A document named `log_name`, cut into chunks of at most `chunk` bytes.
    pub fn new(log_name: &str, chunk: usize) -> Writer {
        let mut buf = String::with_capacity(chunk.min(1 << 20).max(HEADER.len() + 256));
        buf.push_str(HEADER);
        let _ = writeln!(
            buf,
            "  <string key=\"concept:name\" value=\"{}\"/>",
            escape(log_name)
        );
        Writer {
            buf,
            chunk,
            traces: 0,
            events: 0,
        }
    }

    /// Called after each element written from `mark`: when the buffer has outgrown a chunk,
    /// what came before the element is a chunk.
    fn cut<E>(
        &mut self,
        mark: usize,
        emit: &mut impl FnMut(String) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.buf.len() <= self.chunk {
            return Ok(());
        }
        let at = if mark == 0 { self.buf.len() } else { mark };
        let mut next = String::with_capacity(self.chunk.min(1 << 20));
        next.push_str(&self.buf[at..]);
        self.buf.truncate(at);
        emit(std::mem::replace(&mut self.buf, next))
    }

    /// Appends one trace; `emit` gets each chunk completed meanwhile (an error from it stops
    /// the trace where it is and is returned).
    pub fn trace<E>(
        &mut self,
        t: &TraceInput<'_>,
        emit: &mut impl FnMut(String) -> Result<(), E>,
    ) -> Result<(), E> {
        let mark = self.buf.len();
        self.buf.push_str("  <trace>\n");
        let _ = writeln!(
            self.buf,
            "    <string key=\"concept:name\" value=\"{}\"/>",
            t.case_id
        );
        self.cut(mark, emit)?;
        // concept:instance pairs a start with its complete or abort: the open instance of each
        // task, numbered per trace.
        let mut open = [0u32; 64];
        // a multiple-instance task's events pair per instance: (task, instance) -> the open one
        let mut open_mi: std::collections::HashMap<(u8, u32), u32> =
            std::collections::HashMap::new();
        let mut next_instance = 1u32;
        let mut last_us = 0u64;
        for h in t.history {
            let Some(task) = t.workflow.tasks.get(usize::from(h.task)) else {
                continue;
            };
            if task.silent {
                continue;
            }
            let mut mi_slot = open_mi.get(&(h.task, h.instance)).copied().unwrap_or(0);
            let slot = if h.instance == knhk_engine::command::NO_INSTANCE {
                &mut open[usize::from(h.task) % 64]
            } else {
                &mut mi_slot
            };
            let instance = match h.lifecycle {
                Lifecycle::Start => {
                    *slot = next_instance;
                    next_instance += 1;
                    *slot
                }
                Lifecycle::Complete
                | Lifecycle::TimerComplete
                | Lifecycle::AteAbort
                | Lifecycle::PiAbort => {
                    let i = if *slot != 0 {
                        *slot
                    } else {
                        next_instance += 1;
                        next_instance - 1
                    };
                    *slot = 0;
                    i
                }
                Lifecycle::Withdraw | Lifecycle::TimerSkip => {
                    next_instance += 1;
                    next_instance - 1
                }
            };
            if h.instance != knhk_engine::command::NO_INSTANCE {
                if mi_slot != 0 {
                    open_mi.insert((h.task, h.instance), mi_slot);
                } else {
                    open_mi.remove(&(h.task, h.instance));
                }
            }
            let us = (h.time_ns / 1000).max(last_us + 1);
            last_us = us;
            let mark = self.buf.len();
            let x = &mut self.buf;
            x.push_str("    <event>\n");
            let _ = writeln!(
                x,
                "      <string key=\"concept:name\" value=\"{}\"/>",
                escape(&task.label)
            );
            let _ = writeln!(
                x,
                "      <string key=\"lifecycle:transition\" value=\"{}\"/>",
                h.lifecycle.xes()
            );
            let _ = writeln!(
                x,
                "      <date key=\"time:timestamp\" value=\"{}\"/>",
                timestamp(us)
            );
            let _ = writeln!(
                x,
                "      <string key=\"concept:instance\" value=\"{instance}\"/>"
            );
            if h.lifecycle.by_timer() {
                // the task's timer expired (an autoskip, or a completion by the engine)
                x.push_str("      <boolean key=\"knhk:timer\" value=\"true\"/>\n");
            }
            x.push_str("    </event>\n");
            self.events += 1;
            self.cut(mark, emit)?;
        }
        let mark = self.buf.len();
        self.buf.push_str("  </trace>\n");
        self.traces += 1;
        self.cut(mark, emit)
    }

    /// Bytes written and not yet emitted.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Traces and events written so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.traces, self.events)
    }

    /// The last chunk (what is left, with the footer), the trace count and the event count.
    pub fn finish(mut self) -> (String, u64, u64) {
        self.buf.push_str("</log>\n");
        (self.buf, self.traces, self.events)
    }
}

/// XML attribute escaping.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' && c != '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SS.ffffff+00:00` for microseconds since the Unix epoch.
pub fn timestamp(us: u64) -> String {
    let secs = us / 1_000_000;
    let frac = us % 1_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}+00:00",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_iso8601_utc() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000000+00:00");
        // 2024-02-29T12:34:56.789012Z
        assert_eq!(
            timestamp(1_709_210_096_789_012),
            "2024-02-29T12:34:56.789012+00:00"
        );
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }
}
