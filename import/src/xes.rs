//! XES log reader (IEEE 1849), plain or gzip-compressed, streamed with `quick-xml`.
//!
//! Keeps, per trace, its `concept:name` and its events' `concept:name`; when an event carries
//! `lifecycle:transition`, only `complete` events are kept. Attributes inside `<global>` and
//! nested attributes (lists, containers) are ignored.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

use crate::error::ImportError;

/// Most events read from one log.
pub const MAX_EVENTS: usize = 50_000_000;

/// One event: its activity and lifecycle transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XesEvent {
    pub name: String,
    pub lifecycle: Option<String>,
}

/// One trace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Trace {
    pub name: Option<String>,
    /// The events kept (complete events when lifecycle is present).
    pub events: Vec<XesEvent>,
}

/// A log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Log {
    pub traces: Vec<Trace>,
}

fn syntax(reason: String) -> ImportError {
    ImportError::Syntax {
        format: "XES",
        reason,
    }
}

fn key_value(e: &BytesStart<'_>) -> Result<(Option<String>, Option<String>), ImportError> {
    let (mut k, mut v) = (None, None);
    for a in e.attributes() {
        let a = a.map_err(|x| syntax(x.to_string()))?;
        let val = a
            .unescape_value()
            .map_err(|x| syntax(x.to_string()))?
            .into_owned();
        match a.key.local_name().as_ref() {
            b"key" => k = Some(val),
            b"value" => v = Some(val),
            _ => {}
        }
    }
    Ok((k, v))
}

/// Reads a log from any reader; gzip is recognised by its magic bytes.
pub fn read(r: impl Read) -> Result<Log, ImportError> {
    let mut br = BufReader::new(r);
    let gz = {
        let head = br.fill_buf().map_err(|e| syntax(e.to_string()))?;
        head.starts_with(&[0x1f, 0x8b])
    };
    if gz {
        parse(BufReader::new(flate2::bufread::MultiGzDecoder::new(br)))
    } else {
        parse(br)
    }
}

/// Reads a log file (plain or `.xes.gz`).
pub fn read_file(path: &Path) -> Result<Log, ImportError> {
    let f = std::fs::File::open(path).map_err(|e| ImportError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    read(f)
}

fn parse(r: impl BufRead) -> Result<Log, ImportError> {
    let mut reader = Reader::from_reader(r);
    let mut buf = Vec::new();
    let mut log = Log::default();
    // Element stack of local names (only their kinds matter).
    let mut stack: Vec<Vec<u8>> = Vec::new();
    let mut trace: Option<Trace> = None;
    let mut event: Option<XesEvent> = None;
    let mut events = 0usize;
    let mut saw_log = false;
    loop {
        let ev = reader
            .read_event_into(&mut buf)
            .map_err(|e| syntax(format!("at byte {}: {e}", reader.buffer_position())))?;
        let empty = matches!(ev, Event::Empty(_));
        match ev {
            Event::Start(e) | Event::Empty(e) => {
                let name = e.local_name().as_ref().to_vec();
                let parent = stack.last().map(Vec::as_slice);
                let in_global = stack.iter().any(|s| s == b"global");
                match name.as_slice() {
                    b"log" => saw_log = true,
                    b"trace" if !in_global => trace = Some(Trace::default()),
                    b"event" if !in_global && trace.is_some() => {
                        event = Some(XesEvent {
                            name: String::new(),
                            lifecycle: None,
                        })
                    }
                    _ if !in_global => {
                        let (k, v) = key_value(&e)?;
                        match (parent, k.as_deref(), v) {
                            (Some(b"event"), Some("concept:name"), Some(v)) => {
                                if let Some(ev) = event.as_mut() {
                                    ev.name = v;
                                }
                            }
                            (Some(b"event"), Some("lifecycle:transition"), Some(v)) => {
                                if let Some(ev) = event.as_mut() {
                                    ev.lifecycle = Some(v);
                                }
                            }
                            (Some(b"trace"), Some("concept:name"), Some(v)) => {
                                if let Some(t) = trace.as_mut() {
                                    t.name = Some(v);
                                }
                            }
                            _ => {}
                        }
                    }
                    _ => {}
                }
                if empty {
                    close(&name, &mut trace, &mut event, &mut log, &mut events)?;
                } else {
                    stack.push(name);
                    if stack.len() > 256 {
                        return Err(syntax("elements nested deeper than 256".into()));
                    }
                }
            }
            Event::End(e) => {
                let name = e.local_name().as_ref().to_vec();
                if stack.pop().as_deref() != Some(name.as_slice()) {
                    return Err(syntax("mismatched end tag".into()));
                }
                if !stack.iter().any(|s| s == b"global") {
                    close(&name, &mut trace, &mut event, &mut log, &mut events)?;
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !stack.is_empty() {
        return Err(syntax(
            "truncated: unclosed elements at end of input".into(),
        ));
    }
    if !saw_log {
        return Err(syntax("no <log> element".into()));
    }
    Ok(log)
}

fn close(
    name: &[u8],
    trace: &mut Option<Trace>,
    event: &mut Option<XesEvent>,
    log: &mut Log,
    events: &mut usize,
) -> Result<(), ImportError> {
    match name {
        b"event" => {
            if let (Some(ev), Some(t)) = (event.take(), trace.as_mut()) {
                let keep = ev.lifecycle.as_deref().is_none_or(|l| {
                    // an autoskip (a task completed by its timer without being started)
                    // moves the case like a completion
                    l.eq_ignore_ascii_case("complete") || l.eq_ignore_ascii_case("autoskip")
                });
                if keep {
                    *events += 1;
                    if *events > MAX_EVENTS {
                        return Err(ImportError::TooLarge {
                            size: *events as u64,
                            limit: MAX_EVENTS as u64,
                        });
                    }
                    t.events.push(ev);
                }
            }
        }
        b"trace" => {
            if let Some(t) = trace.take() {
                log.traces.push(t);
            }
        }
        _ => {}
    }
    Ok(())
}
