/* C's view of every public struct layout, read by tests/layout.rs. Compiled without
 * KNHK_STATIC_LINKING_ONLY: what a program linking the shared object sees. */
#include <stddef.h>
#include <stdint.h>
#include "knhk.h"

#define ENTRY(type, field) offsetof(type, field)

const uint64_t knhk_layout_probe[] = {
    sizeof(knhk_term_t), _Alignof(knhk_term_t),
    ENTRY(knhk_term_t, op), ENTRY(knhk_term_t, lhs), ENTRY(knhk_term_t, rhs_is_reg),
    ENTRY(knhk_term_t, rhs_reg), ENTRY(knhk_term_t, reserved), ENTRY(knhk_term_t, rhs_const),

    sizeof(knhk_guard_t), _Alignof(knhk_guard_t),
    ENTRY(knhk_guard_t, term), ENTRY(knhk_guard_t, combine), ENTRY(knhk_guard_t, reserved),

    sizeof(knhk_branch_t), _Alignof(knhk_branch_t),
    ENTRY(knhk_branch_t, conditions), ENTRY(knhk_branch_t, or_expect), ENTRY(knhk_branch_t, guard),

    sizeof(knhk_task_t), _Alignof(knhk_task_t),
    ENTRY(knhk_task_t, pre), ENTRY(knhk_task_t, post), ENTRY(knhk_task_t, cancel_conditions),
    ENTRY(knhk_task_t, cancel_tasks), ENTRY(knhk_task_t, or_expect_all), ENTRY(knhk_task_t, join),
    ENTRY(knhk_task_t, split), ENTRY(knhk_task_t, nbranches), ENTRY(knhk_task_t, default_branch),
    ENTRY(knhk_task_t, ndefaults), ENTRY(knhk_task_t, race), ENTRY(knhk_task_t, first_branch),
    ENTRY(knhk_task_t, mi),

    sizeof(knhk_mi_spec_t), _Alignof(knhk_mi_spec_t),
    ENTRY(knhk_mi_spec_t, minimum), ENTRY(knhk_mi_spec_t, maximum), ENTRY(knhk_mi_spec_t, threshold),
    ENTRY(knhk_mi_spec_t, flags), ENTRY(knhk_mi_spec_t, count_reg), ENTRY(knhk_mi_spec_t, slot),
    ENTRY(knhk_mi_spec_t, reserved),

    sizeof(knhk_hot_storage_t), _Alignof(knhk_hot_storage_t),

    sizeof(knhk_net_t), _Alignof(knhk_net_t),
    ENTRY(knhk_net_t, tasks), ENTRY(knhk_net_t, branches), ENTRY(knhk_net_t, hot),
    ENTRY(knhk_net_t, input),
    ENTRY(knhk_net_t, output), ENTRY(knhk_net_t, nconditions), ENTRY(knhk_net_t, ntasks),
    ENTRY(knhk_net_t, sealed), ENTRY(knhk_net_t, nflows),

    sizeof(knhk_case_t), _Alignof(knhk_case_t),
    ENTRY(knhk_case_t, marking), ENTRY(knhk_case_t, busy), ENTRY(knhk_case_t, or_expect),
    ENTRY(knhk_case_t, absorb), ENTRY(knhk_case_t, seq), ENTRY(knhk_case_t, flags),
    ENTRY(knhk_case_t, reserved), ENTRY(knhk_case_t, mi_live), ENTRY(knhk_case_t, reserved2),
    ENTRY(knhk_case_t, regs), ENTRY(knhk_case_t, mi),

    sizeof(knhk_mi_slot_t), _Alignof(knhk_mi_slot_t),
    ENTRY(knhk_mi_slot_t, started), ENTRY(knhk_mi_slot_t, done), ENTRY(knhk_mi_slot_t, base),
    ENTRY(knhk_mi_slot_t, created), ENTRY(knhk_mi_slot_t, completed),
    ENTRY(knhk_mi_slot_t, reserved),

    sizeof(knhk_block_t), _Alignof(knhk_block_t),
    ENTRY(knhk_block_t, marking), ENTRY(knhk_block_t, busy), ENTRY(knhk_block_t, or_expect),
    ENTRY(knhk_block_t, absorb), ENTRY(knhk_block_t, seq), ENTRY(knhk_block_t, flags),
    ENTRY(knhk_block_t, regs),

    sizeof(knhk_event_t), _Alignof(knhk_event_t),
    ENTRY(knhk_event_t, case_index), ENTRY(knhk_event_t, op), ENTRY(knhk_event_t, task),
    ENTRY(knhk_event_t, flags), ENTRY(knhk_event_t, branch_bits), ENTRY(knhk_event_t, branch_bits_hi),

    sizeof(knhk_seal_report_t), _Alignof(knhk_seal_report_t),
    ENTRY(knhk_seal_report_t, status), ENTRY(knhk_seal_report_t, element),
    ENTRY(knhk_seal_report_t, index), ENTRY(knhk_seal_report_t, other),
};
const uint64_t knhk_layout_probe_len = sizeof knhk_layout_probe / sizeof knhk_layout_probe[0];
