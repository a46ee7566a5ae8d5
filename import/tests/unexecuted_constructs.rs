//! Nothing ignored silently (issue 14 item 4): every construct of a public YAWL specification
//! that knhk does not execute is named in the model's notes (what `knhk check` prints and
//! `RegisterWorkflow` returns), with the element that carries it.
//!
//! The expected list is derived from the XML text here, by a plain scan of each `<task>` and
//! each non-net `<decomposition>` block for the constructs' tags, independently of the
//! importer's reader.

use std::path::PathBuf;

use knhk_import::{import_file, Options};

fn corpus_dir(sub: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpus")
        .join(sub)
}

/// `(id, block text)` of every element `<tag ...id="..." ...> ... </tag>` in `text` (the
/// elements scanned do not nest in themselves).
fn blocks<'a>(text: &'a str, tag: &str) -> Vec<(String, &'a str)> {
    let open = format!("<{tag} ");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(&open) {
        let from = &rest[i..];
        let head_end = from.find('>').unwrap_or(from.len());
        let head = &from[..head_end];
        let end = if head.ends_with('/') {
            head_end
        } else {
            from.find(&close).map_or(from.len(), |e| e + close.len())
        };
        let id = head
            .split("id=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("")
            .to_string();
        out.push((id, &from[..end]));
        rest = &from[end.max(1)..];
    }
    out
}

/// (tag in the XML, words the note about it must contain).
const TASK_TAGS: &[(&str, &str)] = &[
    ("<resourcing", "<resourcing>"),
    ("<startingMappings", "data mappings"),
    ("<completedMappings", "data mappings"),
    ("<customForm", "<customForm>"),
    ("<configuration", "<configuration>"),
];

const DECOMPOSITION_TAGS: &[(&str, &str)] = &[
    ("<codelet", "<codelet>"),
    ("<inputParam", "task parameters"),
    ("<outputParam", "task parameters"),
];

#[test]
fn every_unexecuted_construct_of_the_corpus_is_noted() {
    let opts = Options {
        external_predicates: true,
        ..Options::default()
    };
    let mut checked = 0;
    let mut constructs = 0;
    let mut refused = Vec::new();
    // (file, task, notes) of every executed timer: each must be named in the notes.
    let mut timers: Vec<(String, String, Vec<String>)> = Vec::new();
    for sub in ["yawl", "yawl-more"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir(sub))
            .expect("corpus")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yawl"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).expect("read");
            let model = match import_file(&f, &opts) {
                Ok(m) => m,
                Err(e) => {
                    refused.push(format!("{}: {e}", f.display()));
                    continue;
                }
            };
            checked += 1;
            let noted = |words: &str, id: &str| {
                model
                    .notes
                    .iter()
                    .any(|n| n.contains(words) && n.contains(&format!("{id:?}")))
            };
            let mut expect = |words: &str, id: &str, what: &str| {
                constructs += 1;
                assert!(
                    noted(words, id),
                    "{}: {what} of '{id}' is not noted ({words}); notes: {:#?}",
                    f.display(),
                    model.notes
                );
            };
            for (id, block) in blocks(&text, "task") {
                for (tag, words) in TASK_TAGS {
                    if block.contains(tag) {
                        expect(words, &id, tag);
                    }
                }
                // A timer is executed, and said so; a late-bound one (<netparam>) is not.
                if block.contains("<netparam") {
                    expect("<timer><netparam>", &id, "<timer><netparam>");
                } else if block.contains("<timer") {
                    timers.push((f.display().to_string(), id.clone(), model.notes.clone()));
                }
            }
            for (id, block) in blocks(&text, "decomposition") {
                if block.contains("NetFactsType") {
                    continue;
                }
                for (tag, words) in DECOMPOSITION_TAGS {
                    if block.contains(tag) {
                        expect(words, &id, tag);
                    }
                }
                if block.contains("<yawlService") {
                    let words = if block.to_ascii_lowercase().contains("worklet") {
                        "worklet"
                    } else {
                        "web-service gateway"
                    };
                    expect(words, &id, "<yawlService>");
                }
            }
        }
    }
    for (file, id, notes) in &timers {
        let words = format!("timer of task '{id}'");
        assert!(
            notes.iter().any(|n| n.contains(&words)),
            "{file}: the timer of '{id}' is not noted; notes: {notes:#?}"
        );
    }
    assert!(timers.len() >= 5, "the corpus's timer tasks: {timers:?}");
    constructs += timers.len();
    eprintln!(
        "{checked} specifications checked, {constructs} constructs noted; not imported: \
         {refused:#?}"
    );
    assert!(checked >= 20, "most of the corpus imports: {refused:#?}");
    assert!(
        constructs >= 100,
        "the corpus has resourcing, mappings, timers..."
    );
}

#[test]
fn an_unknown_extension_is_noted_not_dropped() {
    let spec = r#"<specificationSet xmlns="http://www.yawlfoundation.org/yawlschema" version="4.0">
  <specification uri="ext">
    <decomposition id="Net" isRootNet="true" xsi:type="NetFactsType" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
      <processControlElements>
        <inputCondition id="i"><flowsInto><nextElementRef id="A"/></flowsInto></inputCondition>
        <task id="A">
          <flowsInto><nextElementRef id="o"/></flowsInto>
          <join code="xor"/><split code="and"/>
          <escalation level="2"/>
        </task>
        <outputCondition id="o"/>
      </processControlElements>
    </decomposition>
  </specification>
</specificationSet>"#;
    let m = knhk_import::import_str(spec, &Options::default()).expect("imports");
    assert!(
        m.notes
            .iter()
            .any(|n| n.contains("unknown element <escalation>") && n.contains("\"A\"")),
        "{:#?}",
        m.notes
    );
}

#[test]
fn woped_simulation_attributes_are_noted() {
    let mut constructs = 0;
    for f in ["woped-XorSplitJoin.pnml", "woped-AndSplitJoin.pnml"] {
        let path = corpus_dir("pnml").join(f);
        let text = std::fs::read_to_string(&path).expect("read");
        let model = import_file(&path, &Options::default()).expect("imports");
        for tag in ["arc", "transition", "place"] {
            for (id, block) in blocks(&text, tag) {
                for (x, words) in [("<probability>", "<probability>"), ("<time>", "<time>")] {
                    if block.contains(x) {
                        constructs += 1;
                        assert!(
                            model
                                .notes
                                .iter()
                                .any(|n| n.contains(words) && n.contains(&format!("{id:?}"))),
                            "{f}: {x} of '{id}' not noted: {:#?}",
                            model.notes
                        );
                    }
                }
            }
        }
    }
    assert!(
        constructs > 0,
        "the WoPeD files carry simulation attributes"
    );
}
