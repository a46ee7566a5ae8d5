//! Pins every public struct's size, alignment and field offsets in the Rust bindings against
//! the C compiler's own `sizeof`/`_Alignof`/`offsetof` (tests/layout_probe.c, compiled by cc).
use core::mem::{align_of, offset_of, size_of};
use knhk_sys::*;

extern "C" {
    static knhk_layout_probe: [u64; 128];
    static knhk_layout_probe_len: u64;
}

#[test]
fn struct_layouts_match_c() {
    let rust: &[(&str, usize)] = &[
        ("sizeof term", size_of::<knhk_term_t>()),
        ("alignof term", align_of::<knhk_term_t>()),
        ("term.op", offset_of!(knhk_term_t, op)),
        ("term.lhs", offset_of!(knhk_term_t, lhs)),
        ("term.rhs_is_reg", offset_of!(knhk_term_t, rhs_is_reg)),
        ("term.rhs_reg", offset_of!(knhk_term_t, rhs_reg)),
        ("term.reserved", offset_of!(knhk_term_t, reserved)),
        ("term.rhs_const", offset_of!(knhk_term_t, rhs_const)),
        ("sizeof guard", size_of::<knhk_guard_t>()),
        ("alignof guard", align_of::<knhk_guard_t>()),
        ("guard.term", offset_of!(knhk_guard_t, term)),
        ("guard.combine", offset_of!(knhk_guard_t, combine)),
        ("guard.reserved", offset_of!(knhk_guard_t, reserved)),
        ("sizeof branch", size_of::<knhk_branch_t>()),
        ("alignof branch", align_of::<knhk_branch_t>()),
        ("branch.conditions", offset_of!(knhk_branch_t, conditions)),
        ("branch.or_expect", offset_of!(knhk_branch_t, or_expect)),
        ("branch.guard", offset_of!(knhk_branch_t, guard)),
        ("sizeof task", size_of::<knhk_task_t>()),
        ("alignof task", align_of::<knhk_task_t>()),
        ("task.pre", offset_of!(knhk_task_t, pre)),
        ("task.post", offset_of!(knhk_task_t, post)),
        (
            "task.cancel_conditions",
            offset_of!(knhk_task_t, cancel_conditions),
        ),
        ("task.cancel_tasks", offset_of!(knhk_task_t, cancel_tasks)),
        ("task.or_expect_all", offset_of!(knhk_task_t, or_expect_all)),
        ("task.join", offset_of!(knhk_task_t, join)),
        ("task.split", offset_of!(knhk_task_t, split)),
        ("task.nbranches", offset_of!(knhk_task_t, nbranches)),
        (
            "task.default_branch",
            offset_of!(knhk_task_t, default_branch),
        ),
        ("task.ndefaults", offset_of!(knhk_task_t, ndefaults)),
        ("task.race", offset_of!(knhk_task_t, race)),
        ("task.reserved", offset_of!(knhk_task_t, reserved)),
        ("sizeof hot_meta", size_of::<knhk_hot_meta_t>()),
        ("alignof hot_meta", align_of::<knhk_hot_meta_t>()),
        ("hot_meta.kind", offset_of!(knhk_hot_meta_t, kind)),
        ("hot_meta.lhs", offset_of!(knhk_hot_meta_t, lhs)),
        ("hot_meta.race", offset_of!(knhk_hot_meta_t, race)),
        ("hot_meta.reserved", offset_of!(knhk_hot_meta_t, reserved)),
        ("sizeof hot", size_of::<knhk_hot_t>()),
        ("alignof hot", align_of::<knhk_hot_t>()),
        ("hot.pre", offset_of!(knhk_hot_t, pre)),
        ("hot.out_on", offset_of!(knhk_hot_t, out_on)),
        ("hot.out_flip", offset_of!(knhk_hot_t, out_flip)),
        ("hot.lo", offset_of!(knhk_hot_t, lo)),
        ("hot.span", offset_of!(knhk_hot_t, span)),
        ("hot.meta", offset_of!(knhk_hot_t, meta)),
        ("hot.kinds", offset_of!(knhk_hot_t, kinds)),
        ("hot.xor_split_reg", offset_of!(knhk_hot_t, xor_split_reg)),
        ("hot.reserved", offset_of!(knhk_hot_t, reserved)),
        ("sizeof net", size_of::<knhk_net_t>()),
        ("alignof net", align_of::<knhk_net_t>()),
        ("net.tasks", offset_of!(knhk_net_t, tasks)),
        ("net.branches", offset_of!(knhk_net_t, branches)),
        ("net.hot", offset_of!(knhk_net_t, hot)),
        ("net.input", offset_of!(knhk_net_t, input)),
        ("net.output", offset_of!(knhk_net_t, output)),
        ("net.nconditions", offset_of!(knhk_net_t, nconditions)),
        ("net.ntasks", offset_of!(knhk_net_t, ntasks)),
        ("net.sealed", offset_of!(knhk_net_t, sealed)),
        ("net.reserved", offset_of!(knhk_net_t, reserved)),
        ("sizeof case", size_of::<knhk_case_t>()),
        ("alignof case", align_of::<knhk_case_t>()),
        ("case.marking", offset_of!(knhk_case_t, marking)),
        ("case.busy", offset_of!(knhk_case_t, busy)),
        ("case.or_expect", offset_of!(knhk_case_t, or_expect)),
        ("case.absorb", offset_of!(knhk_case_t, absorb)),
        ("case.seq", offset_of!(knhk_case_t, seq)),
        ("case.flags", offset_of!(knhk_case_t, flags)),
        ("case.reserved", offset_of!(knhk_case_t, reserved)),
        ("case.reserved2", offset_of!(knhk_case_t, reserved2)),
        ("case.regs", offset_of!(knhk_case_t, regs)),
        ("sizeof block", size_of::<knhk_block_t>()),
        ("alignof block", align_of::<knhk_block_t>()),
        ("block.marking", offset_of!(knhk_block_t, marking)),
        ("block.busy", offset_of!(knhk_block_t, busy)),
        ("block.or_expect", offset_of!(knhk_block_t, or_expect)),
        ("block.absorb", offset_of!(knhk_block_t, absorb)),
        ("block.seq", offset_of!(knhk_block_t, seq)),
        ("block.flags", offset_of!(knhk_block_t, flags)),
        ("block.regs", offset_of!(knhk_block_t, regs)),
        ("sizeof event", size_of::<knhk_event_t>()),
        ("alignof event", align_of::<knhk_event_t>()),
        ("event.case_index", offset_of!(knhk_event_t, case_index)),
        ("event.op", offset_of!(knhk_event_t, op)),
        ("event.task", offset_of!(knhk_event_t, task)),
        ("event.flags", offset_of!(knhk_event_t, flags)),
        ("event.branch_bits", offset_of!(knhk_event_t, branch_bits)),
        ("event.reserved", offset_of!(knhk_event_t, reserved)),
        ("sizeof seal_report", size_of::<knhk_seal_report_t>()),
        ("alignof seal_report", align_of::<knhk_seal_report_t>()),
        ("seal_report.status", offset_of!(knhk_seal_report_t, status)),
        (
            "seal_report.element",
            offset_of!(knhk_seal_report_t, element),
        ),
        ("seal_report.index", offset_of!(knhk_seal_report_t, index)),
        ("seal_report.other", offset_of!(knhk_seal_report_t, other)),
    ];
    // SAFETY: the probe is a const array defined in layout_probe.c; its length is exported
    // alongside it and checked against the Rust table before any element beyond it is read.
    let len = unsafe { knhk_layout_probe_len } as usize;
    assert_eq!(
        len,
        rust.len(),
        "layout_probe.c and this table list different fields"
    );
    assert!(
        len <= 128,
        "grow the extern declaration of knhk_layout_probe"
    );
    for (i, (name, value)) in rust.iter().enumerate() {
        // SAFETY: i < len, the probe array's real length (asserted above).
        let c = unsafe { *core::ptr::addr_of!(knhk_layout_probe).cast::<u64>().add(i) };
        assert_eq!(*value as u64, c, "{name}: Rust {value}, C {c}");
    }
}

#[test]
fn abi_version_matches_header() {
    // SAFETY: knhk_abi_version takes no arguments and touches no state.
    assert_eq!(unsafe { knhk_abi_version() }, KNHK_ABI_VERSION);
}

/// With `--features regenerate`, bindgen ran on the header in this build: the checked-in
/// bindings must be identical to what it produced.
#[cfg(feature = "regenerate")]
#[test]
fn bindings_match_header() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/bindings.rs"));
    let checked_in = include_str!("../src/bindings.rs");
    assert!(
        generated == checked_in,
        "ffi/src/bindings.rs drifted from c/include/knhk.h: run ffi/regenerate.sh"
    );
}
