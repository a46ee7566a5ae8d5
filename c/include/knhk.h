/*
 * knhk.h — libknhk, the knhk workflow kernel (C11).
 *
 * libknhk executes 1-safe YAWL nets (see DESIGN.md §2): conditions hold at most one token,
 * tasks are two-phase (start, complete), joins and splits are AND, XOR or OR, flows carry
 * guards over case registers, tasks may cancel regions of conditions and tasks.
 *
 * Contracts that hold for every function below:
 *   - Memory: libknhk never allocates. Every net and case lives in memory the caller owns and
 *     passes in; libknhk keeps no pointer to it after a call returns.
 *   - State: there is no global mutable state. All functions are reentrant.
 *   - Threads: a net is built by one thread; once sealed it is immutable and may be read by any
 *     number of threads at once. A case is owned by one thread at a time (no internal locking).
 *   - Refusals: an operation on a case that returns anything but KNHK_OK leaves the case
 *     byte-for-byte unchanged.
 *   - Pointers: every pointer argument must be non-NULL unless the comment says otherwise;
 *     NULL where a pointer is required returns KNHK_BAD_ARGUMENT (builder and seal) — the hot
 *     case operations do not check for NULL.
 *
 * Stable and static-linking-only parts (the model: zstd's zstd.h):
 *   - Everything in this header is the stable ABI, numbered by KNHK_ABI_VERSION
 *     (knhk/version.h), which is also the shared object's SONAME (libknhk.so.N), except
 *   - the section under KNHK_STATIC_LINKING_ONLY: the short-path tables that knhk_net_seal
 *     derives (knhk_hot_t). Inside knhk_net_t they occupy a fixed-size opaque field
 *     (knhk_hot_storage_t), so the net's size and every other offset are ABI but their
 *     contents are not: they may change in any release without an ABI bump. Define
 *     KNHK_STATIC_LINKING_ONLY before the first #include <knhk.h> only in code linked
 *     statically against the same libknhk sources (libknhk itself, its tests).
 *
 * Exports: every function here is declared KNHK_EXPORT; libknhk is built with
 * -fvisibility=hidden, so the shared object exports exactly these and nothing else.
 */
#if defined(KNHK_STATIC_LINKING_ONLY) && defined(KNHK_H) && !defined(KNHK_H_STATIC_LINKING_ONLY)
#error "define KNHK_STATIC_LINKING_ONLY before the first #include of knhk.h"
#endif

#ifndef KNHK_H
#define KNHK_H

#include <stdint.h>

#include "knhk/version.h"

/* KNHK_EXPORT marks the public API (default visibility; dllexport/dllimport on Windows when
 * KNHK_BUILDING_SHARED / KNHK_USING_SHARED is defined, as libuv's UV_EXTERN). */
#if defined(_WIN32) || defined(__CYGWIN__)
#if defined(KNHK_BUILDING_SHARED)
#define KNHK_EXPORT __declspec(dllexport)
#elif defined(KNHK_USING_SHARED)
#define KNHK_EXPORT __declspec(dllimport)
#else
#define KNHK_EXPORT
#endif
#elif defined(__GNUC__) && __GNUC__ >= 4
#define KNHK_EXPORT __attribute__((visibility("default")))
#else
#define KNHK_EXPORT
#endif

#ifdef __cplusplus
extern "C" {
#endif

/** Capacity of the hot form: one bit per condition and per task in a 64-bit mask. */
#define KNHK_MAX_CONDITIONS 64u
#define KNHK_MAX_TASKS 64u
/** Outgoing flows (branches) per task: one per condition of the 64-bit mask (the input
 *  condition takes no flow, so a sealed net's widest split has 63). Incoming flows are a mask
 *  (knhk_task_t.pre): any number of a net's conditions. */
#define KNHK_MAX_BRANCHES 64u
/** Outgoing flows of all tasks of a net together: one fixed array inside the net (knhk_net_t.branches), each task's
 *  flows contiguous from knhk_task_t.first_branch. 512 = 64 tasks x 8, the capacity every net
 *  had before tasks could be wide (ABI 3), so every net built then still fits. */
#define KNHK_MAX_FLOWS 512u
/** Data registers per case, read by guards. */
#define KNHK_REGISTERS 8u
/** Events per beat (knhk_beat). */
#define KNHK_BEAT_LANES 8u
/** Multiple-instance tasks per net: one fixed slot each in every case (knhk_case_t.mi). */
#define KNHK_MAX_MI_TASKS 4u
/** Instances one activation of a multiple-instance task may create (YAWL's maximum is capped
 *  here: 2^16). A start asking for more, or an add past it, is KNHK_MI_LIMIT. */
#define KNHK_MI_MAX_INSTANCES 65536u
/** Started instances are tracked in a 64-bit window from the oldest unfinished instance of
 *  the task (knhk_mi_slot_t.base): an instance at or past base + KNHK_MI_WINDOW_SIZE cannot start
 *  until the instances before it have finished (status KNHK_MI_WINDOW). Instances complete in any
 *  order; at most 64 run at once beyond the oldest running one. */
#define KNHK_MI_WINDOW_SIZE 64u

/** Status of every operation. Values are stable ABI. */
typedef enum knhk_status {
  KNHK_OK = 0,
  /* --- case operations --- */
  KNHK_NOT_ENABLED = 1,        /* start/fire/cancel_task: the task is not enabled (or is busy) */
  KNHK_NOT_STARTED = 2,        /* complete: the task is not busy (was never started) */
  KNHK_SAFETY_VIOLATION = 3,   /* complete: a produced token would land on a marked condition */
  KNHK_CASE_COMPLETE = 4,      /* the case has already completed or been cancelled */
  KNHK_BAD_TASK = 5,           /* task index out of range for this net */
  KNHK_NOT_SEALED = 6,         /* case operation on a net that was not sealed successfully */
  KNHK_BAD_ARGUMENT = 7,       /* NULL pointer, unknown enum value, beat longer than 8 lanes,
                                  case index out of range */
  /* --- builder --- */
  KNHK_SEALED = 8,             /* builder call on a net that is already sealed */
  KNHK_BAD_CONDITION = 9,      /* condition index out of range */
  KNHK_CAPACITY_CONDITIONS = 10, /* more than KNHK_MAX_CONDITIONS conditions */
  KNHK_CAPACITY_TASKS = 11,    /* more than KNHK_MAX_TASKS tasks */
  KNHK_CAPACITY_BRANCHES = 12, /* more than KNHK_MAX_BRANCHES outgoing flows on one task, or
                                  more than KNHK_MAX_FLOWS in the net */
  KNHK_DUPLICATE_FLOW = 13,    /* the same flow added twice */
  KNHK_BAD_GUARD = 14,         /* guard with an unknown operator or register out of range */
  /* --- seal (validation); knhk_seal_report_t names the element --- */
  KNHK_NO_INPUT = 15,          /* no input condition set */
  KNHK_NO_OUTPUT = 16,         /* no output condition set */
  KNHK_INPUT_HAS_INFLOW = 17,  /* a flow enters the input condition */
  KNHK_OUTPUT_HAS_OUTFLOW = 18, /* a flow leaves the output condition */
  KNHK_TASK_NO_INPUT = 19,     /* a task has no incoming flow */
  KNHK_TASK_NO_OUTPUT = 20,    /* a task has no outgoing flow */
  KNHK_UNREACHABLE = 21,       /* element not reachable from the input condition */
  KNHK_CANNOT_COMPLETE = 22,   /* element from which the output condition cannot be reached */
  KNHK_NO_DEFAULT = 23,        /* XOR/OR split without a default flow */
  KNHK_TWO_DEFAULTS = 24,      /* XOR/OR split with more than one default flow */
  KNHK_MULTI_MERGE = 25,       /* concurrent branches can put two tokens on one condition */
  KNHK_NONLOCAL_OR_JOIN = 26,  /* not returned since ABI 3 (a non-local OR-join is decided, see
                                  KNHK_JOIN_OR, or refused with KNHK_OR_JOIN_CAP) */
  KNHK_INPUT_IS_OUTPUT = 27,   /* input and output are the same condition */
  /* --- blocks --- */
  KNHK_LANE_IDLE = 28,         /* knhk_block_fire/knhk_block_beat: the lane had no event
                                  (KNHK_NO_TASK, or its bit clear); nothing changed */
  /* --- saved cases (knhk_case_save, knhk_case_restore, knhk_case_check) --- */
  KNHK_BAD_LENGTH = 29,        /* restore: not KNHK_CASE_BYTES long; save: room for fewer */
  KNHK_BAD_FORMAT = 30,        /* restore: no KNHK_CASE_MAGIC, another format version, or a
                                  reserved field not zero */
  KNHK_BAD_CHECKSUM = 31,      /* restore: the CRC-32C does not match the bytes */
  KNHK_WRONG_NET = 32,         /* restore: saved from a net with another fingerprint */
  KNHK_BAD_MARKING = 33,       /* a marked condition the net does not have */
  KNHK_BAD_BUSY = 34,          /* a busy task the net does not have */
  KNHK_BAD_FLAGS = 35,         /* unknown flag bits, or a combination no operation produces */
  KNHK_BAD_SIDE_WORDS = 36,    /* or_expect outside the net's OR-join inputs, absorb outside
                                  its discriminator inputs, or absorb on a marked condition */
  KNHK_BAD_CASE_STATE = 37,    /* the flags disagree with the marking: running with the output
                                  marked or nothing left, complete without, cancelled with work */
  KNHK_BAD_ENABLED = 38,       /* restore: the saved enabled set is not the one the net's
                                  rules give for the saved marking */
  /* --- seal, continued --- */
  KNHK_OR_JOIN_CAP = 39,       /* a non-local OR-join whose decision would exceed a seal-time
                                  cap (KNHK_ORJOIN_MAX_STATES, _INPUTS, _KEYS, _WORK); the
                                  report names the OR-join and, in `other`, the cap
                                  (KNHK_ORJOIN_CAP_*) */
  /* --- multiple-instance tasks (ABI 5) --- */
  KNHK_MI_TASK = 40,           /* complete/fire (or a block lane) names a multiple-instance
                                  task: its instances complete one by one
                                  (knhk_instance_complete) */
  KNHK_NOT_MI_TASK = 41,       /* an instance operation names a task that is not
                                  multiple-instance */
  KNHK_BAD_INSTANCE = 42,      /* the instance was not created, or is already started (start),
                                  not started or already completed (complete) */
  KNHK_MI_LIMIT = 43,          /* start: the instance count is outside [minimum, maximum];
                                  add: the task has its maximum, or creates statically */
  KNHK_MI_WINDOW = 44,         /* instance start at or past base + KNHK_MI_WINDOW_SIZE */
  KNHK_BAD_MI = 45,            /* knhk_net_set_mi: minimum 0, minimum > maximum, maximum >
                                  KNHK_MI_MAX_INSTANCES, threshold 0 without KNHK_MI_KEEP,
                                  unknown flag, count register out of range */
  KNHK_CAPACITY_MI = 46,       /* more than KNHK_MAX_MI_TASKS multiple-instance tasks */
  KNHK_BAD_MI_SLOT = 47        /* case check: mi_live or a slot disagrees with the net or with
                                  the busy set (see knhk_case_check) */
} knhk_status;

/** Number of distinct knhk_status values (for tables indexed by status). */
#define KNHK_STATUS_COUNT 48u

/** Caps of the non-local OR-join analysis at seal (see knhk_net_seal and docs/kernel.md). */
#define KNHK_ORJOIN_MAX_STATES 2048u /* states of one exploration (the case's reachable states,
                                        or one OR-join's restricted net) */
#define KNHK_ORJOIN_MAX_INPUTS 6u    /* input conditions of one non-local OR-join */
#define KNHK_ORJOIN_MAX_KEYS 512u    /* enabling states (keys) of all non-local OR-joins of a net */
#define KNHK_ORJOIN_MAX_WORK 16777216u /* states generated, duplicates included, over all of a
                                          net's explorations (bounds seal's time) */
/** knhk_seal_report_t.other for KNHK_OR_JOIN_CAP: which cap was exceeded. */
#define KNHK_ORJOIN_CAP_STATES 0u
#define KNHK_ORJOIN_CAP_INPUTS 1u
#define KNHK_ORJOIN_CAP_KEYS 2u
#define KNHK_ORJOIN_CAP_WORK 3u

/** Join codes. */
typedef enum knhk_join {
  KNHK_JOIN_AND = 0, /* every input condition marked; start consumes all */
  KNHK_JOIN_XOR = 1, /* any input marked; start consumes the lowest-numbered marked one */
  KNHK_JOIN_OR = 2,  /* OR-join. Structured (a matching OR-split, WCP-7): waits for the inputs
                        that the split activated; side state in knhk_case_t.or_expect.
                        Otherwise general (WCP-37, WCP-38), decided as the YAWL engine does:
                        enabled when an input is marked and no state reachable without firing
                        it marks a further input (tables derived at seal; start consumes every
                        marked input). See knhk_net_seal. */
  KNHK_JOIN_DISCRIMINATOR = 3 /* structured discriminator (WCP-9): fires on the first arrival,
                                 absorbs the other branches' tokens until all arrived; side
                                 state in knhk_case_t.absorb */
} knhk_join;

/** Split codes. */
typedef enum knhk_split {
  KNHK_SPLIT_AND = 0, /* every outgoing flow gets a token */
  KNHK_SPLIT_XOR = 1, /* first flow (in order) whose guard is true, else the default flow */
  KNHK_SPLIT_OR = 2   /* every flow whose guard is true, else the default flow */
} knhk_split;

/** Guard comparison operators: `regs[lhs] OP rhs`, rhs a constant or a register. */
typedef enum knhk_guard_op {
  KNHK_GUARD_EQ = 0,
  KNHK_GUARD_NE = 1,
  KNHK_GUARD_LT = 2,
  KNHK_GUARD_LE = 3,
  KNHK_GUARD_GT = 4,
  KNHK_GUARD_GE = 5,
  KNHK_GUARD_BIT = 6,   /* (regs[lhs] & rhs) != 0 */
  KNHK_GUARD_TRUE = 7,  /* always true */
  KNHK_GUARD_FALSE = 8, /* always false */
  KNHK_GUARD_NBIT = 9   /* (regs[lhs] & rhs) == 0 */
} knhk_guard_op;

/** How the two terms of a guard combine. */
typedef enum knhk_guard_combine {
  KNHK_COMBINE_AND = 0, /* term[0] && term[1]; with term[1] = TRUE this is term[0] alone */
  KNHK_COMBINE_OR = 1   /* term[0] || term[1] */
} knhk_guard_combine;

/** One comparison. 16 bytes. */
typedef struct knhk_term {
  uint8_t op;         /* knhk_guard_op */
  uint8_t lhs;        /* register index, < KNHK_REGISTERS */
  uint8_t rhs_is_reg; /* 0: compare with rhs_const; 1: compare with regs[rhs_reg] */
  uint8_t rhs_reg;    /* register index when rhs_is_reg */
  uint32_t reserved;  /* must be 0 */
  int64_t rhs_const;  /* constant operand when !rhs_is_reg */
} knhk_term_t;

/** A guard: two terms and how they combine. Evaluated without branches. 40 bytes. */
typedef struct knhk_guard {
  knhk_term_t term[2];
  uint8_t combine;     /* knhk_guard_combine */
  uint8_t reserved[7]; /* must be 0 */
} knhk_guard_t;

/** One outgoing flow of a task, in evaluation order. */
typedef struct knhk_branch {
  uint64_t conditions; /* the condition bit this flow produces */
  uint64_t or_expect;  /* set at seal: the OR-join inputs this branch activates (WCP-7) */
  knhk_guard_t guard;
} knhk_branch_t;

/** knhk_mi_spec_t.flags. */
#define KNHK_MI_DYNAMIC 1u /* instances may be added while the task runs (YAWL creationMode
                              "dynamic": WCP-15, WCP-36), up to the maximum */
#define KNHK_MI_KEEP 2u    /* at the threshold the task completes but the other instances run on
                              and complete (WCP-34; with threshold 0 the task completes when it
                              starts: WCP-12); the task is not enabled again until they have.
                              Without it the threshold cancels them (YAWL: WCP-35) */
/** knhk_mi_spec_t.count_reg: no count register. */
#define KNHK_MI_NO_REG 0xFFu

/** A multiple-instance task's attributes (knhk_net_set_mi), as YAWL's
 *  multipleInstanceAttributes: minimum, maximum, threshold, creation mode. 16 bytes. */
typedef struct knhk_mi_spec {
  uint32_t minimum;   /* >= 1: instances knhk_start creates when no count is given */
  uint32_t maximum;   /* >= minimum, <= KNHK_MI_MAX_INSTANCES */
  uint32_t threshold; /* completions after which the task completes (capped by the number
                         created); 0 only with KNHK_MI_KEEP */
  uint8_t flags;      /* KNHK_MI_* */
  uint8_t count_reg;  /* register holding the instance count knhk_start reads (WCP-14), or
                         KNHK_MI_NO_REG: the minimum (WCP-13) */
  uint8_t slot;       /* set by knhk_net_set_mi: the task's slot in knhk_case_t.mi, plus 1
                         (0: not a multiple-instance task) */
  uint8_t reserved;   /* must be 0 */
} knhk_mi_spec_t;

/** A task as the builder records it (the general path reads this). One cache line. */
typedef struct knhk_task {
  _Alignas(64) uint64_t pre;   /* input condition mask */
  uint64_t post;               /* union of all branch conditions (AND split output) */
  uint64_t cancel_conditions;  /* conditions emptied when this task completes */
  uint64_t cancel_tasks;       /* tasks withdrawn (busy cleared) when this task completes */
  uint64_t or_expect_all;      /* set at seal: union of branches' or_expect */
  uint8_t join;                /* knhk_join */
  uint8_t split;               /* knhk_split */
  uint8_t nbranches;           /* number of outgoing flows */
  uint8_t default_branch;      /* index of the default flow (XOR/OR), 0xFF when none */
  uint8_t ndefaults;           /* number of flows marked default (seal checks == 1) */
  uint8_t race;                /* set at seal: XOR split: the non-default branches among the
                                  first 8, raced in order (bit k = branch k) */
  uint16_t first_branch;       /* the task's first flow in knhk_net_t.branches; its flows are
                                  branches[first_branch .. first_branch + nbranches) */
  knhk_mi_spec_t mi;           /* multiple instances (mi.slot != 0), since ABI 5 */
} knhk_task_t;

/** The short path's tables inside knhk_net_t, derived at seal (all zero before): opaque, of a
 *  fixed size. Their contents are not ABI; KNHK_STATIC_LINKING_ONLY shows them (knhk_hot_t,
 *  member `tables`). The size leaves room for tables to grow without an ABI bump. */
#define KNHK_HOT_STORAGE_BYTES 24576u

#if defined(KNHK_STATIC_LINKING_ONLY)
#define KNHK_H_STATIC_LINKING_ONLY
/** knhk_hot_meta_t.kind bits, set at seal. */
#define KNHK_HOT 1u           /* fire may take the short path (the rules below, nothing else) */
#define KNHK_HOT_XOR_JOIN 2u  /* ... an XOR join of several inputs: fires on its one marked input
                                 (two or more marked: the general path takes the lowest) */
#define KNHK_HOT_XOR_SPLIT 4u /* ... out_on when its guard holds, else out_on ^ out_flip */
#define KNHK_HOT_ENDS 8u      /* ... and it may mark the output condition */
#define KNHK_HOT_ORJOIN 16u   /* not hot (KNHK_HOT clear): a general OR-join with an AND split, no
                                 cancellation set, in a net without side state: fire decides it
                                 from orj_* (below) and moves its tokens in one short sequence */

/** Per-task byte fields of the short path. 8 bytes, so that a vector path reads one task's
 *  fields as one 64-bit lane. */
typedef struct knhk_hot_meta {
  uint8_t kind;        /* KNHK_HOT_* bits; 0: fire takes the general path */
  uint8_t lhs;         /* XOR split: the guard's register (< KNHK_REGISTERS) */
  uint8_t race;        /* XOR split: the guarded branch's bit, for caller-supplied branch bits */
  uint8_t reserved[5];
} knhk_hot_meta_t;

/** The short path of fire, derived at seal (struct of arrays, indexed by task): a task is hot
 *  when it has an AND or XOR join, no cancellation set, no structured OR-join or discriminator
 *  in its net (a general one keeps no side words),
 *  and an AND split or a two-way XOR split whose guard is one comparison of a register with a
 *  constant. Such a guard holds exactly when (uint64_t)regs[lhs] - lo <= span (unsigned,
 *  wrapping): every comparison with a constant is such a range. The output is out_on when the
 *  guard holds, else out_on ^ out_flip (the default flow). For an AND split out_on == post,
 *  out_flip == 0 and the range is everything. */
typedef struct knhk_hot {
  _Alignas(64) uint64_t pre[KNHK_MAX_TASKS]; /* input conditions */
  uint64_t out_on[KNHK_MAX_TASKS];           /* output when the guard holds */
  uint64_t out_flip[KNHK_MAX_TASKS];         /* out_on ^ the output when it does not */
  uint64_t lo[KNHK_MAX_TASKS];               /* the guard's range: first value ... */
  uint64_t span[KNHK_MAX_TASKS];             /* ... and its length minus one */
  uint64_t task_bit[KNHK_MAX_TASKS];         /* 1 << task: fire's busy test without a shift */
  knhk_hot_meta_t meta[KNHK_MAX_TASKS];
  uint64_t kinds;                            /* the union of every task's meta.kind */
  uint32_t xor_split_reg; /* the register every hot XOR split's guard reads, or
                             KNHK_REGISTERS when they read different ones (or there is none) */
  uint32_t reserved;
  /* Non-local OR-joins (WCP-37/38; knhk_net.c: orjoin_seal). For a general OR-join t, with
   * some but not all inputs marked, the key is (marking & orj_conds[t], (busy & orj_tasks[t])
   * | bit t); it is enabled exactly when the key is in orj_table (open addressing, linear
   * probing from the key's hash, at most orj_probes + 1 slots; an entry with busy 0 is empty).
   * Seal put there the keys of the enabling states among those reachable from the input.
   * Before the lookup, orj_quiet decides the states where nothing upstream can move. */
  uint64_t orj_general;                    /* OR-joins decided by these tables */
  uint64_t orj_conds[KNHK_MAX_TASKS];      /* conditions from which an input can be reached */
  uint64_t orj_tasks[KNHK_MAX_TASKS];      /* tasks from which an input can be reached */
  uint64_t orj_quiet[KNHK_MAX_TASKS];      /* orj_conds less the inputs that no task of
                                              orj_tasks consumes: with none of them marked
                                              and none of orj_tasks busy, nothing upstream
                                              can move, and the join is enabled (no lookup) */
  uint32_t orj_probes;                     /* longest probe sequence of a stored key, minus 1 */
  uint32_t orj_keys;                       /* keys stored */
  struct {
    uint64_t marking, busy;
  } orj_table[2u * KNHK_ORJOIN_MAX_KEYS];
} knhk_hot_t;
#endif /* KNHK_STATIC_LINKING_ONLY */

typedef union knhk_hot_storage {
  _Alignas(64) uint64_t opaque[KNHK_HOT_STORAGE_BYTES / 8u];
#if defined(KNHK_STATIC_LINKING_ONLY)
  knhk_hot_t tables;
#endif
} knhk_hot_storage_t;

#if defined(KNHK_STATIC_LINKING_ONLY)
_Static_assert(sizeof(knhk_hot_storage_t) == KNHK_HOT_STORAGE_BYTES &&
                   _Alignof(knhk_hot_t) <= 64,
               "knhk_hot_t outgrew knhk_hot_storage_t: that is an ABI change");
#endif

/** A net in caller-owned memory. Build with knhk_net_* and seal before running cases.
 *  The fields are readable; write them only through the builder. */
typedef struct knhk_net {
  knhk_task_t tasks[KNHK_MAX_TASKS];
  knhk_branch_t branches[KNHK_MAX_FLOWS]; /* every task's outgoing flows, task by task, each
                                             task's in evaluation order (knhk_task_t.first_branch,
                                             .nbranches); since ABI 4 (before: [64][8]) */
  knhk_hot_storage_t hot;       /* set at seal: the short path's tables (opaque, see above) */
  _Alignas(64) uint64_t input;  /* input condition bit (0 until set) */
  uint64_t output;              /* output condition bit (0 until set) */
  uint32_t nconditions;
  uint32_t ntasks;
  uint32_t sealed;              /* 1 after a successful knhk_net_seal */
  uint32_t nflows;              /* outgoing flows of all tasks (used entries of branches) */
} knhk_net_t;

/** Case flags (knhk_case_t.flags). */
#define KNHK_FLAG_DONE 1u                 /* completed or cancelled: no further operation */
#define KNHK_FLAG_COMPLETED 2u            /* the case reached completion */
#define KNHK_FLAG_CANCELLED 4u            /* knhk_cancel_case was called (WCP-20) */
#define KNHK_FLAG_EXPLICIT_TERMINATION 8u /* output marked while other work remained; it was
                                             cleared (WCP-43) */
#define KNHK_FLAG_IMPLICIT_TERMINATION 16u /* nothing marked, nothing busy (WCP-11) */

/** The instances of one activation of a multiple-instance task (knhk_case_t.mi). 32 bytes.
 *  Instance ids are 0 .. created-1. Every instance below base has completed; instance
 *  base + k is started when bit k of `started` is set and completed when bit k of `done` is
 *  (base moves past completed instances at once, so bit 0 of done is always clear); an
 *  instance at or past base + 64 has not started. A slot not in use is all zero. */
typedef struct knhk_mi_slot {
  uint64_t started;  /* bit k: instance base + k started (completed ones included) */
  uint64_t done;     /* bit k: instance base + k completed */
  uint32_t base;      /* the oldest instance not completed */
  uint32_t created;   /* instances created (0: the slot is not in use) */
  uint32_t completed; /* instances completed: base + popcount(done) */
  uint32_t reserved;  /* 0 */
} knhk_mi_slot_t;

/** The state of one case: four cache lines, no pointers. */
typedef struct knhk_case {
  _Alignas(64) uint64_t marking; /* one bit per marked condition */
  uint64_t busy;                 /* one bit per started, not yet completed task */
  uint64_t or_expect;            /* OR-join inputs still expected (WCP-7) */
  uint64_t absorb;               /* discriminator inputs whose next token is absorbed (WCP-9) */
  uint64_t seq;                  /* number of successful operations on this case */
  uint32_t flags;                /* KNHK_FLAG_* */
  uint32_t reserved;
  uint64_t mi_live;              /* bit t: multiple-instance task t has unfinished instances
                                    (busy, or past its threshold with KNHK_MI_KEEP); its slot is
                                    mi[tasks[t].mi.slot - 1] (since ABI 5) */
  uint64_t reserved2;
  _Alignas(64) int64_t regs[KNHK_REGISTERS]; /* data registers read by guards */
  _Alignas(64) knhk_mi_slot_t mi[KNHK_MAX_MI_TASKS]; /* multiple instances (since ABI 5) */
} knhk_case_t;

/** Eight cases side by side, struct of arrays: lane i of every field is case i (the fields
 *  mean what knhk_case_t's do). knhk_block_fire runs a beat over a block with vector loads and
 *  stores where the CPU has them. Copy a case in or out with knhk_block_set/knhk_block_get.
 *  Caller-owned memory; a block is owned by one thread at a time, like a case. 896 bytes. */
typedef struct knhk_block {
  _Alignas(64) uint64_t marking[KNHK_BEAT_LANES];
  uint64_t busy[KNHK_BEAT_LANES];
  uint64_t or_expect[KNHK_BEAT_LANES];
  uint64_t absorb[KNHK_BEAT_LANES];
  uint64_t seq[KNHK_BEAT_LANES];
  uint64_t flags[KNHK_BEAT_LANES]; /* KNHK_FLAG_* (the case's 32-bit flags, zero-extended) */
  int64_t regs[KNHK_REGISTERS][KNHK_BEAT_LANES]; /* regs[r][i]: register r of lane i */
} knhk_block_t;

/** knhk_block_fire: a lane with no event this beat. */
#define KNHK_NO_TASK 0xFFu

/** Case states reported by knhk_case_state. */
typedef enum knhk_state {
  KNHK_STATE_RUNNING = 0,
  KNHK_STATE_COMPLETE = 1,
  KNHK_STATE_DEADLOCKED = 2, /* tokens remain, no task enabled, nothing busy, no live
                                instances */
  KNHK_STATE_CANCELLED = 3
} knhk_state;

/** Event operations for knhk_beat. */
typedef enum knhk_op {
  KNHK_OP_START = 0,
  KNHK_OP_COMPLETE = 1,
  KNHK_OP_FIRE = 2,
  KNHK_OP_CANCEL_TASK = 3,
  KNHK_OP_CANCEL_CASE = 4
} knhk_op;

/** Event flags (knhk_event_t.flags). */
#define KNHK_EVENT_USE_BITS 1u /* complete/fire with branch_bits instead of evaluating guards */

/** One (case, event) pair of a beat. 16 bytes. */
typedef struct knhk_event {
  uint32_t case_index;  /* index into the beat's case array */
  uint8_t op;           /* knhk_op */
  uint8_t task;         /* task index */
  uint16_t flags;       /* KNHK_EVENT_* */
  uint32_t branch_bits; /* with KNHK_EVENT_USE_BITS: bit k = flow k's predicate is true */
  uint32_t branch_bits_hi; /* with KNHK_EVENT_USE_BITS: bit k = flow 32 + k's predicate (wide
                              tasks); 0 otherwise */
} knhk_event_t;

/** Kinds of element a seal report can name. */
typedef enum knhk_element {
  KNHK_ELEMENT_NONE = 0,
  KNHK_ELEMENT_CONDITION = 1,
  KNHK_ELEMENT_TASK = 2
} knhk_element;

/** What knhk_net_seal found: the status and the element it concerns. */
typedef struct knhk_seal_report {
  uint32_t status;  /* knhk_status */
  uint32_t element; /* knhk_element */
  uint32_t index;   /* condition or task index */
  uint32_t other;   /* second element involved (e.g. the other branch's task), or 0xFFFFFFFF */
} knhk_seal_report_t;

/* ------------------------------------------------------------------------------------------
 * Version and names
 * ------------------------------------------------------------------------------------------ */

/** Returns KNHK_ABI_VERSION as the library was built. Compare with the header's value: a
 *  program built against another ABI must not run against this library. */
KNHK_EXPORT uint32_t knhk_abi_version(void);

/** Returns KNHK_VERSION_HEX as the library was built ((major << 16) | (minor << 8) | patch). */
KNHK_EXPORT uint32_t knhk_version(void);

/** Returns KNHK_VERSION_STRING as the library was built ("MAJOR.MINOR.PATCH"): static, owned
 *  by the library. */
KNHK_EXPORT const char *knhk_version_string(void);

/** Returns a static, NUL-terminated name for a status ("KNHK_OK", ...). Never NULL: unknown
 *  values give "KNHK_UNKNOWN_STATUS". The string is owned by the library; do not free it. */
KNHK_EXPORT const char *knhk_status_name(uint32_t status);

/* ------------------------------------------------------------------------------------------
 * Building a net (cold path; one thread)
 * ------------------------------------------------------------------------------------------ */

/** Clears *net into an empty, unsealed net. Returns KNHK_OK or KNHK_BAD_ARGUMENT. */
KNHK_EXPORT knhk_status knhk_net_init(knhk_net_t *net);

/** Adds a condition; its index (0, 1, ...) goes to *out_index (may be NULL).
 *  Returns KNHK_OK, KNHK_SEALED or KNHK_CAPACITY_CONDITIONS. */
KNHK_EXPORT knhk_status knhk_net_add_condition(knhk_net_t *net, uint32_t *out_index);

/** Adds a task with a join and a split code; its index goes to *out_index (may be NULL).
 *  Returns KNHK_OK, KNHK_SEALED, KNHK_CAPACITY_TASKS or KNHK_BAD_ARGUMENT (unknown code). */
KNHK_EXPORT knhk_status knhk_net_add_task(knhk_net_t *net, uint32_t join, uint32_t split,
                                          uint32_t *out_index);

/** Marks condition `condition` as the net's input (resp. output) condition.
 *  Returns KNHK_OK, KNHK_SEALED or KNHK_BAD_CONDITION. */
KNHK_EXPORT knhk_status knhk_net_set_input(knhk_net_t *net, uint32_t condition);
KNHK_EXPORT knhk_status knhk_net_set_output(knhk_net_t *net, uint32_t condition);

/** Adds the flow condition -> task. Returns KNHK_OK, KNHK_SEALED, KNHK_BAD_CONDITION,
 *  KNHK_BAD_TASK or KNHK_DUPLICATE_FLOW. */
KNHK_EXPORT knhk_status knhk_net_add_input_flow(knhk_net_t *net, uint32_t condition, uint32_t task);

/** Adds the flow task -> condition as the task's next branch (branches are evaluated in the
 *  order they are added). `guard` may be NULL (always true; AND splits ignore guards).
 *  `is_default` marks the default flow of an XOR/OR split. Returns KNHK_OK, KNHK_SEALED,
 *  KNHK_BAD_TASK, KNHK_BAD_CONDITION, KNHK_CAPACITY_BRANCHES (the task has KNHK_MAX_BRANCHES
 *  flows, or the net KNHK_MAX_FLOWS), KNHK_DUPLICATE_FLOW or KNHK_BAD_GUARD.
 *
 *  Wide tasks: flows may be added to tasks in any order; the net keeps each task's flows
 *  contiguous in knhk_net_t.branches (later tasks' flows move up by one). An AND split of any
 *  width, and an AND or XOR join of any number of inputs, stays on fire's short path; an XOR
 *  split of more than two flows and every OR split take the general path, which evaluates
 *  each flow's guard. In a net with a general OR-join, seal explores every outcome of every OR
 *  split (2^n - 1 for n flows): OR splits of more than about 20 flows there exceed
 *  KNHK_ORJOIN_MAX_WORK and the seal refuses with KNHK_OR_JOIN_CAP. */
KNHK_EXPORT knhk_status knhk_net_add_output_flow(knhk_net_t *net, uint32_t task, uint32_t condition,
                                                 const knhk_guard_t *guard, uint32_t is_default);

/** Adds `condition` (resp. task `victim`) to the cancellation set of `task`: when `task`
 *  completes, the condition is emptied (resp. the victim is withdrawn). Returns KNHK_OK,
 *  KNHK_SEALED, KNHK_BAD_TASK or KNHK_BAD_CONDITION. */
KNHK_EXPORT knhk_status knhk_net_add_cancel_condition(knhk_net_t *net, uint32_t task,
                                                      uint32_t condition);
KNHK_EXPORT knhk_status knhk_net_add_cancel_task(knhk_net_t *net, uint32_t task, uint32_t victim);

/** Makes `task` a multiple-instance task (WCP-12..15, 34..36) with the attributes in *spec
 *  (its `slot` is ignored and set here; a second call replaces the attributes). Starting the
 *  task creates its instances (knhk_start, knhk_start_mi); each instance starts and completes
 *  on its own (knhk_instance_start, knhk_instance_complete); the task completes (cancellation
 *  set, then split) with the instance completion that reaches min(threshold, created), or that
 *  completes every created instance. The instances not completed then are withdrawn (slot
 *  cleared: YAWL's cancelling partial join, WCP-35), or with KNHK_MI_KEEP run on to their own
 *  completion (WCP-34, WCP-12). A dynamic task (KNHK_MI_DYNAMIC) gains instances while it runs
 *  (knhk_instance_add), up to its maximum (WCP-15, WCP-36). An MI task never takes fire's
 *  short path; in a net with a KNHK_MI_KEEP task no task that marks the output does either.
 *  Withdrawing an MI task (a cancellation set, knhk_cancel_task, knhk_cancel_case, explicit
 *  termination) withdraws its instances. Returns KNHK_OK, KNHK_BAD_ARGUMENT (spec NULL),
 *  KNHK_SEALED, KNHK_BAD_TASK, KNHK_BAD_MI or KNHK_CAPACITY_MI (a further task past
 *  KNHK_MAX_MI_TASKS). */
KNHK_EXPORT knhk_status knhk_net_set_mi(knhk_net_t *net, uint32_t task, const knhk_mi_spec_t *spec);

/** Validates the net once and, on success, makes it immutable and runnable. Checks, in this
 *  order: input/output set and distinct, no flow into the input or out of the output, every
 *  task has an input and an output flow, one default per XOR/OR split, every element
 *  reachable from the input and able to reach the output, no multi-merge (concurrent
 *  branches of an AND/OR split reaching one condition). A task with a single input condition
 *  and an AND or OR join is normalised to XOR (same behaviour).
 *
 *  OR-joins: one matched by a structured OR-split (each split branch reaches exactly one
 *  join input, together all of them) is the structured synchronizing merge (WCP-7: side
 *  words, a mask test at run time). Any other is general (WCP-37, WCP-38) and decided as the
 *  YAWL engine decides it: enabled when an input is marked and no state reachable from the
 *  current one without firing it marks the marked inputs and a further one, asked of the net
 *  restricted to what can reach the join's inputs, with busy tasks able to complete,
 *  cancellation sets applied, any split outcome possible (data is not known), other OR-joins
 *  and discriminators taking one token from one input, and a completion onto a marked
 *  condition impossible (as in the kernel). Seal explores the case's reachable states and, per
 *  general OR-join, the restricted net's, and stores the enabling states' keys (marking and
 *  busy set within the restricted net) in the net; at run time the decision is two masks and
 *  a hash-table probe, no allocation and no exploration. Start of a general OR-join consumes
 *  every marked input. A state seal did not reach (only a restored case can be in one) finds
 *  no key: the OR-join waits, unless nothing upstream of it can move (then it is enabled).
 *  Seal refuses with KNHK_OR_JOIN_CAP (report: the OR-join, and in `other` the cap) when an
 *  exploration would pass KNHK_ORJOIN_MAX_STATES states, an OR-join has more than
 *  KNHK_ORJOIN_MAX_INPUTS inputs, the net more than KNHK_ORJOIN_MAX_KEYS enabling keys, or
 *  the explorations together generate more than KNHK_ORJOIN_MAX_WORK states (duplicates
 *  included: this bounds seal's time, as the others bound its memory). The exploration runs
 *  on the stack (about 130 KiB, only for nets with a general OR-join).
 *
 *  `report` may be NULL; when given it receives the status and the element that failed.
 *  Returns KNHK_OK or the first defect's status; a failed seal leaves the net unsealed and
 *  otherwise unchanged. */
KNHK_EXPORT knhk_status knhk_net_seal(knhk_net_t *net, knhk_seal_report_t *report);

/** The OR-joins of a sealed net decided by the general rule (bit t = task t): those without a
 *  matching structured OR-split (WCP-37, WCP-38). 0 for NULL, an unsealed net, or a net whose
 *  OR-joins are all structured (WCP-7, side words). */
KNHK_EXPORT uint64_t knhk_net_general_or_joins(const knhk_net_t *net);

/** Fills guard with the single comparison `regs[lhs] op constant` (term[1] = TRUE). */
KNHK_EXPORT void knhk_guard_const(knhk_guard_t *guard, uint32_t op, uint32_t lhs, int64_t constant);

/* ------------------------------------------------------------------------------------------
 * Running cases (hot path: no allocation, no locks, no syscalls)
 * ------------------------------------------------------------------------------------------ */

/** Initialises *c: a token on the input condition, nothing busy, registers zero.
 *  Returns KNHK_OK or KNHK_NOT_SEALED. */
KNHK_EXPORT knhk_status knhk_case_init(const knhk_net_t *net, knhk_case_t *c);

/** The set of enabled tasks (bit t = task t may start). 0 for a done case. */
KNHK_EXPORT uint64_t knhk_enabled(const knhk_net_t *net, const knhk_case_t *c);

/** Starts task t: consumes its input tokens per its join code and marks it busy.
 *  Returns KNHK_OK, KNHK_BAD_TASK, KNHK_CASE_COMPLETE or KNHK_NOT_ENABLED. */
KNHK_EXPORT knhk_status knhk_start(const knhk_net_t *net, knhk_case_t *c, uint32_t t);

/** Completes busy task t: applies its cancellation set, then produces tokens per its split
 *  (guards evaluated on c->regs). Returns KNHK_OK, KNHK_BAD_TASK, KNHK_CASE_COMPLETE,
 *  KNHK_NOT_STARTED or KNHK_SAFETY_VIOLATION. */
KNHK_EXPORT knhk_status knhk_complete(const knhk_net_t *net, knhk_case_t *c, uint32_t t);

/** As knhk_complete, but bit k of branch_bits is the caller's value of flow k's predicate
 *  (for predicates richer than a guard). Guards are not evaluated. Flows 32 and up (wide
 *  tasks) read as false: use knhk_complete_bits64 for them. */
KNHK_EXPORT knhk_status knhk_complete_bits(const knhk_net_t *net, knhk_case_t *c, uint32_t t,
                                           uint32_t branch_bits);
/** knhk_complete_bits with a predicate bit for each of up to KNHK_MAX_BRANCHES flows. */
KNHK_EXPORT knhk_status knhk_complete_bits64(const knhk_net_t *net, knhk_case_t *c, uint32_t t,
                                             uint64_t branch_bits);

/** Start then complete, atomically: on a refusal of either half the case is unchanged.
 *  Returns the statuses of knhk_start and knhk_complete. */
KNHK_EXPORT knhk_status knhk_fire(const knhk_net_t *net, knhk_case_t *c, uint32_t t);
KNHK_EXPORT knhk_status knhk_fire_bits(const knhk_net_t *net, knhk_case_t *c, uint32_t t,
                                       uint32_t branch_bits);
/** Fires tasks[0], tasks[1], ..., tasks[n - 1] in order on one case, each as knhk_fire would
 *  (each fire atomic), and stops at the first refusal: the case is then as after the fires
 *  before it. *fired (may be NULL) receives the number of tasks fired. Returns KNHK_OK when all
 *  n fired, else the refused fire's status; KNHK_BAD_ARGUMENT (nothing fired) for tasks NULL
 *  with n > 0. For a case's known next steps (a replay, a batch of one case's events): the
 *  call's own cost, about 4 ticks on the Zen 3 machine of docs/performance.md, is paid once. */
KNHK_EXPORT knhk_status knhk_fire_sequence(const knhk_net_t *net, knhk_case_t *c,
                                           const uint32_t *tasks, uint32_t n, uint32_t *fired);
/** knhk_fire_bits with a predicate bit for each of up to KNHK_MAX_BRANCHES flows (wide tasks);
 *  knhk_fire_bits(.., b) is knhk_fire_bits64(.., b) with flows 32 and up false. */
KNHK_EXPORT knhk_status knhk_fire_bits64(const knhk_net_t *net, knhk_case_t *c, uint32_t t,
                                         uint64_t branch_bits);

/** Cancels task t (WCP-19): a busy task is withdrawn; an enabled task loses the tokens that
 *  enable it. Returns KNHK_OK, KNHK_BAD_TASK, KNHK_CASE_COMPLETE or KNHK_NOT_ENABLED. */
KNHK_EXPORT knhk_status knhk_cancel_task(const knhk_net_t *net, knhk_case_t *c, uint32_t t);

/** Cancels the whole case (WCP-20): clears marking and busy set, flags it CANCELLED.
 *  Returns KNHK_OK or KNHK_CASE_COMPLETE. */
KNHK_EXPORT knhk_status knhk_cancel_case(const knhk_net_t *net, knhk_case_t *c);

/* ------------------------------------------------------------------------------------------
 * Multiple-instance tasks (knhk_net_set_mi; cold path: no allocation, no locks, no syscalls)
 *
 * Starting an MI task (knhk_start, knhk_start_mi) consumes its input tokens as any start and
 * creates instances 0 .. n-1 in the task's slot (knhk_case_t.mi). With threshold 0 (and
 * KNHK_MI_KEEP) the task then completes at once (WCP-12). Instance operations name the task
 * and the instance id; each is atomic like every case operation: a refusal leaves the case
 * byte-for-byte unchanged (the slot included), and a success counts in seq.
 * ------------------------------------------------------------------------------------------ */

/** Starts MI task t creating `count` instances (WCP-14: a count known at run time). knhk_start
 *  on an MI task creates regs[count_reg] instances, or the minimum without a count register.
 *  Returns knhk_start's statuses, KNHK_NOT_MI_TASK, or KNHK_MI_LIMIT (count outside
 *  [minimum, maximum]). */
KNHK_EXPORT knhk_status knhk_start_mi(const knhk_net_t *net, knhk_case_t *c, uint32_t t,
                                      uint32_t count);

/** Starts instance `instance` of MI task t. Returns KNHK_OK, KNHK_BAD_TASK, KNHK_CASE_COMPLETE,
 *  KNHK_NOT_MI_TASK, KNHK_NOT_STARTED (the task has no live instances), KNHK_BAD_INSTANCE (not
 *  created, or already started) or KNHK_MI_WINDOW. */
KNHK_EXPORT knhk_status knhk_instance_start(const knhk_net_t *net, knhk_case_t *c, uint32_t t,
                                            uint32_t instance);

/** Completes started instance `instance` of MI task t; when that reaches the threshold (or
 *  completes every instance) the task completes too, its split's guards evaluated on c->regs.
 *  Returns KNHK_OK, KNHK_BAD_TASK, KNHK_CASE_COMPLETE, KNHK_NOT_MI_TASK, KNHK_NOT_STARTED,
 *  KNHK_BAD_INSTANCE (not created, not started, or already completed) or, when the task's
 *  completion would put a token on a marked condition, KNHK_SAFETY_VIOLATION (the instance
 *  stays started). */
KNHK_EXPORT knhk_status knhk_instance_complete(const knhk_net_t *net, knhk_case_t *c, uint32_t t,
                                               uint32_t instance);
/** knhk_instance_complete with the caller's predicate bits for the task's split (as
 *  knhk_complete_bits64), used when the instance completes the task. */
KNHK_EXPORT knhk_status knhk_instance_complete_bits64(const knhk_net_t *net, knhk_case_t *c,
                                                      uint32_t t, uint32_t instance,
                                                      uint64_t branch_bits);

/** Creates one more instance of running dynamic MI task t (WCP-15, WCP-36); its id (the
 *  number created before) goes to *out_instance (may be NULL). Returns KNHK_OK, KNHK_BAD_TASK,
 *  KNHK_CASE_COMPLETE, KNHK_NOT_MI_TASK, KNHK_NOT_STARTED (the task is not running) or
 *  KNHK_MI_LIMIT (the maximum is reached, or the task creates statically). */
KNHK_EXPORT knhk_status knhk_instance_add(const knhk_net_t *net, knhk_case_t *c, uint32_t t,
                                          uint32_t *out_instance);

/** Instance states (knhk_instance_state_of). */
typedef enum knhk_instance_state {
  KNHK_INSTANCE_NONE = 0,      /* no such instance in the task's live slot (never created,
                                  or withdrawn or finished with the slot) */
  KNHK_INSTANCE_CREATED = 1,   /* created, not started */
  KNHK_INSTANCE_STARTED = 2,   /* started, not completed */
  KNHK_INSTANCE_COMPLETED = 3  /* completed while the slot is live */
} knhk_instance_state;

/** The state of instance `instance` of task t in *c (a knhk_instance_state; NONE for a task
 *  that is not MI or has no live slot). Reads only. */
KNHK_EXPORT uint32_t knhk_instance_state_of(const knhk_net_t *net, const knhk_case_t *c, uint32_t t,
                                         uint32_t instance);

/** The slot of MI task t in *c (NULL when t is not an MI task of a sealed net). */
KNHK_EXPORT const knhk_mi_slot_t *knhk_instance_slot(const knhk_net_t *net, const knhk_case_t *c,
                                                     uint32_t t);

/** Running, complete, deadlocked or cancelled. */
KNHK_EXPORT knhk_state knhk_case_state(const knhk_net_t *net, const knhk_case_t *c);

/** Executes a beat: events[0..n) in order, event i on cases[events[i].case_index], statuses
 *  to statuses[i]. n <= KNHK_BEAT_LANES. Lanes on distinct cases are independent; lanes on the
 *  same case apply in lane order. Returns KNHK_OK when the beat ran (each lane's own status is
 *  in statuses), KNHK_BAD_ARGUMENT when n > KNHK_BEAT_LANES (nothing ran) and KNHK_NOT_SEALED.
 *  A lane whose case_index >= ncases or op is unknown gets KNHK_BAD_ARGUMENT. */
KNHK_EXPORT knhk_status knhk_beat(const knhk_net_t *net, knhk_case_t *cases, uint32_t ncases,
                                  const knhk_event_t *events, uint32_t n, uint8_t *statuses);

/** The code paths of a beat or a block fire (knhk_beat_path). All give identical results. */
typedef enum knhk_beat_path_kind {
  KNHK_BEAT_PATH_SCALAR = 0, /* portable C, lane by lane */
  KNHK_BEAT_PATH_AVX512 = 1, /* x86-64 with AVX-512 F/CD/VL: the lanes of a full beat (or a
                                block) that fire hot tasks on distinct cases run as one
                                vector; every other lane takes the scalar rules */
  KNHK_BEAT_PATH_AVX2 = 2    /* x86-64 with AVX2: the same, as two 4-lane halves */
} knhk_beat_path_kind;

/** The path knhk_block_fire and knhk_beat_simd take on this CPU: a knhk_beat_path_kind value,
 *  the widest the CPU has (AVX-512, else AVX2, else scalar). Chosen at run time from the CPU's
 *  features (never at build time); libknhk keeps no state for it. */
KNHK_EXPORT uint32_t knhk_beat_path(void);

/** 1 when this CPU can run `path` (a knhk_beat_path_kind value), else 0 (unknown values, or a
 *  path of another architecture). KNHK_BEAT_PATH_SCALAR is always 1. */
KNHK_EXPORT uint32_t knhk_path_supported(uint32_t path);

/** knhk_beat on the scalar path: same contract, same statuses, same case bytes. knhk_beat
 *  takes this path: on the machines measured (docs/performance.md) it is faster than the
 *  gather-based vector path. */
KNHK_EXPORT knhk_status knhk_beat_scalar(const knhk_net_t *net, knhk_case_t *cases, uint32_t ncases,
                                         const knhk_event_t *events, uint32_t n, uint8_t *statuses);

/** knhk_beat on the SIMD path where the CPU has it (knhk_beat_path), else scalar: same
 *  contract, same statuses, same case bytes. For benchmarks and tests that compare paths. */
KNHK_EXPORT knhk_status knhk_beat_simd(const knhk_net_t *net, knhk_case_t *cases, uint32_t ncases,
                                       const knhk_event_t *events, uint32_t n, uint8_t *statuses);

/** knhk_beat on a named path (knhk_beat_path_kind): same contract, statuses and bytes. A beat
 *  of fewer than 8 events runs on the scalar path. Returns KNHK_BAD_ARGUMENT (nothing ran)
 *  when this CPU cannot run `path` (knhk_path_supported). For benchmarks and tests that
 *  compare paths: the choice is the caller's, per call; libknhk keeps no setting. */
KNHK_EXPORT knhk_status knhk_beat_on(const knhk_net_t *net, knhk_case_t *cases, uint32_t ncases,
                                     const knhk_event_t *events, uint32_t n, uint8_t *statuses,
                                     uint32_t path);

/* ------------------------------------------------------------------------------------------
 * Blocks: eight cases side by side (hot path: no allocation, no locks, no syscalls)
 * ------------------------------------------------------------------------------------------ */

/** Initialises every lane of *b as knhk_case_init would. Returns KNHK_OK or KNHK_NOT_SEALED. */
KNHK_EXPORT knhk_status knhk_block_init(const knhk_net_t *net, knhk_block_t *b);

/** Copies lane `lane` of *b into *out (every field of knhk_case_t; reserved fields zero).
 *  Returns KNHK_OK or KNHK_BAD_ARGUMENT (lane >= KNHK_BEAT_LANES; *out untouched). */
KNHK_EXPORT knhk_status knhk_block_get(const knhk_block_t *b, uint32_t lane, knhk_case_t *out);

/** Copies *c into lane `lane` of *b. Returns KNHK_OK or KNHK_BAD_ARGUMENT. */
KNHK_EXPORT knhk_status knhk_block_set(knhk_block_t *b, uint32_t lane, const knhk_case_t *c);

/** Fires, in blocks[0..nblocks), task tasks[8*k + i] on lane i of block k (guards evaluated on
 *  the lane's registers), and writes its status to statuses[8*k + i]: exactly what knhk_fire
 *  returns and does on that case, or KNHK_LANE_IDLE for a lane whose task is KNHK_NO_TASK.
 *  Every lane is a distinct case, so lanes are independent. Returns KNHK_OK when the beats
 *  ran, KNHK_NOT_SEALED (nothing ran). Takes the widest vector path the CPU has, AVX-512
 *  or AVX2 (chosen at run time; knhk_beat_path), else the scalar one. */
KNHK_EXPORT knhk_status knhk_block_fire(const knhk_net_t *net, knhk_block_t *blocks,
                                        uint32_t nblocks, const uint8_t *tasks, uint8_t *statuses);

/** knhk_block_fire on the scalar path: same contract, statuses and bytes. For benchmarks and
 *  tests that compare paths. */
KNHK_EXPORT knhk_status knhk_block_fire_scalar(const knhk_net_t *net, knhk_block_t *blocks,
                                               uint32_t nblocks, const uint8_t *tasks,
                                               uint8_t *statuses);

/** knhk_block_fire on a named path (knhk_beat_path_kind): same contract, statuses and bytes.
 *  Returns KNHK_BAD_ARGUMENT (nothing ran) when this CPU cannot run `path`
 *  (knhk_path_supported), else what knhk_block_fire returns. For benchmarks and tests that
 *  compare paths: the choice is the caller's, per call; libknhk keeps no setting. */
KNHK_EXPORT knhk_status knhk_block_fire_on(const knhk_net_t *net, knhk_block_t *blocks,
                                           uint32_t nblocks, const uint8_t *tasks,
                                           uint8_t *statuses, uint32_t path);

/** Executes one event per lane of *b: lane i takes events[i] (its case_index is not read)
 *  when bit i of `lanes` is set, else gets KNHK_LANE_IDLE. Any operation (knhk_op), with the
 *  statuses the single-case functions return. Returns KNHK_OK or KNHK_NOT_SEALED. */
KNHK_EXPORT knhk_status knhk_block_beat(const knhk_net_t *net, knhk_block_t *b,
                                        const knhk_event_t *events, uint32_t lanes,
                                        uint8_t *statuses);

/* ------------------------------------------------------------------------------------------
 * Saving and restoring cases (cold path: no allocation, no locks, no syscalls)
 *
 * A checkpoint holds the state of each live case instead of every event since the case
 * began. knhk_case_save encodes a case in KNHK_CASE_BYTES bytes; knhk_case_restore decodes
 * them into a knhk_case_t only when they fit the net, so that a case never runs from a state
 * the net's rules could not have produced for it (whatever the bytes, nothing is undefined).
 *
 * Why an encoding rather than memcpy of knhk_case_t: the struct records neither its net nor a
 * format version, it is in host byte order, and its reserved words may take meaning in a later
 * ABI; a checkpoint outlives the process and the library that wrote it. The encoding is fixed,
 * little-endian, versioned and checksummed (all integers little-endian; offsets in bytes):
 *
 *     0  u32 magic KNHK_CASE_MAGIC ("KNHC")      64  u32 flags
 *     4  u32 format version KNHK_CASE_FORMAT     68  u32 reserved, 0
 *     8  u64 net fingerprint (knhk_net_fingerprint)   72  i64 regs[8]
 *    16  u64 marking     24  u64 busy           136  u64 mi_live
 *    32  u64 or_expect   40  u64 absorb         144  MI slots 0..3, 24 bytes each: u64
 *    48  u64 enabled (knhk_enabled at save)          started, u64 done, u32 base, u32 created
 *    56  u64 seq                                240  u32 reserved, 0
 *                                               244  u32 CRC-32C (Castagnoli, as the crc32c
 *                                                    crate and SSE4.2 compute it) of bytes
 *                                                    0..244
 *
 * That is format 2 (ABI 5). Restore still reads format 1 (ABI up to 4): 144 bytes, the same
 * up to offset 136, then u32 reserved and the CRC-32C of bytes 0..140 at 140; its cases have
 * no MI state. A net without MI tasks has the same fingerprint in both.
 *
 * The enabled set is redundant (it follows from the rest): restore recomputes it and refuses a
 * mismatch, which catches bytes written by a library whose rules differ for this net. A case
 * is "valid for a net" (knhk_case_check) when every marked condition and busy task exists in
 * the net; the flags are 0 (running), DONE|COMPLETED with or without EXPLICIT_TERMINATION,
 * DONE|COMPLETED|IMPLICIT_TERMINATION or DONE|CANCELLED; or_expect lies within the net's
 * OR-join inputs and absorb within its discriminator inputs, off the marking; mi_live holds
 * only MI tasks, every busy MI task and, not busy, only KNHK_MI_KEEP tasks; a live slot has
 * 1 <= created <= maximum, base < created, done within started within the created instances,
 * bit 0 of done clear, fewer completions than the threshold (busy) or than created (running
 * on); every other slot is zero; and the flags
 * agree with the marking: a running case has work (a token, a busy task or live instances) and no token on
 * the output; a completed case holds the output token alone, nothing busy and no side state;
 * one completed by implicit termination holds no token and nothing busy (its side words stay
 * as they were); a cancelled case holds nothing at all. Registers and seq are not restricted. Every operation keeps a valid case valid. A
 * valid case need not be reachable from the input (that would take a state-space search);
 * the firing rules run on it as on any other.
 * ------------------------------------------------------------------------------------------ */

/** Size of a saved case, its magic number ("KNHC" as little-endian bytes) and format. */
#define KNHK_CASE_BYTES 248u
#define KNHK_CASE_MAGIC 0x43484E4Bu
#define KNHK_CASE_FORMAT 2u

/** A 64-bit fingerprint of a sealed net's structure: its conditions, input and output, and
 *  every task's join, split, flows in order, guards, default flow and cancellation sets (not
 *  the tables seal derives from them). Two nets built by the same builder calls have the same
 *  fingerprint, in any process and any libknhk of this format. Never 0 for a sealed net; 0 for
 *  NULL or an unsealed net. */
KNHK_EXPORT uint64_t knhk_net_fingerprint(const knhk_net_t *net);

/** Checks that *c is a valid case of `net` (see above). Returns KNHK_OK, KNHK_BAD_ARGUMENT
 *  (NULL), KNHK_NOT_SEALED, or the first defect in this order: KNHK_BAD_MARKING, KNHK_BAD_BUSY,
 *  KNHK_BAD_FLAGS, KNHK_BAD_SIDE_WORDS, KNHK_BAD_MI_SLOT, KNHK_BAD_CASE_STATE. Reads only. */
KNHK_EXPORT knhk_status knhk_case_check(const knhk_net_t *net, const knhk_case_t *c);

/** Writes the KNHK_CASE_BYTES-byte encoding of *c, a case of `net`, to out[0..KNHK_CASE_BYTES)
 *  (any alignment). Saves only what restore accepts: returns KNHK_OK, KNHK_BAD_ARGUMENT
 *  (NULL), KNHK_NOT_SEALED, KNHK_BAD_LENGTH (cap < KNHK_CASE_BYTES) or knhk_case_check's
 *  refusal; out is untouched unless KNHK_OK. */
KNHK_EXPORT knhk_status knhk_case_save(const knhk_net_t *net, const knhk_case_t *c, void *out,
                                       uint64_t cap);

/** Restores into *c the case saved in bytes[0..len) (any alignment) when it fits `net`:
 *  returns KNHK_OK, KNHK_BAD_ARGUMENT (NULL), KNHK_NOT_SEALED, or the first refusal in this
 *  order: KNHK_BAD_LENGTH (len < 8, or not KNHK_CASE_BYTES for the format), KNHK_BAD_FORMAT
 *  (magic or version), KNHK_BAD_CHECKSUM, KNHK_BAD_FORMAT (reserved fields), KNHK_WRONG_NET
 *  (fingerprint), knhk_case_check's refusals, KNHK_BAD_ENABLED. On KNHK_OK every field of *c
 *  is written (reserved fields zero) and the case behaves exactly as the saved one did; on a
 *  refusal *c is untouched. Never reads outside bytes[0..len). */
KNHK_EXPORT knhk_status knhk_case_restore(const knhk_net_t *net, knhk_case_t *c,
                                          const void *bytes, uint64_t len);

#ifdef __cplusplus
}
#endif

#endif /* KNHK_H */
