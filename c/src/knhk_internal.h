/* knhk_internal.h — helpers shared by the libknhk sources. Not installed. Every source
 * includes it first: it shows knhk.h's static-linking-only section (the short-path tables). */
#ifndef KNHK_INTERNAL_H
#define KNHK_INTERNAL_H

#define KNHK_STATIC_LINKING_ONLY
#include <stdint.h>

#include "knhk.h"

/* Functions shared between the sources but not part of the API: hidden from the shared object
 * whatever the build's default visibility (c/Makefile also passes -fvisibility=hidden). */
#if defined(__GNUC__) && __GNUC__ >= 4 && !defined(_WIN32)
#define KNHK_INTERNAL __attribute__((visibility("hidden")))
#else
#define KNHK_INTERNAL
#endif

/* The short path's tables of a net (knhk.h: knhk_hot_storage_t). */
#define KNHK_HOT_TABLES(net) (&(net)->hot.tables)

#define KNHK_BIT(i) (1ull << (i))

/* log2 of sizeof(knhk_case_t): the vector beats turn a case index into a byte offset. */
#define KNHK_CASE_SHIFT 8
_Static_assert(sizeof(knhk_case_t) == 1u << KNHK_CASE_SHIFT, "KNHK_CASE_SHIFT is stale");
#define KNHK_NO_OTHER 0xFFFFFFFFu

/* Fires task t on lane `lane` of *b by the general rules (knhk_case.c): KNHK_LANE_IDLE for
 * KNHK_NO_TASK, else exactly knhk_fire's status and effect. For the vector paths' leftovers. */
KNHK_INTERNAL knhk_status knhk_block_lane_fire(const knhk_net_t *net, knhk_block_t *b,
                                               uint32_t lane, uint32_t t);

/* The AVX-512 paths (knhk_beat_avx512.c), present on x86-64 with GCC or Clang. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define KNHK_HAVE_AVX512 1
KNHK_INTERNAL int knhk_beat_avx512_supported(void);
KNHK_INTERNAL knhk_status knhk_beat_avx512(const knhk_net_t *net, knhk_case_t *cases,
                                           uint32_t ncases, const knhk_event_t *events,
                                           uint8_t *statuses);
KNHK_INTERNAL knhk_status knhk_block_fire_avx512(const knhk_net_t *net, knhk_block_t *blocks,
                                                 uint32_t nblocks, const uint8_t *tasks,
                                                 uint8_t *statuses);
#else
#define KNHK_HAVE_AVX512 0
#endif

/* The AVX2 paths (knhk_beat_avx2.c), present on x86-64 with GCC or Clang. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define KNHK_HAVE_AVX2 1
KNHK_INTERNAL int knhk_beat_avx2_supported(void);
KNHK_INTERNAL knhk_status knhk_beat_avx2(const knhk_net_t *net, knhk_case_t *cases,
                                         uint32_t ncases, const knhk_event_t *events,
                                         uint8_t *statuses);
KNHK_INTERNAL knhk_status knhk_block_fire_avx2(const knhk_net_t *net, knhk_block_t *blocks,
                                               uint32_t nblocks, const uint8_t *tasks,
                                               uint8_t *statuses);
#else
#define KNHK_HAVE_AVX2 0
#endif

/* The slot of a general OR-join's key (knhk_hot_t.orj_table): multiply-shift of the marking
 * plus the busy word rotated by 32 (condition and task bits land apart), the top
 * log2(2 * KNHK_ORJOIN_MAX_KEYS) = 10 bits. Seal and run time share it. */
static inline uint32_t knhk_orj_slot(uint64_t marking, uint64_t busy) {
  return (uint32_t)(((marking + ((busy << 32) | (busy >> 32))) * 0x9E3779B97F4A7C15ull) >> 54);
}
_Static_assert(2u * KNHK_ORJOIN_MAX_KEYS == 1024u, "knhk_orj_slot takes the top 10 bits");

static inline uint32_t knhk_ctz64(uint64_t x) { return x ? (uint32_t)__builtin_ctzll(x) : 64u; }
static inline uint32_t knhk_popcount64(uint64_t x) { return (uint32_t)__builtin_popcountll(x); }

/* Guard operators as 5-bit truth tables: bits 0..2 over cmp3 = 0 (a < b), 1 (a == b),
 * 2 (a > b); bits 3..4 over z = (a & b) != 0 (bit clear, bit set). Constant data. */
static const uint8_t knhk_truth[16] = {
    [KNHK_GUARD_EQ] = 0x02,  [KNHK_GUARD_NE] = 0x05,   [KNHK_GUARD_LT] = 0x01,
    [KNHK_GUARD_LE] = 0x03,  [KNHK_GUARD_GT] = 0x04,   [KNHK_GUARD_GE] = 0x06,
    [KNHK_GUARD_BIT] = 0x10, [KNHK_GUARD_TRUE] = 0x07, [KNHK_GUARD_FALSE] = 0x00,
    [KNHK_GUARD_NBIT] = 0x08,
};

/* One comparison through its truth table, without branches. */
static inline uint32_t knhk_compare(int64_t a, int64_t b, uint32_t truth) {
  uint32_t cmp3 = (uint32_t)((a > b) - (a < b) + 1);
  uint32_t z = (a & b) != 0;
  return ((truth >> cmp3) | (truth >> (3 + z))) & 1u;
}

/* Hot entry points start on a cache line, so that their code's placement against 32- and
 * 64-byte boundaries (which the front end's speed depends on) is the same in every program
 * that links libknhk, wherever the linker puts them. */
#if defined(__GNUC__)
#define KNHK_HOT_ENTRY __attribute__((aligned(64)))
#else
#define KNHK_HOT_ENTRY
#endif

#if defined(__GNUC__)
#define KNHK_LIKELY(x) __builtin_expect(!!(x), 1)
#define KNHK_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define KNHK_INLINE static inline __attribute__((always_inline))
#else
#define KNHK_LIKELY(x) (x)
#define KNHK_UNLIKELY(x) (x)
#define KNHK_INLINE static inline
#endif

#endif
