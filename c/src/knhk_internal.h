/* knhk_internal.h — helpers shared by the libknhk sources. Not installed. */
#ifndef KNHK_INTERNAL_H
#define KNHK_INTERNAL_H

#include <stdint.h>

#define KNHK_BIT(i) (1ull << (i))
#define KNHK_NO_OTHER 0xFFFFFFFFu

static inline uint32_t knhk_ctz64(uint64_t x) { return x ? (uint32_t)__builtin_ctzll(x) : 64u; }
static inline uint32_t knhk_popcount64(uint64_t x) { return (uint32_t)__builtin_popcountll(x); }

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
