/* knhk_beat_avx512.c — the full 8-lane beat as one AVX-512 vector (x86-64 only).
 *
 * Taken by knhk_beat_simd at run time when the CPU has AVX-512 F, CD and VL (never chosen at build
 * time: this file is compiled with per-function target attributes, the rest of libknhk stays
 * portable). It computes, for the 8 lanes at once, exactly what the scalar leaf path
 * (fire_leaf in knhk_case.c) computes for a fire of a hot task with an AND split: same
 * checks, same marking, same seq. A lane that is anything else (another operation, another
 * kind of task, a refusal, the end of a case) goes through knhk_beat_scalar on its own.
 *
 * Lane order: lanes on distinct cases are independent, so the vector lanes commit first and
 * the scalar lanes follow in lane order. When two lanes name the same case (AVX-512 CD
 * conflict detection), the whole beat runs on the scalar path, in lane order.
 *
 * No state: the CPU check reads the compiler runtime's CPU model (__builtin_cpu_supports). */
#include <stddef.h>
#include <stdint.h>

#include "knhk.h"
#include "knhk_internal.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

int knhk_beat_avx512_supported(void);
knhk_status knhk_beat_avx512(const knhk_net_t *net, knhk_case_t *cases, uint32_t ncases,
                             const knhk_event_t *events, uint8_t *statuses);

int knhk_beat_avx512_supported(void) {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
         __builtin_cpu_supports("avx512vl");
}

uint32_t knhk_beat_path(void) {
  return knhk_beat_avx512_supported() ? (uint32_t)KNHK_BEAT_PATH_AVX512
                                      : (uint32_t)KNHK_BEAT_PATH_SCALAR;
}

#define KNHK_AVX512 __attribute__((target("avx512f,avx512cd,avx512vl")))

/* 8 qwords at base + off[i] (byte offsets) for the lanes in k, 0 elsewhere. */
#define GATHER(k, off, base) \
  _mm512_mask_i64gather_epi64(_mm512_setzero_si512(), (k), (off), (const void *)(base), 1)

KNHK_AVX512 knhk_status knhk_beat_avx512(const knhk_net_t *net, knhk_case_t *cases,
                                         uint32_t ncases, const knhk_event_t *events,
                                         uint8_t *statuses) {
  /* Events are 16 bytes: dword 0 = case_index, dword 1 = op | task << 8 | flags << 16. */
  const __m512i ev_lo = _mm512_loadu_si512((const void *)events);
  const __m512i ev_hi = _mm512_loadu_si512((const void *)(events + 4));
  const __m256i idx = _mm512_castsi512_si256(_mm512_permutex2var_epi32(
      ev_lo, _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 0, 0, 0, 0, 0, 0, 0, 0), ev_hi));
  const __m256i w1 = _mm512_castsi512_si256(_mm512_permutex2var_epi32(
      ev_lo, _mm512_setr_epi32(1, 5, 9, 13, 17, 21, 25, 29, 0, 0, 0, 0, 0, 0, 0, 0), ev_hi));
  const __m256i byte = _mm256_set1_epi32(0xff);
  const __m256i op = _mm256_and_si256(w1, byte);
  const __m256i task = _mm256_and_si256(_mm256_srli_epi32(w1, 8), byte);

  const __mmask8 in_range = _mm256_cmplt_epu32_mask(idx, _mm256_set1_epi32((int)ncases));
  /* Two in-range lanes on one case: the whole beat in lane order on the scalar path. */
  const __m256i earlier_same = _mm256_conflict_epi32(idx);
  if (_mm256_mask_test_epi32_mask(in_range, earlier_same, _mm256_set1_epi32((int)in_range)))
    return knhk_beat_scalar(net, cases, ncases, events, KNHK_BEAT_LANES, statuses);

  __mmask8 ok = in_range & _mm256_cmpeq_epi32_mask(op, _mm256_set1_epi32(KNHK_OP_FIRE)) &
                _mm256_cmplt_epu32_mask(task, _mm256_set1_epi32((int)net->ntasks));
  if (ok) {
    const __m512i one = _mm512_set1_epi64(1);
    const __m512i task64 = _mm512_cvtepu32_epi64(task);
    const __m512i coff = _mm512_slli_epi64(_mm512_cvtepu32_epi64(idx), 7);
    const __m512i toff = _mm512_slli_epi64(task64, 6);
    char *cb = (char *)cases;
    const char *tb = (const char *)net->tasks;
    /* the task: hot == 1 (hot AND-split fire), join code */
    const __m512i meta = GATHER(ok, toff, tb + offsetof(knhk_task_t, join));
    const __m512i hot = _mm512_and_si512(
        _mm512_srli_epi64(meta, 8 * (offsetof(knhk_task_t, hot) - offsetof(knhk_task_t, join))),
        _mm512_set1_epi64(0xff));
    const __m512i join = _mm512_and_si512(meta, _mm512_set1_epi64(0xff));
    const __m512i pre = GATHER(ok, toff, tb + offsetof(knhk_task_t, pre));
    const __m512i post = GATHER(ok, toff, tb + offsetof(knhk_task_t, post));
    /* the case: flags == 0 (running, nothing unusual), task not busy */
    const __m512i m = GATHER(ok, coff, cb + offsetof(knhk_case_t, marking));
    const __m512i busy = GATHER(ok, coff, cb + offsetof(knhk_case_t, busy));
    const __m512i flags = _mm512_and_si512(GATHER(ok, coff, cb + offsetof(knhk_case_t, flags)),
                                           _mm512_set1_epi64(0xffffffff));
    const __m512i seq = GATHER(ok, coff, cb + offsetof(knhk_case_t, seq));
    ok &= _mm512_cmpeq_epi64_mask(hot, one); /* KNHK_HOT alone: AND join, AND split, not ending */
    ok &= _mm512_testn_epi64_mask(flags, flags);
    ok &= _mm512_testn_epi64_mask(busy, _mm512_sllv_epi64(one, task64));
    /* enabled: AND join consumes the preset, XOR join the lowest marked input */
    const __m512i have = _mm512_and_si512(m, pre);
    const __m512i lowest = _mm512_and_si512(have, _mm512_sub_epi64(_mm512_setzero_si512(), have));
    const __mmask8 is_xor = _mm512_cmpeq_epi64_mask(join, _mm512_set1_epi64(KNHK_JOIN_XOR));
    const __m512i consume = _mm512_mask_blend_epi64(is_xor, pre, lowest);
    ok &= _mm512_test_epi64_mask(have, have);
    ok &= _mm512_cmpeq_epi64_mask(_mm512_and_si512(have, consume), consume);
    /* produce: no token onto a marked condition, not the end of the case (scalar decides) */
    const __m512i rest = _mm512_andnot_si512(consume, m);
    ok &= _mm512_testn_epi64_mask(rest, post);
    ok &= _mm512_testn_epi64_mask(post, _mm512_set1_epi64((long long)net->output));
    _mm512_mask_i64scatter_epi64((void *)(cb + offsetof(knhk_case_t, marking)), ok, coff,
                                 _mm512_or_si512(rest, post), 1);
    _mm512_mask_i64scatter_epi64((void *)(cb + offsetof(knhk_case_t, seq)), ok, coff,
                                 _mm512_add_epi64(seq, one), 1);
  }
  for (uint32_t i = 0; i < KNHK_BEAT_LANES; i++) statuses[i] = KNHK_OK;
  /* Every other lane, in lane order, on the scalar rules. */
  for (uint32_t left = (uint32_t)(uint8_t)~ok; left; left &= left - 1) {
    uint32_t i = (uint32_t)__builtin_ctz(left);
    (void)knhk_beat_scalar(net, cases, ncases, &events[i], 1, &statuses[i]);
  }
  return KNHK_OK;
}

#else

uint32_t knhk_beat_path(void) { return KNHK_BEAT_PATH_SCALAR; }

#endif
