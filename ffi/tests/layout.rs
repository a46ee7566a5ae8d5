//! Pins every public struct's size, alignment and field offsets in the Rust bindings against
//! the C compiler's own `sizeof`/`_Alignof`/`offsetof` (tests/layout_probe.c, compiled by cc),
//! and pins the C values together with `KNHK_ABI_VERSION`: a layout change without an ABI bump
//! fails. Also checks the version macros and functions against each other and the workspace.
use core::mem::{align_of, offset_of, size_of};
use knhk_sys::*;

extern "C" {
    static knhk_layout_probe: [u64; 128];
    static knhk_layout_probe_len: u64;
}

/// The ABI version that the pinned column of [`layouts`] describes. Changing any public size,
/// alignment or offset is an ABI change: bump `KNHK_ABI_VERSION` (c/include/knhk/version.h),
/// then set this and re-pin the column. `layouts_pinned_with_abi_version` fails otherwise.
const PINNED_ABI: u32 = 5;

/// Every public struct's size, alignment and field offsets, in layout_probe.c's order: the name,
/// the Rust bindings' value and the value pinned for [`PINNED_ABI`]. The short-path tables are
/// opaque (`knhk_hot_storage_t`): only their size and place are ABI.
fn layouts() -> Vec<(&'static str, usize, u64)> {
    vec![
        ("sizeof term", size_of::<knhk_term_t>(), 16),
        ("alignof term", align_of::<knhk_term_t>(), 8),
        ("term.op", offset_of!(knhk_term_t, op), 0),
        ("term.lhs", offset_of!(knhk_term_t, lhs), 1),
        ("term.rhs_is_reg", offset_of!(knhk_term_t, rhs_is_reg), 2),
        ("term.rhs_reg", offset_of!(knhk_term_t, rhs_reg), 3),
        ("term.reserved", offset_of!(knhk_term_t, reserved), 4),
        ("term.rhs_const", offset_of!(knhk_term_t, rhs_const), 8),
        ("sizeof guard", size_of::<knhk_guard_t>(), 40),
        ("alignof guard", align_of::<knhk_guard_t>(), 8),
        ("guard.term", offset_of!(knhk_guard_t, term), 0),
        ("guard.combine", offset_of!(knhk_guard_t, combine), 32),
        ("guard.reserved", offset_of!(knhk_guard_t, reserved), 33),
        ("sizeof branch", size_of::<knhk_branch_t>(), 56),
        ("alignof branch", align_of::<knhk_branch_t>(), 8),
        (
            "branch.conditions",
            offset_of!(knhk_branch_t, conditions),
            0,
        ),
        ("branch.or_expect", offset_of!(knhk_branch_t, or_expect), 8),
        ("branch.guard", offset_of!(knhk_branch_t, guard), 16),
        ("sizeof task", size_of::<knhk_task_t>(), 64),
        ("alignof task", align_of::<knhk_task_t>(), 64),
        ("task.pre", offset_of!(knhk_task_t, pre), 0),
        ("task.post", offset_of!(knhk_task_t, post), 8),
        (
            "task.cancel_conditions",
            offset_of!(knhk_task_t, cancel_conditions),
            16,
        ),
        (
            "task.cancel_tasks",
            offset_of!(knhk_task_t, cancel_tasks),
            24,
        ),
        (
            "task.or_expect_all",
            offset_of!(knhk_task_t, or_expect_all),
            32,
        ),
        ("task.join", offset_of!(knhk_task_t, join), 40),
        ("task.split", offset_of!(knhk_task_t, split), 41),
        ("task.nbranches", offset_of!(knhk_task_t, nbranches), 42),
        (
            "task.default_branch",
            offset_of!(knhk_task_t, default_branch),
            43,
        ),
        ("task.ndefaults", offset_of!(knhk_task_t, ndefaults), 44),
        ("task.race", offset_of!(knhk_task_t, race), 45),
        (
            "task.first_branch",
            offset_of!(knhk_task_t, first_branch),
            46,
        ),
        ("task.mi", offset_of!(knhk_task_t, mi), 48),
        ("sizeof mi_spec", size_of::<knhk_mi_spec_t>(), 16),
        ("alignof mi_spec", align_of::<knhk_mi_spec_t>(), 4),
        ("mi_spec.minimum", offset_of!(knhk_mi_spec_t, minimum), 0),
        ("mi_spec.maximum", offset_of!(knhk_mi_spec_t, maximum), 4),
        (
            "mi_spec.threshold",
            offset_of!(knhk_mi_spec_t, threshold),
            8,
        ),
        ("mi_spec.flags", offset_of!(knhk_mi_spec_t, flags), 12),
        (
            "mi_spec.count_reg",
            offset_of!(knhk_mi_spec_t, count_reg),
            13,
        ),
        ("mi_spec.slot", offset_of!(knhk_mi_spec_t, slot), 14),
        ("mi_spec.reserved", offset_of!(knhk_mi_spec_t, reserved), 15),
        ("sizeof hot_storage", size_of::<knhk_hot_storage_t>(), 24576),
        ("alignof hot_storage", align_of::<knhk_hot_storage_t>(), 64),
        ("sizeof net", size_of::<knhk_net_t>(), 57408),
        ("alignof net", align_of::<knhk_net_t>(), 64),
        ("net.tasks", offset_of!(knhk_net_t, tasks), 0),
        ("net.branches", offset_of!(knhk_net_t, branches), 4096),
        ("net.hot", offset_of!(knhk_net_t, hot), 32768),
        ("net.input", offset_of!(knhk_net_t, input), 57344),
        ("net.output", offset_of!(knhk_net_t, output), 57352),
        (
            "net.nconditions",
            offset_of!(knhk_net_t, nconditions),
            57360,
        ),
        ("net.ntasks", offset_of!(knhk_net_t, ntasks), 57364),
        ("net.sealed", offset_of!(knhk_net_t, sealed), 57368),
        ("net.nflows", offset_of!(knhk_net_t, nflows), 57372),
        ("sizeof case", size_of::<knhk_case_t>(), 256),
        ("alignof case", align_of::<knhk_case_t>(), 64),
        ("case.marking", offset_of!(knhk_case_t, marking), 0),
        ("case.busy", offset_of!(knhk_case_t, busy), 8),
        ("case.or_expect", offset_of!(knhk_case_t, or_expect), 16),
        ("case.absorb", offset_of!(knhk_case_t, absorb), 24),
        ("case.seq", offset_of!(knhk_case_t, seq), 32),
        ("case.flags", offset_of!(knhk_case_t, flags), 40),
        ("case.reserved", offset_of!(knhk_case_t, reserved), 44),
        ("case.mi_live", offset_of!(knhk_case_t, mi_live), 48),
        ("case.reserved2", offset_of!(knhk_case_t, reserved2), 56),
        ("case.regs", offset_of!(knhk_case_t, regs), 64),
        ("case.mi", offset_of!(knhk_case_t, mi), 128),
        ("sizeof mi_slot", size_of::<knhk_mi_slot_t>(), 32),
        ("alignof mi_slot", align_of::<knhk_mi_slot_t>(), 8),
        ("mi_slot.started", offset_of!(knhk_mi_slot_t, started), 0),
        ("mi_slot.done", offset_of!(knhk_mi_slot_t, done), 8),
        ("mi_slot.base", offset_of!(knhk_mi_slot_t, base), 16),
        ("mi_slot.created", offset_of!(knhk_mi_slot_t, created), 20),
        (
            "mi_slot.completed",
            offset_of!(knhk_mi_slot_t, completed),
            24,
        ),
        ("mi_slot.reserved", offset_of!(knhk_mi_slot_t, reserved), 28),
        ("sizeof block", size_of::<knhk_block_t>(), 896),
        ("alignof block", align_of::<knhk_block_t>(), 64),
        ("block.marking", offset_of!(knhk_block_t, marking), 0),
        ("block.busy", offset_of!(knhk_block_t, busy), 64),
        ("block.or_expect", offset_of!(knhk_block_t, or_expect), 128),
        ("block.absorb", offset_of!(knhk_block_t, absorb), 192),
        ("block.seq", offset_of!(knhk_block_t, seq), 256),
        ("block.flags", offset_of!(knhk_block_t, flags), 320),
        ("block.regs", offset_of!(knhk_block_t, regs), 384),
        ("sizeof event", size_of::<knhk_event_t>(), 16),
        ("alignof event", align_of::<knhk_event_t>(), 4),
        ("event.case_index", offset_of!(knhk_event_t, case_index), 0),
        ("event.op", offset_of!(knhk_event_t, op), 4),
        ("event.task", offset_of!(knhk_event_t, task), 5),
        ("event.flags", offset_of!(knhk_event_t, flags), 6),
        (
            "event.branch_bits",
            offset_of!(knhk_event_t, branch_bits),
            8,
        ),
        (
            "event.branch_bits_hi",
            offset_of!(knhk_event_t, branch_bits_hi),
            12,
        ),
        ("sizeof seal_report", size_of::<knhk_seal_report_t>(), 16),
        ("alignof seal_report", align_of::<knhk_seal_report_t>(), 4),
        (
            "seal_report.status",
            offset_of!(knhk_seal_report_t, status),
            0,
        ),
        (
            "seal_report.element",
            offset_of!(knhk_seal_report_t, element),
            4,
        ),
        (
            "seal_report.index",
            offset_of!(knhk_seal_report_t, index),
            8,
        ),
        (
            "seal_report.other",
            offset_of!(knhk_seal_report_t, other),
            12,
        ),
    ]
}

/// C's values (layout_probe.c), in the same order as [`layouts`].
fn probe() -> Vec<u64> {
    // SAFETY: the probe is a const array defined in layout_probe.c and its length is exported
    // alongside it; no element at or beyond that length is read.
    let len = unsafe { knhk_layout_probe_len } as usize;
    assert!(
        len <= 128,
        "grow the extern declaration of knhk_layout_probe"
    );
    (0..len)
        // SAFETY: i < len, the probe array's real length.
        .map(|i| unsafe { *core::ptr::addr_of!(knhk_layout_probe).cast::<u64>().add(i) })
        .collect()
}

#[test]
fn struct_layouts_match_c() {
    let table = layouts();
    let c = probe();
    assert_eq!(
        c.len(),
        table.len(),
        "layout_probe.c and this table list different fields"
    );
    for ((name, rust, _), c) in table.iter().zip(c) {
        assert_eq!(*rust as u64, c, "{name}: Rust {rust}, C {c}");
    }
}

#[test]
fn layouts_pinned_with_abi_version() {
    assert_eq!(
        KNHK_ABI_VERSION, PINNED_ABI,
        "KNHK_ABI_VERSION changed: set PINNED_ABI and re-pin the layouts for the new ABI"
    );
    let table = layouts();
    let c = probe();
    assert_eq!(c.len(), table.len());
    for ((name, _, pinned), c) in table.iter().zip(c) {
        assert_eq!(
            c, *pinned,
            "{name}: C {c}, pinned {pinned} for ABI {PINNED_ABI}: a public layout changed \
             without an ABI bump; bump KNHK_ABI_VERSION in c/include/knhk/version.h and re-pin"
        );
    }
}

#[test]
fn abi_version_matches_header() {
    // SAFETY: knhk_abi_version takes no arguments and touches no state.
    assert_eq!(unsafe { knhk_abi_version() }, KNHK_ABI_VERSION);
}

#[test]
fn version_matches_header_and_workspace() {
    // SAFETY: the version functions take no arguments and touch no state; the string is static
    // and NUL-terminated.
    let (hex, string) = unsafe {
        (
            knhk_version(),
            core::ffi::CStr::from_ptr(knhk_version_string()),
        )
    };
    assert_eq!(hex, KNHK_VERSION_HEX);
    assert_eq!(
        KNHK_VERSION_HEX,
        (KNHK_VERSION_MAJOR << 16) | (KNHK_VERSION_MINOR << 8) | KNHK_VERSION_PATCH
    );
    let numbers = format!("{KNHK_VERSION_MAJOR}.{KNHK_VERSION_MINOR}.{KNHK_VERSION_PATCH}");
    assert_eq!(string.to_str().unwrap(), numbers);
    assert_eq!(&KNHK_VERSION_STRING[..], format!("{numbers}\0").as_bytes());
    assert_eq!(
        numbers,
        env!("CARGO_PKG_VERSION"),
        "c/include/knhk/version.h and the workspace version (Cargo.toml) differ"
    );
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
