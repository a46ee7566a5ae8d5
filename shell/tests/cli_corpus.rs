//! Every public corpus file gets its expected verdict (corpus/SOURCES.md), and the replay of
//! the running example fits while an altered log does not.

use std::path::{Path, PathBuf};

use knhk_import::check::FindingKind;
use knhk_import::{import_file, verify, ImportError, Options};
use knhk_shell::cli;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus")
}

fn run_check(p: &Path) -> (i32, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::check(&[p.to_path_buf()], &mut out, &mut err);
    (code, String::from_utf8_lossy(&out).into_owned())
}

#[test]
fn every_corpus_file_gets_its_verdict() {
    let expected: &[(&str, bool)] = &[
        ("yawl/WPC1Sequence.yawl", true),
        ("yawl/WPC3Synchronization.yawl", true),
        ("yawl/WPC4ExclusiveChoice.yawl", true),
        ("yawl/WPC7StructuredSynchronisingMerge.yawl", true),
        ("yawl/WPC8MultiMerge.yawl", false),
        ("yawl/WPC10AbitraryCycles.yawl", true),
        ("yawl/WPC16DeferredChoice.yawl", true),
        ("pnml/running-example.pnml", true),
        ("pnml/woped-AndSplitJoin.pnml", true),
        ("pnml/woped-XorSplitJoin.pnml", true),
        ("pnml/mcc-Kanban-PT-02000.pnml", false),
    ];
    let mut seen = 0;
    for dir in ["yawl", "pnml"] {
        for e in std::fs::read_dir(corpus().join(dir)).expect("corpus directory") {
            let p = e.expect("dir entry").path();
            let rel = format!(
                "{dir}/{}",
                p.file_name().and_then(|n| n.to_str()).unwrap_or("")
            );
            let Some(&(_, ok)) = expected.iter().find(|(f, _)| *f == rel) else {
                panic!("corpus file {rel} has no expected verdict in this test");
            };
            let (code, out) = run_check(&p);
            println!("{out}");
            assert_eq!(code, if ok { 0 } else { 1 }, "{rel}:\n{out}");
            assert!(
                out.contains(if ok { ": accepted" } else { ": refused" }),
                "{out}"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, expected.len());
}

#[test]
fn multi_merge_is_refused_with_that_reason() {
    let m = import_file(
        &corpus().join("yawl/WPC8MultiMerge.yawl"),
        &Options::default(),
    )
    .expect("imports");
    let r = verify(&m, &Options::default());
    assert!(!r.accepted());
    assert!(r.has(FindingKind::MultiMerge), "{:#?}", r.findings);
    let (_, out) = run_check(&corpus().join("yawl/WPC8MultiMerge.yawl"));
    assert!(out.contains("multi-merge"), "{out}");
}

#[test]
fn kanban_is_refused_as_not_safe() {
    let e = import_file(
        &corpus().join("pnml/mcc-Kanban-PT-02000.pnml"),
        &Options::default(),
    )
    .expect_err("refused");
    assert!(
        matches!(e, ImportError::NotSafe { tokens: 2000, .. }),
        "{e}"
    );
    let (_, out) = run_check(&corpus().join("pnml/mcc-Kanban-PT-02000.pnml"));
    assert!(out.contains("2000 tokens"), "{out}");
}

#[test]
fn check_exit_codes() {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let all = [
        corpus().join("yawl/WPC1Sequence.yawl"),
        corpus().join("pnml/running-example.pnml"),
    ];
    assert_eq!(cli::check(&all, &mut out, &mut err), 0);
    let mixed = [
        corpus().join("yawl/WPC1Sequence.yawl"),
        corpus().join("yawl/WPC8MultiMerge.yawl"),
    ];
    assert_eq!(cli::check(&mixed, &mut out, &mut err), 1);
    let missing = [corpus().join("yawl/does-not-exist.yawl")];
    assert_eq!(cli::check(&missing, &mut out, &mut err), 2);
}

fn replay(model: &Path, log: &Path) -> (i32, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::replay(model, log, &mut out, &mut err);
    let mut s = String::from_utf8_lossy(&out).into_owned();
    s.push_str(&String::from_utf8_lossy(&err));
    (code, s)
}

#[test]
fn running_example_log_fits_its_net() {
    let (code, out) = replay(
        &corpus().join("pnml/running-example.pnml"),
        &corpus().join("xes/running-example.xes"),
    );
    println!("{out}");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("fitting traces: 6/6 (100.0%)"), "{out}");
}

fn temp(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("knhk-import-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write temp file");
    p
}

#[test]
fn altered_log_does_not_fit() {
    let xes = std::fs::read_to_string(corpus().join("xes/running-example.xes")).expect("log");
    // Break the order of the first trace: its first event ("register request") moves to the
    // end by renaming the first two events' activities in swapped order.
    let first = xes.find("<event>").expect("an event");
    let second = first + 1 + xes[first + 1..].find("<event>").expect("a second event");
    let end2 = second + xes[second..].find("</event>").expect("end") + "</event>".len();
    let (a, b) = (&xes[first..second], &xes[second..end2]);
    let altered = format!(
        "{}{}\n    {}{}",
        &xes[..first],
        b.trim_end(),
        a.trim_end(),
        &xes[end2..]
    );
    let p = temp("altered.xes", altered.as_bytes());
    let (code, out) = replay(&corpus().join("pnml/running-example.pnml"), &p);
    println!("{out}");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not fit: event 1"), "{out}");
    assert!(out.contains("marking: {n1}"), "{out}");
    assert!(out.contains("fitting traces: 5/6"), "{out}");

    // The same log gzip-compressed gives the same result.
    use std::io::Write as _;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(altered.as_bytes()).expect("gzip");
    let p = temp("altered.xes.gz", &gz.finish().expect("gzip"));
    let (code, out2) = replay(&corpus().join("pnml/running-example.pnml"), &p);
    assert_eq!(code, 1);
    assert!(out2.contains("fitting traces: 5/6"), "{out2}");
}

#[test]
fn replay_of_unreadable_input_exits_2() {
    let p = temp(
        "trunc.xes",
        b"<log><trace><event><string key=\"concept:name\" value=\"a\"/>",
    );
    let (code, out) = replay(&corpus().join("pnml/running-example.pnml"), &p);
    assert_eq!(code, 2, "{out}");
    let (code, _) = replay(
        &corpus().join("pnml/nope.pnml"),
        &corpus().join("xes/running-example.xes"),
    );
    assert_eq!(code, 2);
}

#[test]
fn compile_prints_the_net_and_exits_by_verdict() {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::compile(
        &corpus().join("yawl/WPC4ExclusiveChoice.yawl"),
        &mut out,
        &mut err,
    );
    let s = String::from_utf8_lossy(&out);
    assert_eq!(code, 0, "{s}");
    assert!(s.contains("split=xor"), "{s}");
    assert!(s.contains("[guard r0 == 0]  <- /Net/c=0"), "{s}");
    assert!(s.contains("default"), "{s}");
    assert!(s.contains("verdict: accepted"), "{s}");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    assert_eq!(
        cli::compile(
            &corpus().join("yawl/WPC8MultiMerge.yawl"),
            &mut out,
            &mut err
        ),
        1
    );
    assert_eq!(
        cli::compile(
            &corpus().join("pnml/mcc-Kanban-PT-02000.pnml"),
            &mut out,
            &mut err
        ),
        1
    );
    assert_eq!(
        cli::compile(&corpus().join("nope.yawl"), &mut out, &mut err),
        2
    );
}
