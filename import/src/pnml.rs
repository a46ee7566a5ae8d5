//! PNML reader: place/transition nets of type `ptnet` (namespaced, PNML 2009) and
//! `pnmlcoremodel`, with or without `<page>`, the WoPeD dialect (operator transitions
//! `X_op_N`, centre places) and pm4py's `<finalmarkings>` and `$invisible$` transitions.
//!
//! Mapping: a place is a condition, a transition is a task that consumes from all its input
//! places (AND-join) and produces into all its output places (AND-split); a place with several
//! consumers is a deferred choice. The net must be 1-safe: an initial marking with more than
//! one token on a place is refused. See `docs/import.md` for how the input and output
//! conditions are chosen (marking, final marking, source and sink places).

use std::collections::{HashMap, HashSet};

use roxmltree::Node;

use crate::error::ImportError;
use crate::ir::{Join, SourceFormat, Split};
use crate::raw::{Kind, RawElement, RawFlow, RawNet, RawSpec, RawTask};
use crate::xml::{attr, child, child_text, children, parse, req_attr, text};

struct Place {
    id: String,
    name: Option<String>,
    tokens: u64,
}

struct Transition {
    id: String,
    name: Option<String>,
    label: Option<String>,
    silent: bool,
    /// WoPeD operator type (101..109), when the transition belongs to an operator.
    woped_op: Option<u32>,
}

#[derive(Default)]
struct Collected {
    places: Vec<Place>,
    transitions: Vec<Transition>,
    arcs: Vec<(String, String, String)>,
    refs: HashMap<String, String>,
    woped: bool,
}

fn parse_tokens(s: &str, place: &str) -> Result<u64, ImportError> {
    // ProM writes plain numbers; some tools write "Default,1" (colored token notation).
    let t = s.rsplit(',').next().unwrap_or(s).trim();
    t.parse::<u64>().map_err(|_| {
        ImportError::malformed(place, format!("initial marking '{s}' is not a token count"))
    })
}

fn woped_operator(n: Node<'_, '_>) -> Option<u32> {
    children(n, "toolspecific")
        .filter(|ts| attr(*ts, "tool") == Some("WoPeD"))
        .find_map(|ts| child(ts, "operator"))
        .and_then(|op| attr(op, "type"))
        .and_then(|t| t.trim().parse().ok())
}

fn collect(n: Node<'_, '_>, out: &mut Collected, depth: usize) -> Result<(), ImportError> {
    if depth > 64 {
        return Err(ImportError::malformed(
            "page",
            "pages nested deeper than 64",
        ));
    }
    for e in n.children().filter(|c| c.is_element()) {
        match e.tag_name().name() {
            "page" => collect(e, out, depth + 1)?,
            "place" => {
                let id = req_attr(e, "id", "place")?.to_string();
                let tokens = match child(e, "initialMarking") {
                    Some(m) => match child_text(m, "text").or_else(|| text(m)) {
                        Some(t) => parse_tokens(&t, &id)?,
                        None => 0,
                    },
                    None => 0,
                };
                let name = child(e, "name").and_then(|nm| child_text(nm, "text"));
                if woped_operator(e).is_some() {
                    out.woped = true;
                }
                out.places.push(Place { id, name, tokens });
            }
            "transition" => {
                let id = req_attr(e, "id", "transition")?.to_string();
                let name = child(e, "name").and_then(|nm| child_text(nm, "text"));
                let activity = children(e, "toolspecific").find_map(|ts| attr(ts, "activity"));
                let silent = activity == Some("$invisible$");
                let label = match activity {
                    Some(a) if !silent && !a.is_empty() => Some(a.to_string()),
                    _ => name.clone(),
                };
                let woped_op = woped_operator(e);
                if woped_op.is_some() {
                    out.woped = true;
                }
                out.transitions.push(Transition {
                    id,
                    name,
                    label,
                    silent,
                    woped_op,
                });
            }
            "arc" => {
                let id = attr(e, "id").unwrap_or("arc").to_string();
                let s = req_attr(e, "source", "arc")?.to_string();
                let t = req_attr(e, "target", "arc")?.to_string();
                if let Some(w) =
                    child(e, "inscription").and_then(|i| child_text(i, "text").or_else(|| text(i)))
                {
                    let w = w.rsplit(',').next().unwrap_or(&w).trim().to_string();
                    if w != "1" {
                        return Err(ImportError::unsupported(
                            format!("arc '{id}'"),
                            format!("weight {w}: the kernel moves one token per arc"),
                        ));
                    }
                }
                if let Some(ty) = child(e, "type").and_then(|t| attr(t, "value")) {
                    if ty != "normal" {
                        return Err(ImportError::unsupported(
                            format!("arc '{id}'"),
                            format!("{ty} arcs are not place/transition arcs"),
                        ));
                    }
                }
                out.arcs.push((id, s, t));
            }
            "referencePlace" | "referenceTransition" => {
                let id = req_attr(e, "id", "reference")?.to_string();
                let r = req_attr(e, "ref", "reference")?.to_string();
                out.refs.insert(id, r);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Reads the first net of a PNML document.
pub(crate) fn read(src: &str) -> Result<RawSpec, ImportError> {
    let doc = parse(src, "PNML")?;
    let root = doc.root_element();
    if root.tag_name().name() != "pnml" {
        return Err(ImportError::malformed(
            root.tag_name().name(),
            "PNML root element is not <pnml>",
        ));
    }
    let net = child(root, "net").ok_or_else(|| ImportError::malformed("pnml", "no <net>"))?;
    let net_id = attr(net, "id").unwrap_or("net").to_string();
    let ty = attr(net, "type").unwrap_or("");
    let mut c = Collected::default();
    collect(net, &mut c, 0)?;
    let dialect = if c.woped {
        "woped"
    } else if ty.ends_with("pnmlcoremodel") {
        "pnmlcoremodel"
    } else if ty.ends_with("ptnet") || ty.ends_with("ptNetb") || ty.is_empty() {
        "ptnet"
    } else {
        return Err(ImportError::unsupported(
            format!("net '{net_id}'"),
            format!("net type '{ty}' is not a place/transition net"),
        ));
    };
    let name = child(net, "name")
        .and_then(|n| child_text(n, "text"))
        .unwrap_or_else(|| net_id.clone());

    // 1-safety of the initial marking comes first: it is the reason such a net is refused.
    if let Some(p) = c.places.iter().find(|p| p.tokens > 1) {
        return Err(ImportError::NotSafe {
            place: p.id.clone(),
            tokens: p.tokens,
        });
    }

    let resolve = |id: &str| -> String {
        let mut cur = id.to_string();
        for _ in 0..16 {
            match c.refs.get(&cur) {
                Some(n) => cur = n.clone(),
                None => break,
            }
        }
        cur
    };
    let place_ids: HashSet<&str> = c.places.iter().map(|p| p.id.as_str()).collect();
    let trans_ids: HashSet<&str> = c.transitions.iter().map(|t| t.id.as_str()).collect();
    let mut pre: HashMap<String, Vec<String>> = HashMap::new(); // transition -> input places
    let mut post: HashMap<String, Vec<String>> = HashMap::new(); // transition -> output places
    let mut place_out: HashMap<String, usize> = HashMap::new();
    let mut place_in: HashMap<String, usize> = HashMap::new();
    for (aid, s, t) in &c.arcs {
        let (s, t) = (resolve(s), resolve(t));
        match (
            place_ids.contains(s.as_str()),
            trans_ids.contains(t.as_str()),
        ) {
            (true, true) => {
                pre.entry(t.clone()).or_default().push(s.clone());
                *place_out.entry(s).or_default() += 1;
            }
            _ => match (
                trans_ids.contains(s.as_str()),
                place_ids.contains(t.as_str()),
            ) {
                (true, true) => {
                    post.entry(s.clone()).or_default().push(t.clone());
                    *place_in.entry(t).or_default() += 1;
                }
                _ => {
                    let missing =
                        if place_ids.contains(s.as_str()) || trans_ids.contains(s.as_str()) {
                            t
                        } else {
                            s
                        };
                    return Err(ImportError::UnknownElement {
                        from: format!("arc '{aid}'"),
                        id: missing,
                    });
                }
            },
        }
    }

    let mut notes = Vec::new();
    let mut elements: Vec<RawElement> = Vec::new();
    let marked: Vec<&Place> = c.places.iter().filter(|p| p.tokens == 1).collect();
    let sources: Vec<&Place> = c
        .places
        .iter()
        .filter(|p| !place_in.contains_key(&p.id))
        .collect();
    let final_marking = read_final_marking(net)?;
    let sinks: Vec<&Place> = match &final_marking {
        Some(f) => c.places.iter().filter(|p| f.contains(&p.id)).collect(),
        None => c
            .places
            .iter()
            .filter(|p| !place_out.contains_key(&p.id))
            .collect(),
    };
    if let Some(f) = &final_marking {
        if let Some(missing) = f.iter().find(|id| !place_ids.contains(id.as_str())) {
            return Err(ImportError::UnknownElement {
                from: "finalmarkings".into(),
                id: missing.clone(),
            });
        }
    }

    // Input: the marked place; else the source place(s).
    let (start_places, start_why): (Vec<&Place>, &str) = if !marked.is_empty() {
        (marked, "initially marked")
    } else {
        (sources, "source (no initial marking)")
    };
    // Place -> the transitions consuming it, in transition order, and the places read by a
    // WoPeD XOR-join or written by a WoPeD XOR-split: one pass over the arcs (a scan of every
    // transition per place made large nets quadratic).
    let mut consumers: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut xor_join_inputs: HashSet<&str> = HashSet::new();
    let mut xor_split_outputs: HashSet<&str> = HashSet::new();
    for t in &c.transitions {
        for p in pre.get(&t.id).map_or(&[][..], Vec::as_slice) {
            let v = consumers.entry(p.as_str()).or_default();
            if v.last() != Some(&t.id.as_str()) {
                v.push(t.id.as_str());
            }
            if matches!(t.woped_op, Some(105 | 106 | 109)) {
                xor_join_inputs.insert(p.as_str());
            }
        }
        if matches!(t.woped_op, Some(104 | 106 | 108)) {
            for p in post.get(&t.id).map_or(&[][..], Vec::as_slice) {
                xor_split_outputs.insert(p.as_str());
            }
        }
    }
    let woped_xor_join = |p: &Place| -> bool { xor_join_inputs.contains(p.id.as_str()) };
    let woped_xor_split = |p: &Place| -> bool { xor_split_outputs.contains(p.id.as_str()) };
    let mut input_id = None;
    let mut output_id = None;
    match start_places.as_slice() {
        [] => {
            return Err(ImportError::malformed(
                &net_id,
                "no initially marked place and no source place: no input condition",
            ))
        }
        [one] if !place_in.contains_key(&one.id) => input_id = Some(one.id.clone()),
        [one] => {
            // The kernel's input condition has no inflow (a case starts there once): a place
            // that is marked and also fed by arcs gets a synthesised input and silent start.
            elements.push(RawElement {
                id: "__input".into(),
                name: Some("input".into()),
                kind: Kind::Input,
                flows: vec![RawFlow::to("__start")],
            });
            let mut t = RawTask::new(Join::Xor, Split::And);
            t.silent = true;
            elements.push(RawElement {
                id: "__start".into(),
                name: None,
                kind: Kind::Task(t),
                flows: vec![RawFlow::to(&one.id)],
            });
            notes.push(format!(
                "{start_why} place '{}' has incoming arcs: input '__input' and a silent start \
                 '__start' marking it (an input condition has no inflow)",
                one.id
            ));
        }
        many => {
            let all_xor = many.iter().all(|p| woped_xor_join(p));
            let ids: Vec<&str> = many.iter().map(|p| p.id.as_str()).collect();
            elements.push(RawElement {
                id: "__input".into(),
                name: Some("input".into()),
                kind: Kind::Input,
                flows: Vec::new(),
            });
            if all_xor {
                for p in many {
                    let tid = format!("__start_{}", p.id);
                    let mut t = RawTask::new(Join::Xor, Split::And);
                    t.silent = true;
                    elements.push(RawElement {
                        id: tid.clone(),
                        name: None,
                        kind: Kind::Task(t),
                        flows: vec![RawFlow::to(&p.id)],
                    });
                    elements[0].flows.push(RawFlow::to(tid));
                }
                notes.push(format!(
                    "{} {start_why} places {ids:?} are alternatives (WoPeD XOR-join): input '__input' with a silent start transition into each (deferred choice)",
                    many.len()
                ));
            } else {
                let mut t = RawTask::new(Join::Xor, Split::And);
                t.silent = true;
                elements.push(RawElement {
                    id: "__start".into(),
                    name: None,
                    kind: Kind::Task(t),
                    flows: many.iter().map(|p| RawFlow::to(&p.id)).collect(),
                });
                elements[0].flows.push(RawFlow::to("__start"));
                notes.push(format!(
                    "{} {start_why} places {ids:?}: input '__input' and a silent AND-split '__start' marking each",
                    many.len()
                ));
            }
        }
    }
    match sinks.as_slice() {
        [] => {
            return Err(ImportError::malformed(
                &net_id,
                "no final-marking place and no sink place: no output condition",
            ))
        }
        [one] if !place_out.contains_key(&one.id) => output_id = Some(one.id.clone()),
        [one] => {
            // A final place with outgoing arcs: the case may go on from it or end there; a
            // silent end moves its token to a synthesised output condition (which has no
            // outflow, as the kernel requires).
            push_end(&mut elements, Join::Xor);
            notes.push(format!(
                "final place '{}' has outgoing arcs: output '__output' after a silent end \
                 '__end' (deferred choice between going on and ending)",
                one.id
            ));
        }
        many => {
            let all_xor = many.iter().all(|p| woped_xor_split(p));
            let ids: Vec<&str> = many.iter().map(|p| p.id.as_str()).collect();
            push_end(&mut elements, if all_xor { Join::Xor } else { Join::And });
            notes.push(format!(
                "{} sink places {ids:?}: output '__output' after a silent {}-join '__end'",
                many.len(),
                if all_xor {
                    "XOR (WoPeD XOR-split alternatives)"
                } else {
                    "AND"
                }
            ));
        }
    }
    let multi_sink: HashSet<String> = if output_id.is_none() {
        sinks.iter().map(|p| p.id.clone()).collect()
    } else {
        HashSet::new()
    };

    for p in &c.places {
        let kind = if Some(&p.id) == input_id.as_ref() {
            Kind::Input
        } else if Some(&p.id) == output_id.as_ref() {
            Kind::Output
        } else {
            Kind::Condition
        };
        let mut flows: Vec<RawFlow> = consumers
            .get(p.id.as_str())
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .map(|t| RawFlow::to(*t))
            .collect();
        if multi_sink.contains(&p.id) {
            flows.push(RawFlow::to("__end"));
        }
        elements.push(RawElement {
            id: p.id.clone(),
            name: p.name.clone(),
            kind,
            flows,
        });
    }
    for t in &c.transitions {
        let ins = pre.get(&t.id).map_or(0, Vec::len);
        let mut rt = RawTask::new(if ins > 1 { Join::And } else { Join::Xor }, Split::And);
        rt.silent = t.silent || t.label.as_deref().is_none_or(str::is_empty);
        rt.label = t.label.clone();
        let flows = post
            .get(&t.id)
            .map(|v| v.iter().map(RawFlow::to).collect())
            .unwrap_or_default();
        elements.push(RawElement {
            id: t.id.clone(),
            name: t.name.clone(),
            kind: Kind::Task(rt),
            flows,
        });
    }
    if c.woped {
        notes.push(
            "WoPeD operators mapped transition by transition (X_op_N), centre places as conditions"
                .into(),
        );
    }
    notes.extend(unexecuted(net));
    let net = RawNet {
        id: net_id,
        elements,
        variables: Vec::new(),
    };
    Ok(RawSpec {
        name,
        format: SourceFormat::Pnml {
            dialect: dialect.into(),
        },
        nets: vec![net],
        notes,
    })
}

/// A synthesised silent end `__end` (with `join` over the places that flow into it) into a
/// synthesised output condition `__output`.
fn push_end(elements: &mut Vec<RawElement>, join: Join) {
    let mut t = RawTask::new(join, Split::And);
    t.silent = true;
    elements.push(RawElement {
        id: "__end".into(),
        name: None,
        kind: Kind::Task(t),
        flows: vec![RawFlow::to("__output")],
    });
    elements.push(RawElement {
        id: "__output".into(),
        name: Some("output".into()),
        kind: Kind::Output,
        flows: Vec::new(),
    });
}

/// pm4py's `<finalmarkings><marking><place idref><text>n</text></place>...`: the places with
/// a token.
fn read_final_marking(net: Node<'_, '_>) -> Result<Option<Vec<String>>, ImportError> {
    let Some(fm) = child(net, "finalmarkings") else {
        return Ok(None);
    };
    let Some(m) = child(fm, "marking") else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for p in children(m, "place") {
        let id = req_attr(p, "idref", "final marking place")?.to_string();
        let n = match child_text(p, "text") {
            Some(t) => parse_tokens(&t, &id)?,
            None => 0,
        };
        if n > 1 {
            return Err(ImportError::NotSafe {
                place: id,
                tokens: n,
            });
        }
        if n == 1 {
            out.push(id);
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

/// Tool-specific PNML content that knhk does not execute (WoPeD's simulation times and
/// probabilities, triggers and resources), as notes naming the elements that carry it.
fn unexecuted(net: Node<'_, '_>) -> Vec<String> {
    let mut found: std::collections::BTreeMap<&'static str, Vec<String>> = Default::default();
    for ts in net
        .descendants()
        .filter(|n| n.is_element() && n.tag_name().name() == "toolspecific")
    {
        let owner = ts
            .parent_element()
            .and_then(|p| attr(p, "id"))
            .unwrap_or("net")
            .to_string();
        for c in ts.children().filter(|c| c.is_element()) {
            let what = match c.tag_name().name() {
                "probability" => {
                    "<probability> (a WoPeD simulation branch probability): not used, the client \
                     chooses"
                }
                "time" | "timeUnit" => {
                    "<time> (a WoPeD simulation service time): not used, no timer is armed"
                }
                "trigger" => "<trigger> (a WoPeD trigger: resource, message or time): not executed",
                "transitionResource" => {
                    "<transitionResource> (a WoPeD role and group): knhk assigns no one"
                }
                _ => continue,
            };
            let ids = found.entry(what).or_default();
            if !ids.contains(&owner) {
                ids.push(owner.clone());
            }
        }
    }
    found
        .into_iter()
        .map(|(what, ids)| format!("not executed: {what}: {ids:?}"))
        .collect()
}
