/*
 * knhk/version.h — libknhk's release and ABI versions (included by knhk.h).
 *
 * The release version follows the workspace's (Cargo.toml); ffi/tests/layout.rs checks that
 * they agree. KNHK_ABI_VERSION numbers the binary interface: it is bumped whenever a public
 * struct layout, an enum value or a function signature changes, and it is the number in the
 * shared object's SONAME (libknhk.so.KNHK_ABI_VERSION). The layout test pins every public
 * size, alignment and offset together with it, so a layout change without a bump fails.
 * c/Makefile reads the numbers from this file.
 */
#ifndef KNHK_VERSION_H
#define KNHK_VERSION_H

#define KNHK_VERSION_MAJOR 0
#define KNHK_VERSION_MINOR 1
#define KNHK_VERSION_PATCH 0
/** "MAJOR.MINOR.PATCH" of the numbers above. */
#define KNHK_VERSION_STRING "0.1.0"
/** The release as one number, (MAJOR << 16) | (MINOR << 8) | PATCH: what knhk_version()
 *  returns. */
#define KNHK_VERSION_HEX                                                                   \
  ((KNHK_VERSION_MAJOR << 16) | (KNHK_VERSION_MINOR << 8) | KNHK_VERSION_PATCH)

/** ABI version of knhk.h (what knhk_abi_version() returns). 1: up to the block beats;
 *  2: the short-path tables in knhk_net_t became opaque (knhk_hot_storage_t), the version
 *  functions were added; 3: non-local OR-joins: status KNHK_OR_JOIN_CAP, the opaque storage
 *  grew to 24 KiB (knhk_net_t with it); 4: wide tasks: up to 64 flows per task, the flows of
 *  a net in one fixed array (knhk_net_t.branches[KNHK_MAX_FLOWS], knhk_task_t.first_branch,
 *  knhk_net_t.nflows), knhk_event_t.branch_bits_hi, knhk_complete_bits64/knhk_fire_bits64; 5: multiple-instance tasks: knhk_task_t.mi
 *  (knhk_mi_spec_t, in the former reserved bytes), knhk_case_t.mi_live and .mi (the case grew
 *  to 256 bytes), statuses 40..47, knhk_net_set_mi, knhk_start_mi, knhk_instance_*, case save
 *  format 2. */
#define KNHK_ABI_VERSION 5u

#endif /* KNHK_VERSION_H */
