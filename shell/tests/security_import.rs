//! Model import under abuse (issue 12, item 6): import is linear in the model's size (a
//! multi-megabyte model is refused in about a second, where it took minutes), nesting and DTDs
//! (entity expansion) are refused before anything walks the document, and a registration
//! whose client goes away stops importing instead of burning CPU for nobody.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use knhk_shell::proto;
use tonic::Code;

mod support;
use support::{scratch, spawn};

/// A PNML sequence of `n` transitions (`n + 1` places): far past the kernel's 64 conditions,
/// so refused, but only after it has been read, flattened and checked.
fn long_sequence(n: usize) -> String {
    let mut s = String::from(
        r#"<?xml version="1.0"?><pnml><net id="long" type="http://www.pnml.org/version-2009/grammar/ptnet"><page id="p">"#,
    );
    for i in 0..=n {
        let marking = if i == 0 {
            "<initialMarking><text>1</text></initialMarking>"
        } else {
            ""
        };
        let _ = write!(
            s,
            r#"<place id="p{i}"><name><text>place {i}</text></name>{marking}</place>"#
        );
    }
    for i in 0..n {
        let _ = write!(
            s,
            r#"<transition id="t{i}"><name><text>task {i}</text></name></transition>"#
        );
    }
    for i in 0..n {
        let j = i + 1;
        let _ = write!(
            s,
            r#"<arc id="a{i}" source="p{i}" target="t{i}"/><arc id="b{i}" source="t{i}" target="p{j}"/>"#
        );
    }
    s.push_str("</page></net></pnml>");
    s
}

/// Eight parallel branches of three tasks: 7^8 reachable states, so the soundness exploration
/// runs to its cap (about 2 s in a debug build).
fn many_states() -> String {
    let mut places = String::from(
        r#"<place id="in"><initialMarking><text>1</text></initialMarking></place><place id="out"/>"#,
    );
    let mut transitions = String::from(
        r#"<transition id="split"><name><text>split</text></name></transition><transition id="join"><name><text>join</text></name></transition>"#,
    );
    let mut arcs = String::from(
        r#"<arc id="a_in" source="in" target="split"/><arc id="a_out" source="join" target="out"/>"#,
    );
    for b in 0..8 {
        for k in 0..=3 {
            let _ = write!(places, r#"<place id="p{b}_{k}"/>"#);
        }
        let _ = write!(arcs, r#"<arc id="s{b}" source="split" target="p{b}_0"/>"#);
        for k in 0..3 {
            let next = k + 1;
            let _ = write!(
                transitions,
                r#"<transition id="t{b}_{k}"><name><text>t{b}_{k}</text></name></transition>"#
            );
            let _ = write!(
                arcs,
                r#"<arc id="x{b}_{k}" source="p{b}_{k}" target="t{b}_{k}"/><arc id="y{b}_{k}" source="t{b}_{k}" target="p{b}_{next}"/>"#
            );
        }
        let _ = write!(arcs, r#"<arc id="j{b}" source="p{b}_3" target="join"/>"#);
    }
    format!(
        r#"<?xml version="1.0"?><pnml><net id="states" type="http://www.pnml.org/version-2009/grammar/ptnet"><page id="pg">{places}{transitions}{arcs}</page></net></pnml>"#
    )
}

fn register(model: String) -> proto::RegisterWorkflowRequest {
    proto::RegisterWorkflowRequest {
        model: model.into_bytes(),
        format: proto::ModelFormat::Pnml as i32,
        workflow_id: String::new(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_deep_and_entity_models_are_refused_quickly_with_a_reason() {
    let dir = scratch("import-abuse");
    let mut p = spawn(&dir.join("data"), &dir.join("serve.log"), &[], None);
    let mut c = p.ready().await.expect("server");

    // 4.6 MB: quadratic import took minutes on this size; linear takes about a second even
    // in a debug build. The bound leaves room for a loaded CI machine.
    let big = long_sequence(20_000);
    assert!(big.len() > 4_000_000);
    let t0 = Instant::now();
    let e = c
        .register_workflow(register(big))
        .await
        .expect_err("64 conditions at most");
    let took = t0.elapsed();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(
        e.message().contains("conditions"),
        "the refusal names the limit: {}",
        e.message()
    );
    assert!(took < Duration::from_secs(20), "import took {took:?}");

    let deep = format!(
        r#"<?xml version="1.0"?><pnml><net id="n" type="ptnet"><page id="p">{}{}</page></net></pnml>"#,
        "<x>".repeat(100_000),
        "</x>".repeat(100_000)
    );
    let e = c.register_workflow(register(deep)).await.expect_err("deep");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(
        e.message().contains("nested deeper than"),
        "{}",
        e.message()
    );

    let lol = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><pnml><net id="n">&lol3;</net></pnml>"#;
    let e = c
        .register_workflow(register(lol.to_string()))
        .await
        .expect_err("entities");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("DTD"), "{}", e.message());
    p.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_whose_client_went_away_stops_importing() {
    let dir = scratch("import-cancel");
    let mut p = spawn(&dir.join("data"), &dir.join("serve.log"), &[], None);
    let mut c = p.ready().await.expect("server");
    // Uncancelled, the import of this model explores 200,000 states (the cap) and is
    // accepted with a warning: the baseline that shows the model is slow to import.
    let t0 = Instant::now();
    c.register_workflow(register(many_states()))
        .await
        .expect("accepted after a full exploration");
    let full = t0.elapsed();
    assert!(
        !p.log_text().contains("model import stopped"),
        "a completed import is not reported as stopped"
    );

    // The client gives up after a tenth of that: the server stops within a few thousand
    // states and says so.
    let patience = (full / 10).max(Duration::from_millis(20));
    let gave_up = tokio::time::timeout(patience, c.register_workflow(register(many_states())))
        .await
        .is_err();
    assert!(gave_up, "the registration answered within {patience:?}");
    let t1 = Instant::now();
    while !p
        .log_text()
        .contains("model import stopped: the caller went away")
    {
        assert!(
            t1.elapsed() < full,
            "the import was not stopped after its client went away (a full import takes \
             {full:?}): {}",
            p.log_text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    p.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_calls_are_logged_rate_limited_and_counted() {
    let dir = scratch("refusal-log");
    let mut p = spawn(&dir.join("data"), &dir.join("serve.log"), &[], None);
    let mut c = p.ready().await.expect("server");
    let refused = |log: &str| log.lines().filter(|l| l.contains("call refused")).count();
    let e = c
        .get_workflow(proto::GetWorkflowRequest {
            workflow_id: "no-such\nforged line".into(),
            version: 0,
        })
        .await
        .expect_err("unknown");
    assert_eq!(e.code(), Code::NotFound);
    let log = p.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("call refused"))
        .unwrap_or_else(|| panic!("a refused call is logged: {log}"));
    assert!(
        line.contains("GetWorkflow") && line.contains("NOT_FOUND"),
        "{line}"
    );
    assert!(
        !log.contains("forged line\n"),
        "a newline forged a log line"
    );

    // A flood: at most 20 lines a second, and the count of the rest comes with a later line.
    let t0 = Instant::now();
    for _ in 0..300 {
        let _ = c
            .get_case(proto::GetCaseRequest {
                case_id: 1 << 40,
                ..Default::default()
            })
            .await;
    }
    let flood_secs = t0.elapsed().as_secs() + 1;
    let logged = refused(&p.log_text()) - 1;
    assert!(
        logged as u64 <= 20 * (flood_secs + 1),
        "{logged} lines for 300 refusals in {flood_secs} s"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let _ = c
        .get_case(proto::GetCaseRequest {
            case_id: 1 << 40,
            ..Default::default()
        })
        .await;
    let log = p.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("call refused") && !l.contains("suppressed=0")),
        "the suppressed refusals are counted: {log}"
    );
    p.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_whose_soundness_is_not_decided_says_so_and_can_be_refused() {
    let dir = scratch("undecided");
    let mut p = spawn(&dir.join("data"), &dir.join("serve.log"), &[], None);
    let mut c = p.ready().await.expect("server");
    let r = c
        .register_workflow(register(many_states()))
        .await
        .expect("accepted with a warning")
        .into_inner();
    assert!(!r.soundness_decided);
    assert!(
        r.warnings.iter().any(|w| w.contains("state cap")),
        "{:?}",
        r.warnings
    );
    let e = c
        .register_workflow(proto::RegisterWorkflowRequest {
            refuse_undecided: true,
            ..register(many_states())
        })
        .await
        .expect_err("refused on request");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("soundness must be decided"),
        "{}",
        e.message()
    );
    // A small model is decided.
    let r = c
        .register_workflow(proto::RegisterWorkflowRequest {
            model: support::corpus("yawl/WPC1Sequence.yawl"),
            format: proto::ModelFormat::Yawl as i32,
            refuse_undecided: true,
            ..Default::default()
        })
        .await
        .expect("decided")
        .into_inner();
    assert!(r.soundness_decided && r.warnings.is_empty());
    p.kill();
    let _ = std::fs::remove_dir_all(&dir);
}
