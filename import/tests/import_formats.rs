//! Format features (YAWL versions, sub-nets, cancellation, variables, MI, PNML dialects, JSON),
//! predicate errors, malformed input, and a brief fuzz of the parsers.

use knhk_import::check::FindingKind;
use knhk_import::ir::{FlowGuard, Join, Split};
use knhk_import::{import_bytes, import_file, import_str, lower, verify, ImportError, Options};
use knhk_kernel::{Case, CaseState};
use proptest::prelude::*;

const BETA: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<specificationSet xmlns="http://www.citi.qut.edu.au/yawl" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" version="Beta 7.1">
  <specification uri="beta">
    <rootNet id="top">
      <localVariable name="amount" type="xs:int"><initialValue>5</initialValue></localVariable>
      <processControlElements>
        <inputCondition id="i"><flowsInto><nextElementRef id="A"/></flowsInto></inputCondition>
        <task id="A">
          <flowsInto><nextElementRef id="B"/><predicate ordering="0">/top/amount &gt; 10</predicate></flowsInto>
          <flowsInto><nextElementRef id="o"/><isDefaultFlow/></flowsInto>
          <join code="xor"/><split code="xor"/>
        </task>
        <task id="B"><flowsInto><nextElementRef id="o"/></flowsInto><join code="xor"/><split code="and"/></task>
        <outputCondition id="o"/>
      </processControlElements>
    </rootNet>
  </specification>
</specificationSet>"#;

fn yawl4(body: &str, extra: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<specificationSet xmlns="http://www.yawlfoundation.org/yawlschema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" version="4.0">
  <specification uri="t">
    <decomposition id="Net" isRootNet="true" xsi:type="NetFactsType">
      <localVariable><index>0</index><name>x</name><type>int</type><initialValue>3</initialValue></localVariable>
      <localVariable><index>1</index><name>s</name><type>string</type><initialValue>yes</initialValue></localVariable>
      <inputParam><index>0</index><name>ok</name><type>boolean</type></inputParam>
      <processControlElements>
        <inputCondition id="in"><flowsInto><nextElementRef id="A"/></flowsInto></inputCondition>
        {body}
        <outputCondition id="out"/>
      </processControlElements>
    </decomposition>
    {extra}
  </specification>
</specificationSet>"#
    )
}

fn accepted(src: &str) -> knhk_import::Model {
    let m = import_str(src, &Options::default()).unwrap_or_else(|e| panic!("import: {e}"));
    let r = verify(&m, &Options::default());
    assert!(r.accepted(), "{:#?}", r.findings);
    m
}

#[test]
fn beta_root_net_and_predicates() {
    let m = accepted(BETA);
    assert!(m.format.to_string().contains("Beta"), "{}", m.format);
    let a = &m.tasks[0];
    assert_eq!(a.split, Split::Xor);
    assert!(matches!(a.outputs[0].guard, FlowGuard::Compiled(_)));
    assert!(a.outputs[1].default);
    let v = &m.variables[0];
    assert_eq!((v.register, v.initial_value), (Some(0), 5));
    // Through the kernel: amount = 5 takes the default flow (o), amount = 11 takes B.
    let c = lower(&m).expect("lowers");
    let mut case = Case::new(&c.net).expect("case");
    case.regs_mut().copy_from_slice(&m.initial_registers());
    c.net.fire(&mut case, 0).expect("fire A");
    assert_eq!(c.net.state(&case), CaseState::Complete);
    let mut case = Case::new(&c.net).expect("case");
    case.regs_mut()[0] = 11;
    c.net.fire(&mut case, 0).expect("fire A");
    assert_eq!(c.net.enabled(&case), 0b10);
}

#[test]
fn yawl4_ordering_strings_booleans_and_implicit_conditions() {
    let body = r#"
        <task id="A">
          <flowsInto><nextElementRef id="C"/><isDefaultFlow/></flowsInto>
          <flowsInto><nextElementRef id="B"/><predicate ordering="1">/Net/s = 'no' or /Net/ok = 'true'</predicate></flowsInto>
          <flowsInto><nextElementRef id="D"/><predicate ordering="0">number(/Net/x/text()) &gt;= 3</predicate></flowsInto>
          <join code="xor"/><split code="xor"/>
        </task>
        <task id="B"><flowsInto><nextElementRef id="E"/></flowsInto><join code="xor"/><split code="and"/></task>
        <task id="C"><flowsInto><nextElementRef id="E"/></flowsInto><join code="xor"/><split code="and"/></task>
        <task id="D"><flowsInto><nextElementRef id="E"/></flowsInto><join code="xor"/><split code="and"/></task>
        <task id="E"><flowsInto><nextElementRef id="out"/></flowsInto><join code="xor"/><split code="and"/></task>"#;
    let m = accepted(&yawl4(body, ""));
    let a = &m.tasks[0];
    // Kernel order: ordering 0 (D), ordering 1 (B), default (C) last.
    let order: Vec<&str> = a
        .outputs
        .iter()
        .map(|f| f.target_element.as_str())
        .collect();
    assert_eq!(order, ["D", "B", "C"]);
    assert!(m.conditions.iter().any(|c| c.id == "A->D" && c.implicit));
    let yes = m.intern_id("yes").expect("interned");
    let no = m.intern_id("no").expect("interned");
    // Registers are allocated in order of first use by a predicate.
    let reg = |name: &str| {
        let v = m
            .variables
            .iter()
            .find(|v| v.name == name)
            .expect("variable");
        usize::from(v.register.expect("register"))
    };
    let (x, s, ok) = (reg("x"), reg("s"), reg("ok"));
    let regs = m.initial_registers();
    assert_eq!((regs[x], regs[s], regs[ok]), (3, yes, 0));
    assert!(matches!(a.outputs[1].guard, FlowGuard::Compiled(_)));
    // B's guard, run by the kernel: with x < 3 (D's guard false), firing A marks the
    // condition into B exactly when `s = 'no' or ok`.
    let c = lower(&m).expect("lowers");
    let to_b = 1u64 << a.outputs[1].target;
    let takes_b = |sv: i64, okv: i64| {
        let mut case = Case::new(&c.net).expect("case");
        let r = case.regs_mut();
        r.copy_from_slice(&regs);
        r[x] = 0;
        r[s] = sv;
        r[ok] = okv;
        c.net.fire(&mut case, 0).expect("fire A");
        case.marking() & to_b != 0
    };
    assert!(!takes_b(yes, 0));
    assert!(takes_b(no, 0));
    assert!(takes_b(yes, 1));
}

#[test]
fn cancellation_sets_and_removes_tokens_from_flow() {
    let body = r#"
        <task id="A">
          <flowsInto><nextElementRef id="B"/></flowsInto>
          <flowsInto><nextElementRef id="C"/></flowsInto>
          <join code="xor"/><split code="and"/>
        </task>
        <task id="B"><flowsInto><nextElementRef id="D"/></flowsInto><join code="xor"/><split code="and"/></task>
        <task id="C"><flowsInto><nextElementRef id="out"/></flowsInto><join code="xor"/><split code="and"/>
          <removesTokens id="B"/><removesTokens id="D"/>
          <removesTokensFromFlow><flowSource id="A"/><flowDestination id="B"/></removesTokensFromFlow>
          <removesTokensFromFlow><flowSource id="B"/><flowDestination id="D"/></removesTokensFromFlow>
        </task>
        <task id="D"><flowsInto><nextElementRef id="out"/></flowsInto><join code="xor"/><split code="and"/></task>"#;
    let m = import_str(&yawl4(body, ""), &Options::default()).expect("imports");
    let c = m.tasks.iter().find(|t| t.id == "C").expect("C");
    let cancelled: Vec<&str> = c
        .cancel_conditions
        .iter()
        .map(|&i| m.condition_id(i))
        .collect();
    assert_eq!(cancelled, ["A->B", "B->D"]);
    let tasks: Vec<&str> = c.cancel_tasks.iter().map(|&i| m.task_id(i)).collect();
    assert_eq!(tasks, ["B", "D"]);
    let r = verify(&m, &Options::default());
    assert!(
        r.patterns.contains(&"WCP-19 cancel task"),
        "{:?}",
        r.patterns
    );
    assert!(
        r.patterns.contains(&"WCP-25 cancel region"),
        "{:?}",
        r.patterns
    );
}

/// A model file written for these tests (import/tests/models), imported, verified and lowered.
fn model_file(name: &str) -> (knhk_import::Model, Box<knhk_kernel::Net>) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/models")
        .join(name);
    let m = import_file(&path, &Options::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    let r = verify(&m, &Options::default());
    assert!(r.accepted(), "{name}: {:#?}", r.findings);
    assert!(r.exhaustive, "{name}: soundness decided");
    assert!(
        r.patterns
            .contains(&"WCP-37/38 general synchronizing merge"),
        "{:?}",
        r.patterns
    );
    assert!(
        !r.patterns.iter().any(|p| p.starts_with("WCP-7 ")),
        "{:?}",
        r.patterns
    );
    let note = r
        .findings
        .iter()
        .find(|f| f.kind == FindingKind::GeneralOrJoin)
        .expect("a note on the general OR-join");
    assert_eq!(note.elements, ["D"]);
    let net = lower(&m).expect("lowers").net;
    (m, net)
}

fn task_of(m: &knhk_import::Model, id: &str) -> u32 {
    m.tasks.iter().position(|t| t.id == id).expect("task") as u32
}

#[test]
fn wcp37_local_synchronizing_merge_model() {
    let (m, net) = model_file("WCP37LocalSynchronizingMerge.yawl");
    let [a, b, f, c, d] = ["A", "B", "F", "C", "D"].map(|id| task_of(&m, id));
    assert_eq!(net.general_or_joins(), 1 << d);
    let mut k = Case::new(&net).unwrap();
    *k.regs_mut() = m.initial_registers(); // left = right = 1, direct = 0
    net.fire(&mut k, a).unwrap();
    net.fire(&mut k, c).unwrap();
    assert_eq!(net.fire(&mut k, d), Err(knhk_kernel::Error::NotEnabled)); // B pending
    net.fire(&mut k, b).unwrap(); // to F, not straight to D
    assert_eq!(net.fire(&mut k, d), Err(knhk_kernel::Error::NotEnabled)); // F pending
    net.start(&mut k, f).unwrap();
    assert_eq!(net.enabled(&k) & (1 << d), 0, "busy F still counts");
    net.complete(&mut k, f).unwrap();
    net.fire(&mut k, d).unwrap();
    assert_eq!(net.state(&k), CaseState::Complete);

    // only the right branch: D does not wait for the left one
    let mut k = Case::new(&net).unwrap();
    *k.regs_mut() = m.initial_registers();
    k.regs_mut()[0] = 0; // left = 0
    net.fire(&mut k, a).unwrap();
    net.fire(&mut k, c).unwrap();
    net.fire(&mut k, d).unwrap();
    assert_eq!(net.state(&k), CaseState::Complete);
}

#[test]
fn wcp38_general_synchronizing_merge_model() {
    let (m, net) = model_file("WCP38GeneralSynchronizingMerge.yawl");
    let [a, b, l, c, z, d] = ["A", "B", "L", "C", "Z", "D"].map(|id| task_of(&m, id));
    let mut k = Case::new(&net).unwrap();
    *k.regs_mut() = m.initial_registers(); // again = 1
    net.fire(&mut k, a).unwrap();
    net.fire(&mut k, c).unwrap();
    for _ in 0..3 {
        assert_eq!(net.fire(&mut k, d), Err(knhk_kernel::Error::NotEnabled));
        net.fire(&mut k, b).unwrap(); // to L
        assert_eq!(net.fire(&mut k, d), Err(knhk_kernel::Error::NotEnabled));
        net.fire(&mut k, l).unwrap();
    }
    k.regs_mut()[0] = 0;
    net.fire(&mut k, b).unwrap(); // to D
    net.fire(&mut k, d).unwrap();
    assert_eq!(net.state(&k), CaseState::Complete);

    // Z cancels the loop while B is busy: D fires on Z's token alone
    let mut k = Case::new(&net).unwrap();
    *k.regs_mut() = m.initial_registers();
    net.fire(&mut k, a).unwrap();
    net.start(&mut k, b).unwrap();
    assert_eq!(net.enabled(&k) & (1 << d), 0);
    net.fire(&mut k, z).unwrap();
    assert_eq!(k.busy(), 0);
    assert_eq!(net.enabled(&k), 1 << d);
    net.fire(&mut k, d).unwrap();
    assert_eq!(net.state(&k), CaseState::Complete);
}

/// Past the kernel's caps a non-local OR-join is refused, naming the cap.
#[test]
fn general_or_join_past_the_cap_is_refused() {
    let flows: String = (0..7)
        .map(|k| format!(r#"<flowsInto><nextElementRef id="T{k}"/></flowsInto>"#))
        .collect();
    let branches: String = (0..7)
        .map(|k| {
            format!(
                r#"<task id="T{k}"><flowsInto><nextElementRef id="J"/></flowsInto><join code="xor"/><split code="and"/></task>"#
            )
        })
        .collect();
    let body = format!(
        r#"<task id="A">{flows}<join code="xor"/><split code="and"/></task>{branches}
        <task id="J"><flowsInto><nextElementRef id="out"/></flowsInto><join code="or"/><split code="and"/></task>"#
    );
    let m = import_str(&yawl4(&body, ""), &Options::default()).expect("imports");
    let r = verify(&m, &Options::default());
    assert!(!r.accepted());
    let f = r
        .findings
        .iter()
        .find(|f| f.kind == FindingKind::NonLocalOrJoin)
        .unwrap_or_else(|| panic!("{:#?}", r.findings));
    assert_eq!(f.elements, ["J"]);
    assert!(
        f.message.contains("KNHK_ORJOIN_MAX_INPUTS"),
        "{}",
        f.message
    );
    assert!(f.message.contains("KNHK_OR_JOIN_CAP"), "{}", f.message);
}

#[test]
fn composite_tasks_are_flattened() {
    let body = r#"
        <task id="A"><flowsInto><nextElementRef id="out"/></flowsInto><join code="xor"/><split code="and"/>
          <decomposesTo id="Sub"/></task>"#;
    let sub = r#"
    <decomposition id="Sub" xsi:type="NetFactsType">
      <localVariable><name>y</name><type>int</type><initialValue>1</initialValue></localVariable>
      <processControlElements>
        <inputCondition id="si"><flowsInto><nextElementRef id="S1"/></flowsInto></inputCondition>
        <task id="S1" xsi:type="MultipleInstanceExternalTaskFactsType">
          <flowsInto><nextElementRef id="S2"/><predicate ordering="0">/Sub/y = 1</predicate></flowsInto>
          <flowsInto><nextElementRef id="so"/><isDefaultFlow/></flowsInto>
          <join code="xor"/><split code="xor"/>
          <minimum>1</minimum><maximum>4</maximum><threshold>2</threshold><creationMode code="static"/>
        </task>
        <task id="S2"><flowsInto><nextElementRef id="so"/></flowsInto><join code="xor"/><split code="and"/></task>
        <outputCondition id="so"/>
      </processControlElements>
    </decomposition>"#;
    let m = accepted(&yawl4(body, sub));
    let ids: Vec<&str> = m.tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["A", "A/S1", "A/S2", "A/exit"]);
    assert_eq!(m.tasks[0].composite.as_deref(), Some("Sub"));
    assert!(m.tasks[3].silent);
    let mi = m.tasks[1].mi.as_ref().expect("MI attributes");
    assert_eq!(
        (
            mi.min.as_deref(),
            mi.max.as_deref(),
            mi.threshold.as_deref(),
            mi.creation_mode.as_deref()
        ),
        (Some("1"), Some("4"), Some("2"), Some("static"))
    );
    assert!(m.notes.iter().any(|n| n.contains("flattened")));
    let r = verify(&m, &Options::default());
    assert!(r.has(FindingKind::MultiInstance));
}

#[test]
fn recursive_decomposition_runs_as_subnet_cases() {
    let body = r#"<task id="A"><flowsInto><nextElementRef id="out"/></flowsInto><decomposesTo id="Sub"/></task>"#;
    let sub = r#"
    <decomposition id="Sub" xsi:type="NetFactsType"><processControlElements>
        <inputCondition id="si"><flowsInto><nextElementRef id="R"/></flowsInto><flowsInto><nextElementRef id="S"/></flowsInto></inputCondition>
        <task id="R"><flowsInto><nextElementRef id="so"/></flowsInto><decomposesTo id="Sub"/></task>
        <task id="S"><flowsInto><nextElementRef id="so"/></flowsInto><decomposesTo id="Work"/></task>
        <outputCondition id="so"/>
    </processControlElements></decomposition>"#;
    let src = yawl4(body, sub);
    // Flattening cannot express recursion: refused when flattening is forced.
    let never = Options {
        subnet_cases: knhk_import::SubnetCases::Never,
        ..Options::default()
    };
    let e = import_str(&src, &never).expect_err("refused");
    assert!(e.to_string().contains("recursive decomposition"), "{e}");
    // By default the composite tasks run as sub-net cases: the root's A and the sub-net's R
    // both run net Sub (index 0), which names itself.
    let m = import_str(&src, &Options::default()).expect("sub-net cases");
    assert_eq!(m.subnets.len(), 1, "{:?}", m.subnets);
    assert_eq!(m.subnets[0].net_id, "Sub");
    let a = m.tasks.iter().find(|t| t.id == "A").expect("A");
    assert_eq!((a.subnet, a.composite.as_deref()), (Some(0), None));
    let sub = &m.subnets[0];
    let r = sub.tasks.iter().find(|t| t.id == "R").expect("R");
    assert_eq!(r.subnet, Some(0), "recursion: Sub's R runs Sub");
    assert!(
        m.notes.iter().any(|n| n.contains("decomposes into itself")),
        "{:?}",
        m.notes
    );
    let report = verify(&m, &Options::default());
    assert!(report.accepted(), "{:?}", report.findings);
    assert!(
        report.patterns.contains(&"WCP-22 recursion"),
        "{:?}",
        report.patterns
    );
    assert!(report
        .patterns
        .contains(&"composite tasks as sub-net cases"));
    // The sub-net is verified on its own; its findings name it (a task nothing leads to).
    let broken = src.replace(r#"<flowsInto><nextElementRef id="S"/></flowsInto>"#, "");
    let m = import_str(&broken, &Options::default()).expect("imported");
    let report = verify(&m, &Options::default());
    assert!(!report.accepted());
    assert!(
        report
            .refusals()
            .any(|f| f.message.starts_with("sub-net 'Sub': task 'S'")),
        "{:?}",
        report.findings
    );
}

#[test]
fn composites_flatten_unless_the_flat_net_is_too_big() {
    // A chain of `n` tasks as the sub-net `Chain`, used by three composite tasks.
    let chain = |n: usize| {
        let mut s = String::from(
            r#"<decomposition id="Chain" xsi:type="NetFactsType"><processControlElements>
            <inputCondition id="si"><flowsInto><nextElementRef id="c0"/></flowsInto></inputCondition>"#,
        );
        for k in 0..n {
            let to = if k + 1 == n {
                "so".to_string()
            } else {
                format!("c{}", k + 1)
            };
            s.push_str(&format!(
                r#"<task id="c{k}"><flowsInto><nextElementRef id="{to}"/></flowsInto><decomposesTo id="W"/></task>"#
            ));
        }
        s.push_str(r#"<outputCondition id="so"/></processControlElements></decomposition>"#);
        s
    };
    let body = r#"
        <task id="A"><flowsInto><nextElementRef id="Q"/></flowsInto><decomposesTo id="Chain"/></task>
        <task id="Q"><flowsInto><nextElementRef id="R"/></flowsInto><decomposesTo id="Chain"/></task>
        <task id="R"><flowsInto><nextElementRef id="out"/></flowsInto><decomposesTo id="Chain"/></task>"#;
    // Small: flattened as before.
    let small = import_str(&yawl4(body, &chain(5)), &Options::default()).expect("small");
    assert!(small.subnets.is_empty());
    assert!(small.tasks.iter().any(|t| t.id == "A/c0"), "flattened");
    // 3 x 30: flattened it would hold over 90 conditions; the composites run as sub-net cases
    // and each net fits.
    let big = import_str(&yawl4(body, &chain(30)), &Options::default()).expect("big");
    assert_eq!(big.subnets.len(), 1);
    assert_eq!(big.tasks.iter().filter(|t| t.subnet == Some(0)).count(), 3);
    assert!(
        big.notes.iter().any(|n| n.contains("past the kernel's 64")),
        "{:?}",
        big.notes
    );
    assert!(verify(&big, &Options::default()).accepted());
    assert!(lower(&big.subnets[0]).is_ok());
    // Asked for: sub-net cases even where flattening fits.
    let asked = Options {
        subnet_cases: knhk_import::SubnetCases::Always,
        ..Options::default()
    };
    let small = import_str(&yawl4(body, &chain(5)), &asked).expect("asked");
    assert_eq!(small.subnets.len(), 1);
    assert_eq!(
        small.tasks.iter().filter(|t| t.subnet == Some(0)).count(),
        3
    );
}

#[test]
fn predicates_outside_the_subset() {
    let body = r#"
        <task id="A">
          <flowsInto><nextElementRef id="B"/><predicate ordering="0">count(/Net/items/item) &gt; 2</predicate></flowsInto>
          <flowsInto><nextElementRef id="out"/><isDefaultFlow/></flowsInto>
          <join code="xor"/><split code="xor"/>
        </task>
        <task id="B"><flowsInto><nextElementRef id="out"/></flowsInto></task>"#;
    let src = yawl4(body, "");
    let e = import_str(&src, &Options::default()).expect_err("refused");
    assert!(
        matches!(&e, ImportError::Predicate { expr, .. } if expr == "count(/Net/items/item) > 2"),
        "{e}"
    );
    assert!(e.to_string().contains("count(/Net/items/item) > 2"));
    let opts = Options {
        external_predicates: true,
        ..Options::default()
    };
    let m = import_str(&src, &opts).expect("imports with external predicates");
    assert_eq!(m.tasks[0].outputs[0].guard, FlowGuard::External);
    let r = verify(&m, &opts);
    assert!(
        r.accepted() && r.has(FindingKind::ExternalPredicates),
        "{:#?}",
        r.findings
    );
}

#[test]
fn structural_defects_are_named() {
    // Two defaults on an XOR split.
    let body = r#"
        <task id="A">
          <flowsInto><nextElementRef id="B"/><isDefaultFlow/></flowsInto>
          <flowsInto><nextElementRef id="out"/><isDefaultFlow/></flowsInto>
          <join code="xor"/><split code="xor"/>
        </task>
        <task id="B"><flowsInto><nextElementRef id="out"/></flowsInto></task>"#;
    let m = import_str(&yawl4(body, ""), &Options::default()).expect("imports");
    let r = verify(&m, &Options::default());
    let f = r
        .findings
        .iter()
        .find(|f| f.kind == FindingKind::Defaults)
        .expect("defaults finding");
    assert!(
        f.elements.contains(&"A".to_string()) && f.message.contains("2 default"),
        "{f}"
    );

    // A cycle of default flows with no way out: cannot reach the output.
    let body = r#"
        <task id="A"><flowsInto><nextElementRef id="B"/></flowsInto></task>
        <task id="B">
          <flowsInto><nextElementRef id="C"/><isDefaultFlow/></flowsInto>
          <join code="xor"/><split code="xor"/>
        </task>
        <task id="C"><flowsInto><nextElementRef id="B"/><isDefaultFlow/></flowsInto><join code="xor"/><split code="xor"/></task>
        <task id="Z"><flowsInto><nextElementRef id="out"/></flowsInto></task>"#;
    let m = import_str(&yawl4(body, ""), &Options::default()).expect("imports");
    let r = verify(&m, &Options::default());
    assert!(!r.accepted());
    assert!(
        r.findings.iter().any(|f| f.kind == FindingKind::NotOnPath
            && f.message.contains("cannot be reached from")
            && f.elements.iter().any(|e| e == "B")),
        "{:#?}",
        r.findings
    );

    // Deadlock: an AND-join waiting for a branch that never comes.
    let body = r#"
        <task id="A">
          <flowsInto><nextElementRef id="B"/><predicate ordering="0">/Net/x = 1</predicate></flowsInto>
          <flowsInto><nextElementRef id="C"/><isDefaultFlow/></flowsInto>
          <join code="xor"/><split code="xor"/>
        </task>
        <task id="B"><flowsInto><nextElementRef id="D"/></flowsInto></task>
        <task id="C"><flowsInto><nextElementRef id="D"/></flowsInto></task>
        <task id="D"><flowsInto><nextElementRef id="out"/></flowsInto><join code="and"/><split code="and"/></task>"#;
    let m = import_str(&yawl4(body, ""), &Options::default()).expect("imports");
    let r = verify(&m, &Options::default());
    assert!(
        r.has(FindingKind::Deadlock) && r.has(FindingKind::DeadTask),
        "{:#?}",
        r.findings
    );
    let dead = r
        .findings
        .iter()
        .find(|f| f.kind == FindingKind::DeadTask)
        .expect("dead");
    assert_eq!(dead.elements, ["D"]);
}

#[test]
fn unknown_ids_and_bad_codes() {
    let body = r#"<task id="A"><flowsInto><nextElementRef id="Nowhere"/></flowsInto></task>"#;
    let e = import_str(&yawl4(body, ""), &Options::default()).expect_err("refused");
    assert_eq!(
        e,
        ImportError::UnknownElement {
            from: "A".into(),
            id: "Nowhere".into()
        }
    );
    let body = r#"<task id="A"><flowsInto><nextElementRef id="out"/></flowsInto><removesTokens id="Ghost"/></task>"#;
    let e = import_str(&yawl4(body, ""), &Options::default()).expect_err("refused");
    assert!(e.to_string().contains("Ghost"), "{e}");
    let body = r#"<task id="A"><flowsInto><nextElementRef id="out"/></flowsInto><join code="sometimes"/></task>"#;
    let e = import_str(&yawl4(body, ""), &Options::default()).expect_err("refused");
    assert!(
        e.to_string().contains("unknown join code 'sometimes'"),
        "{e}"
    );
    let body = r#"<task id="A"><flowsInto><nextElementRef id="out"/></flowsInto></task><task id="A"><flowsInto><nextElementRef id="out"/></flowsInto></task>"#;
    let e = import_str(&yawl4(body, ""), &Options::default()).expect_err("refused");
    assert_eq!(e, ImportError::DuplicateId("A".into()));
}

#[test]
fn capacity_is_named() {
    let mut body = String::new();
    for i in 0..70 {
        let next = if i == 69 {
            "out".to_string()
        } else {
            format!("T{}", i + 1)
        };
        let id = if i == 0 {
            "A".to_string()
        } else {
            format!("T{i}")
        };
        body.push_str(&format!(
            r#"<task id="{id}"><flowsInto><nextElementRef id="{next}"/></flowsInto></task>"#
        ));
    }
    let m = import_str(&yawl4(&body, ""), &Options::default()).expect("imports");
    let r = verify(&m, &Options::default());
    assert!(
        r.findings.iter().any(|f| f.kind == FindingKind::Capacity
            && f.message.contains("70 tasks; the kernel holds 64")),
        "{:#?}",
        r.findings
    );
}

#[test]
fn pnml_namespaced_ptnet_without_page_and_silent_transitions() {
    let src = r#"<?xml version="1.0"?>
<pnml xmlns="http://www.pnml.org/version-2009/grammar/pnml">
  <net id="n" type="http://www.pnml.org/version-2009/grammar/ptnet">
    <place id="p0"><initialMarking><text>1</text></initialMarking></place>
    <place id="p1"/><place id="p2"/>
    <transition id="a"><name><text>a</text></name></transition>
    <transition id="tau"><name><text>tau</text></name><toolspecific tool="ProM" version="6.4" activity="$invisible$"/></transition>
    <arc id="x1" source="p0" target="a"/><arc id="x2" source="a" target="p1"/>
    <arc id="x3" source="p1" target="tau"/><arc id="x4" source="tau" target="p2"/>
  </net>
</pnml>"#;
    let m = accepted(src);
    assert_eq!(m.format.to_string(), "PNML (ptnet)");
    assert!(m.tasks[1].silent && !m.tasks[0].silent);
    assert_eq!(
        (m.condition_id(m.input), m.condition_id(m.output)),
        ("p0", "p2")
    );
    assert_eq!(m.tasks[0].join, Join::Xor);
}

#[test]
fn pnml_marked_place_with_inflow_and_final_place_with_outflow_are_normalised() {
    // p0 is marked and fed back by `again`; the final marking's p2 has an outgoing arc.
    let src = r#"<pnml><net id="loop" type="http://www.pnml.org/version-2009/grammar/ptnet"><page id="g">
      <place id="p0"><initialMarking><text>1</text></initialMarking></place>
      <place id="p1"/><place id="p2"/>
      <transition id="work"><name><text>work</text></name></transition>
      <transition id="again"><name><text>again</text></name></transition>
      <transition id="check"><name><text>check</text></name></transition>
      <transition id="reopen"><name><text>reopen</text></name></transition>
      <arc id="a1" source="p0" target="work"/><arc id="a2" source="work" target="p1"/>
      <arc id="a3" source="p1" target="again"/><arc id="a4" source="again" target="p0"/>
      <arc id="a5" source="p1" target="check"/><arc id="a6" source="check" target="p2"/>
      <arc id="a7" source="p2" target="reopen"/><arc id="a8" source="reopen" target="p1"/>
      </page>
      <finalmarkings><marking><place idref="p2"><text>1</text></place></marking></finalmarkings>
    </net></pnml>"#;
    let m = accepted(src);
    assert_eq!(
        (m.condition_id(m.input), m.condition_id(m.output)),
        ("__input", "__output")
    );
    let ids: Vec<&str> = m.tasks.iter().map(|t| t.id.as_str()).collect();
    assert!(
        ids.contains(&"__start") && ids.contains(&"__end"),
        "{ids:?}"
    );
    assert!(m
        .tasks
        .iter()
        .filter(|t| t.id.starts_with("__"))
        .all(|t| t.silent));
    let notes = m.notes.join("\n");
    assert!(
        notes.contains("'p0' has incoming arcs") && notes.contains("'p2' has outgoing arcs"),
        "the check output says what was synthesised: {notes}"
    );
}

#[test]
fn pnml_refusals() {
    let two = r#"<pnml><net id="n" type="http://www.pnml.org/version-2009/grammar/ptnet"><page id="g">
      <place id="p"><initialMarking><text>2</text></initialMarking></place></page></net></pnml>"#;
    assert_eq!(
        import_str(two, &Options::default()),
        Err(ImportError::NotSafe {
            place: "p".into(),
            tokens: 2
        })
    );
    let dangling = r#"<pnml><net id="n"><place id="p"><initialMarking><text>1</text></initialMarking></place>
      <arc id="a" source="p" target="ghost"/></net></pnml>"#;
    let e = import_str(dangling, &Options::default()).expect_err("refused");
    assert!(e.to_string().contains("ghost"), "{e}");
    let weighted = r#"<pnml><net id="n"><place id="p"/><transition id="t"/>
      <arc id="a" source="p" target="t"><inscription><text>3</text></inscription></arc></net></pnml>"#;
    let e = import_str(weighted, &Options::default()).expect_err("refused");
    assert!(e.to_string().contains("weight 3"), "{e}");
}

#[test]
fn json_form_and_examples() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("docs/examples") {
        let p = e.expect("entry").path();
        if p.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let m =
            import_file(&p, &Options::default()).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let report = verify(&m, &Options::default());
        assert!(report.accepted(), "{}: {report:?}", p.display());
        n += 1;
    }
    assert!(n >= 2, "examples found: {n}");
    let e = import_str(
        r#"{"tasks": [{"id": "A", "jion": "xor"}]}"#,
        &Options::default(),
    )
    .expect_err("typo");
    assert!(e.to_string().contains("jion"), "{e}");
}

#[test]
fn malformed_inputs_are_errors() {
    let full = yawl4(
        r#"<task id="A"><flowsInto><nextElementRef id="out"/></flowsInto></task>"#,
        "",
    );
    for cut in [10, 100, full.len() / 2, full.len() - 5] {
        assert!(
            import_str(&full[..cut], &Options::default()).is_err(),
            "cut at {cut}"
        );
    }
    assert!(matches!(
        import_str("hello", &Options::default()),
        Err(ImportError::UnknownFormat(_))
    ));
    assert!(matches!(
        import_str("<html/>", &Options::default()),
        Err(ImportError::UnknownFormat(_))
    ));
    assert!(import_str("{", &Options::default()).is_err());
    assert!(import_str("", &Options::default()).is_err());
    let huge = vec![b' '; (knhk_import::MAX_INPUT_BYTES + 1) as usize];
    assert!(matches!(
        import_bytes(&huge, &Options::default()),
        Err(ImportError::TooLarge { .. })
    ));
    // Deeply nested XML hits the parser's limits, not the stack.
    let deep = format!(
        "<pnml>{}{}</pnml>",
        "<page>".repeat(5000),
        "</page>".repeat(5000)
    );
    assert!(import_str(&deep, &Options::default()).is_err());
}

fn fuzz_one(bytes: &[u8]) {
    if let Ok(m) = import_bytes(bytes, &Options::default()) {
        let _ = verify(
            &m,
            &Options {
                state_cap: 2_000,
                ..Options::default()
            },
        );
    }
    let _ = knhk_import::xes::read(bytes);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        fuzz_one(&bytes);
    }

    #[test]
    fn mutated_corpus_never_panics(
        which in 0usize..4,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let files = [
            include_str!("../../../shared/corpus/yawl/WPC7StructuredSynchronisingMerge.yawl"),
            include_str!("../../../shared/corpus/pnml/running-example.pnml"),
            include_str!("../../../shared/corpus/pnml/woped-XorSplitJoin.pnml"),
            include_str!("../../../shared/corpus/yawl/WPC10AbitraryCycles.yawl"),
        ];
        let mut b = files[which].as_bytes().to_vec();
        for (i, v) in edits {
            let at = i.index(b.len());
            b[at] = v;
        }
        let n = cut.index(b.len() + 1);
        fuzz_one(&b);
        fuzz_one(&b[..n]);
    }

    #[test]
    fn predicates_never_panic(s in "[ /()a-zA-Z0-9<>=!'\"._-]{0,64}") {
        let src = yawl4(&format!(
            r#"<task id="A"><flowsInto><nextElementRef id="B"/><predicate ordering="0">{}</predicate></flowsInto>
               <flowsInto><nextElementRef id="out"/><isDefaultFlow/></flowsInto><split code="xor"/></task>
               <task id="B"><flowsInto><nextElementRef id="out"/></flowsInto></task>"#,
            s.replace('&', "&amp;").replace('<', "&lt;")), "");
        let _ = import_str(&src, &Options::default());
    }
}

#[test]
fn a_replay_that_hits_its_frontier_cap_is_not_decided_not_unfit() {
    use knhk_import::replay::{replay_with_cap, Outcome};
    use knhk_import::xes::{Log, Trace, XesEvent};
    // From p0, two silent transitions lead to p1 (then `a`) and p2 (then `b`).
    let src = r#"<pnml><net id="n" type="http://www.pnml.org/version-2009/grammar/ptnet"><page id="g">
      <place id="p0"><initialMarking><text>1</text></initialMarking></place>
      <place id="p1"/><place id="p2"/><place id="p3"/>
      <transition id="tau1"/><transition id="tau2"/>
      <transition id="a"><name><text>a</text></name></transition>
      <transition id="b"><name><text>b</text></name></transition>
      <arc id="x1" source="p0" target="tau1"/><arc id="x2" source="tau1" target="p1"/>
      <arc id="x3" source="p0" target="tau2"/><arc id="x4" source="tau2" target="p2"/>
      <arc id="x5" source="p1" target="a"/><arc id="x6" source="a" target="p3"/>
      <arc id="x7" source="p2" target="b"/><arc id="x8" source="b" target="p3"/>
    </page></net></pnml>"#;
    let m = accepted(src);
    let net = knhk_import::lower(&m).expect("lowers").net;
    let trace = |names: &[&str]| Trace {
        name: None,
        events: names
            .iter()
            .map(|n| XesEvent {
                name: n.to_string(),
                lifecycle: None,
            })
            .collect(),
    };
    let log = Log {
        traces: vec![trace(&["b"]), trace(&["c"])],
    };
    // With room for every case, `b` fits; `c` names no task: refused whatever the cap.
    let full = replay_with_cap(&m, &net, &log, 10_000);
    assert_eq!(full.variants[0].outcome, Outcome::Fits);
    assert!(matches!(full.variants[1].outcome, Outcome::Refused { .. }));
    assert_eq!((full.fitting, full.undecided), (1, 0));
    // A frontier of 2 cases drops the one where `b` is enabled: not decided, not "does not fit".
    let capped = replay_with_cap(&m, &net, &log, 2);
    assert_eq!(
        capped.variants[0].outcome,
        Outcome::Undecided {
            index: 0,
            event: "b".into()
        }
    );
    assert!(matches!(
        capped.variants[1].outcome,
        Outcome::Refused { .. }
    ));
    assert_eq!((capped.fitting, capped.undecided), (0, 1));
}

/// Wide tasks (more than the 8 flows a task held before ABI 4): `knhk check` accepts a model
/// with a 24-way AND split, a 24-input AND join and a 12-way XOR split with predicates, and the
/// kernel runs it.
#[test]
fn wide_split_model() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/models/WideSplit.yawl");
    let m = import_file(&path, &Options::default()).expect("imports");
    let r = verify(&m, &Options::default());
    assert!(r.accepted(), "{:#?}", r.findings);
    assert!(
        !r.findings.iter().any(|f| f.kind == FindingKind::Capacity),
        "{:#?}",
        r.findings
    );
    let net = lower(&m).expect("lowers").net;
    let a = task_of(&m, "A");
    let j = task_of(&m, "J");
    let ts: Vec<u32> = (0..24).map(|k| task_of(&m, &format!("T{k}"))).collect();
    let xs: Vec<u32> = (0..12).map(|k| task_of(&m, &format!("X{k}"))).collect();
    assert_eq!(net.task(a).unwrap().branch_count(), 24);
    assert_eq!(net.task(j).unwrap().pre().count_ones(), 24);
    assert_eq!(net.task(j).unwrap().branch_count(), 12);
    for (pick, x) in [(0, 0), (7, 7), (10, 10), (11, 11), (99, 11)] {
        let mut k = Case::new(&net).unwrap();
        *k.regs_mut() = m.initial_registers();
        k.regs_mut()[0] = pick;
        net.fire(&mut k, a).unwrap();
        assert_eq!(net.enabled(&k), ts.iter().fold(0, |e, &t| e | 1 << t));
        for &t in &ts[..23] {
            net.fire(&mut k, t).unwrap();
            assert_eq!(net.fire(&mut k, j), Err(knhk_kernel::Error::NotEnabled));
        }
        net.fire(&mut k, ts[23]).unwrap();
        net.fire(&mut k, j).unwrap();
        assert_eq!(net.enabled(&k), 1 << xs[x], "pick {pick}");
        net.fire(&mut k, xs[x]).unwrap();
        assert_eq!(net.state(&k), CaseState::Complete);
    }
}

/// YAWL's multiple-instance attributes become the kernel's (issue 13 item 2): Review (static,
/// 1..10, threshold 2) and Collect (dynamic, 1..3, YAWL's "unbounded" threshold capped), run
/// through the lowered net.
#[test]
fn multiple_instance_attributes_are_mapped() {
    use knhk_kernel::{Error, MiSpec, MI_MAX_INSTANCES};
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/models/MultipleInstances.yawl");
    let m = import_file(&p, &Options::default()).expect("imports");
    let r = verify(&m, &Options::default());
    assert!(r.accepted(), "{:#?}", r.findings);
    let note = r
        .findings
        .iter()
        .find(|f| f.kind == FindingKind::MultiInstance && f.elements == ["Review"])
        .expect("a note on Review");
    assert!(note.message.contains("threshold 2"), "{}", note.message);
    let net = lower(&m).expect("lowers").net;
    let [prepare, review, collect, decide] =
        ["Prepare", "Review", "Collect", "Decide"].map(|id| task_of(&m, id));
    assert_eq!(
        net.mi_spec(review),
        Some(MiSpec {
            minimum: 1,
            maximum: 10,
            threshold: 2,
            dynamic: false,
            keep: false,
            count_register: None
        })
    );
    let spec = net.mi_spec(collect).expect("Collect is MI");
    assert_eq!((spec.maximum, spec.threshold, spec.dynamic), (3, 3, true));
    assert_eq!(net.mi_spec(prepare), None);
    let mut k = Case::new(&net).unwrap();
    net.fire(&mut k, prepare).unwrap();
    assert_eq!(net.start_mi(&mut k, review, 11), Err(Error::MiLimit));
    net.start_mi(&mut k, review, 3).unwrap();
    for i in 0..2 {
        net.start_instance(&mut k, review, i).unwrap();
        net.complete_instance(&mut k, review, i).unwrap();
    }
    assert_eq!(k.busy(), 0, "the threshold completed Review");
    net.start(&mut k, collect).unwrap();
    assert_eq!(net.add_instance(&mut k, collect), Ok(1));
    for i in 0..2 {
        net.start_instance(&mut k, collect, i).unwrap();
        net.complete_instance(&mut k, collect, i).unwrap();
    }
    net.fire(&mut k, decide).unwrap();
    assert_eq!(net.state(&k), CaseState::Complete);
    assert_eq!(MI_MAX_INSTANCES, 65_536);
}

/// A YAWL spec with one task `A` whose `<timer>` is `timer`, and an empty task `W`.
fn timed_yawl(timer: &str) -> String {
    format!(
        r#"<specificationSet xmlns="http://www.yawlfoundation.org/yawlschema" version="4.0">
  <specification uri="timed">
    <decomposition id="Net" isRootNet="true" xsi:type="NetFactsType" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
      <localVariable><name>t</name><type>YTimerType</type><namespace>x</namespace></localVariable>
      <processControlElements>
        <inputCondition id="i"><flowsInto><nextElementRef id="A"/></flowsInto></inputCondition>
        <task id="A">
          <flowsInto><nextElementRef id="o"/></flowsInto>
          <join code="xor"/><split code="and"/>
          {timer}
          <decomposesTo id="work"/>
        </task>
        <outputCondition id="o"/>
      </processControlElements>
    </decomposition>
    <decomposition id="work" xsi:type="WebServiceGatewayFactsType" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/>
  </specification>
</specificationSet>"#
    )
}

#[test]
fn yawl_timers_are_read_and_bad_ones_refused() {
    use knhk_import::ir::{TimerTrigger, TimerWhen};
    let timer = |xml: &str| {
        import_str(&timed_yawl(xml), &Options::default())
            .map(|m| (m.tasks[0].timer.clone(), m.notes))
    };
    // ISO 8601: calendar months apart from the fixed part
    let (t, notes) =
        timer("<timer><trigger>OnEnabled</trigger><duration>P1Y2M3DT4H5M6.5S</duration></timer>")
            .expect("duration");
    let t = t.expect("armed");
    assert_eq!(t.trigger, TimerTrigger::OnEnabled);
    match t.when {
        TimerWhen::After { months, millis, .. } => {
            assert_eq!(months, 14);
            assert_eq!(millis, ((3 * 24 + 4) * 60 + 5) * 60_000 + 6_500);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        notes.iter().any(|n| n.contains("timer of task 'A'")),
        "{notes:?}"
    );
    // ticks of an interval
    let (t, _) = timer(
        "<timer><trigger>OnExecuting</trigger><durationparams><ticks>90</ticks><interval>SEC</interval></durationparams></timer>",
    )
    .expect("durationparams");
    let t = t.expect("armed");
    assert_eq!(t.trigger, TimerTrigger::OnExecuting);
    assert!(
        matches!(
            t.when,
            TimerWhen::After {
                months: 0,
                millis: 90_000,
                ..
            }
        ),
        "{t:?}"
    );
    // a fixed expiry
    let (t, _) = timer("<timer><trigger>OnEnabled</trigger><expiry>1800000000000</expiry></timer>")
        .expect("expiry");
    assert_eq!(
        t.expect("armed").when,
        TimerWhen::At {
            unix_ms: 1_800_000_000_000
        }
    );
    // a late-bound timer is not armed, and said so
    let (t, notes) = timer("<timer><netparam>t</netparam></timer>").expect("netparam");
    assert!(t.is_none());
    assert!(
        notes
            .iter()
            .any(|n| n.contains("<timer><netparam>") && n.contains("\"A\"")),
        "{notes:?}"
    );
    // malformed timers name the task and what is wrong
    for (xml, words) in [
        (
            "<timer><trigger>OnEnabled</trigger><duration>30 minutes</duration></timer>",
            "not an ISO 8601 duration",
        ),
        (
            "<timer><trigger>Sometimes</trigger><duration>PT1M</duration></timer>",
            "unknown <trigger>",
        ),
        ("<timer><duration>PT1M</duration></timer>", "no <trigger>"),
        (
            "<timer><trigger>OnEnabled</trigger></timer>",
            "none of <duration>",
        ),
        (
            "<timer><trigger>OnEnabled</trigger><expiry>tomorrow</expiry></timer>",
            "<expiry>",
        ),
    ] {
        let e = timer(xml).expect_err(xml).to_string();
        assert!(e.contains(words) && e.contains('A'), "{xml}: {e}");
    }
}

#[test]
fn json_timers_need_exactly_one_expiry_and_an_int_variable() {
    let spec = |timer: &str, var_type: &str| {
        format!(
            r#"{{ "name": "t", "id": "Net",
              "variables": [ {{ "name": "ms", "type": "{var_type}", "initial": "5" }} ],
              "conditions": [ {{ "id": "i", "kind": "input", "flows": [ {{ "to": "A" }} ] }},
                              {{ "id": "o", "kind": "output" }} ],
              "tasks": [ {{ "id": "A", "timer": {timer}, "flows": [ {{ "to": "o" }} ] }} ] }}"#
        )
    };
    let m = import_str(
        &spec(r#"{ "trigger": "started", "variable": "ms" }"#, "int"),
        &Options::default(),
    )
    .expect("variable timer");
    let reg = m
        .variables
        .iter()
        .find(|v| v.name == "ms")
        .and_then(|v| v.register);
    assert!(reg.is_some(), "the variable got a register");
    assert_eq!(
        m.tasks[0].timer.as_ref().map(|t| t.when.clone()),
        Some(knhk_import::ir::TimerWhen::Variable {
            name: "ms".into(),
            register: reg
        })
    );
    assert_eq!(m.initial_registers()[usize::from(reg.unwrap_or(0))], 5);
    for (timer, ty, words) in [
        (
            r#"{ "trigger": "enabled", "duration": "PT1S", "expiry": 5 }"#,
            "int",
            "exactly one",
        ),
        (r#"{ "trigger": "enabled" }"#, "int", "exactly one"),
        (
            r#"{ "trigger": "enabled", "variable": "ms" }"#,
            "string",
            "integer variable",
        ),
        (
            r#"{ "trigger": "enabled", "variable": "nope" }"#,
            "int",
            "unknown variable",
        ),
        (
            r#"{ "trigger": "enabled", "duration": "P" }"#,
            "int",
            "ISO 8601",
        ),
    ] {
        let e = import_str(&spec(timer, ty), &Options::default())
            .expect_err(timer)
            .to_string();
        assert!(e.contains(words), "{timer}: {e}");
    }
}
