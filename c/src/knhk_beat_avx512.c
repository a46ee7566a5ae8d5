/* knhk_beat_avx512.c — the 8-lane beats as AVX-512 vectors (x86-64 only).
 *
 * Taken at run time when the CPU has AVX-512 F, CD and VL (never chosen at build time: this
 * file is compiled with per-function target attributes, the rest of libknhk stays portable).
 * For the 8 lanes at once it computes exactly what the scalar short path (fire_hot_any in
 * knhk_case.c) computes for a fire of a hot task: same tables (knhk_hot_t), same checks, same
 * marking, seq and flags. A lane that is anything else (another operation, a task that is not
 * hot, a refusal, an explicit termination) goes through the scalar rules on its own, so the
 * firing rules stay in knhk_case.c.
 *
 * Two layouts:
 *   knhk_block_fire_avx512: a knhk_block_t (struct of arrays): the lanes' fields are vector
 *     loads and masked stores; the per-task tables are looked up with permutes.
 *   knhk_beat_avx512: cases in an array (knhk_case_t, 256 bytes each): gathers and scatters.
 *     Lanes on distinct cases are independent, so the vector lanes commit first and the scalar
 *     lanes follow in lane order. When two lanes name the same case (AVX-512 CD conflict
 *     detection), the whole beat runs on the scalar path, in lane order.
 *
 * No state: the CPU check reads the compiler runtime's CPU model (__builtin_cpu_supports). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "knhk_internal.h"

#if KNHK_HAVE_AVX512
#include <immintrin.h>

int knhk_beat_avx512_supported(void) {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") &&
         __builtin_cpu_supports("avx512vl");
}

#define KNHK_AVX512 __attribute__((target("avx512f,avx512cd,avx512vl")))

/* table[idx[i]] for idx[i] < ntasks (only the low bits the task count needs are used):
 * permutes over the 64-entry table, as many as the net's task count needs (one for up to 16
 * tasks, four for 64). */
KNHK_AVX512 KNHK_INLINE __m512i lookup(const void *table, __m512i idx, uint32_t ntasks) {
  const __m512i *tv = (const __m512i *)table;
  __m512i r = _mm512_permutex2var_epi64(_mm512_load_si512(tv), idx, _mm512_load_si512(tv + 1));
  if (ntasks > 16) {
    const __mmask8 b4 = _mm512_test_epi64_mask(idx, _mm512_set1_epi64(16));
    r = _mm512_mask_mov_epi64(r, b4,
                              _mm512_permutex2var_epi64(_mm512_load_si512(tv + 2), idx,
                                                        _mm512_load_si512(tv + 3)));
    if (ntasks > 32) {
      const __mmask8 b5 = _mm512_test_epi64_mask(idx, _mm512_set1_epi64(32));
      __m512i hi = _mm512_permutex2var_epi64(_mm512_load_si512(tv + 4), idx,
                                             _mm512_load_si512(tv + 5));
      hi = _mm512_mask_mov_epi64(hi, b4,
                                 _mm512_permutex2var_epi64(_mm512_load_si512(tv + 6), idx,
                                                           _mm512_load_si512(tv + 7)));
      r = _mm512_mask_mov_epi64(r, b5, hi);
    }
  }
  return r;
}

/* table[task] for every lane: a broadcast of entry t0 when the beat is in lockstep (every
 * lane fires task t0, as when a batch of cases of one workflow advances step by step: a load,
 * no permute), else the permutes of lookup(). */
KNHK_AVX512 KNHK_INLINE __m512i entry(const void *table, __m512i task, uint32_t ntasks,
                                      int lockstep, uint32_t t0) {
  if (lockstep) return _mm512_set1_epi64((long long)((const uint64_t *)table)[t0]);
  return lookup(table, task, ntasks);
}

/* What the short path decides for 8 lanes. */
typedef struct hot_lanes {
  __m512i marking; /* the new marking of the committed lanes */
  __m512i flags;   /* the new flags of the committed lanes: DONE | COMPLETED where it ends */
  __mmask8 commit; /* lanes the short path takes */
} hot_lanes;

#define TERN_A_OR_B_AND_C 0xF8   /* vpternlogq: a | (b & c) */
#define TERN_A_OR_B_AND_C_ 0xA8  /* vpternlogq: (a | b) & c */

/* The rules of fire_hot_any on 8 lanes, gathered into one vector of reasons to refuse (zero where
 * the short path takes the lane) and turned into a mask once at the end: on AVX-512 cores the
 * compares into mask registers share one port with the permutes, vector logic does not.
 * `candidates`: lanes with a fire. `task`: any value (a task the lookups cannot index, not hot
 * or out of range goes to the scalar rules); `lockstep`: every lane's task is t0 < ntasks;
 * `m`, `busy`, `flags`: the lanes' words (flags zero-extended). A lane's register r is read at
 * reg_base + lane_off[i] + (r << reg_shift); block_regs (a block's regs, or NULL) lets a net
 * whose XOR splits all read one register load it for the eight lanes at once. */
KNHK_AVX512 KNHK_INLINE hot_lanes hot_rules(const knhk_net_t *net, __mmask8 candidates,
                                            __m512i task, int lockstep, uint32_t t0,
                                            __m512i m, __m512i busy,
                                            __m512i flags, const int64_t *block_regs,
                                            const void *reg_base, __m512i lane_off,
                                            int reg_shift) {
  const knhk_hot_t *h = KNHK_HOT_TABLES(net);
  const uint32_t nt = net->ntasks;
  const __m512i one = _mm512_set1_epi64(1);
  /* the lookups read the index's low 4, 5 or 6 bits: anything above is refused here, and
   * entries >= ntasks are zero (not hot) */
  const uint64_t beyond = nt <= 16 ? ~15ull : nt <= 32 ? ~31ull : ~63ull;
  __m512i bad = _mm512_ternarylogic_epi64(flags, task, _mm512_set1_epi64((long long)beyond),
                                          TERN_A_OR_B_AND_C);
  const __m512i meta = entry(h->meta, task, nt, lockstep, t0);
  bad = _mm512_or_si512(bad, _mm512_andnot_si512(meta, one)); /* KNHK_HOT == 1: not hot */
  const __m512i pre = entry(h->pre, task, nt, lockstep, t0);
  /* AND join: consume the preset. XOR join: its one marked input; none or two or more marked
   * go to the scalar rules. Only in nets that have such a join. */
  __m512i consume = pre;
  if (h->kinds & KNHK_HOT_XOR_JOIN) {
    const __mmask8 xj = _mm512_test_epi64_mask(meta, _mm512_set1_epi64(KNHK_HOT_XOR_JOIN));
    const __m512i have = _mm512_and_si512(m, pre);
    const __m512i less = _mm512_sub_epi64(have, one);
    /* two or more bits: have & (have - 1); none: the top bit of (have - 1) & ~have */
    const __m512i multi = _mm512_and_si512(have, less);
    const __m512i none = _mm512_srli_epi64(_mm512_andnot_si512(have, less), 63);
    bad = _mm512_mask_ternarylogic_epi64(bad, xj, multi, none, 0xFE); /* a | b | c */
    consume = _mm512_mask_mov_epi64(pre, xj, have);
  }
  __m512i out = entry(h->out_on, task, nt, lockstep, t0);
  if (h->kinds & KNHK_HOT_XOR_SPLIT) {
    const __mmask8 xs =
        candidates & _mm512_test_epi64_mask(meta, _mm512_set1_epi64(KNHK_HOT_XOR_SPLIT));
    if (!_mm512_kortestz((__mmask16)xs, (__mmask16)xs)) {
      __m512i v;
      if (block_regs && h->xor_split_reg < KNHK_REGISTERS) {
        /* every XOR split reads one register: in a block, one vector load */
        v = _mm512_load_si512(block_regs + (size_t)h->xor_split_reg * KNHK_BEAT_LANES);
      } else {
        const __m512i lhs = _mm512_and_si512(_mm512_srli_epi64(meta, 8),
                                             _mm512_set1_epi64(KNHK_REGISTERS - 1));
        const __m512i off =
            _mm512_add_epi64(lane_off, _mm512_sll_epi64(lhs, _mm_cvtsi32_si128(reg_shift)));
        v = _mm512_mask_i64gather_epi64(_mm512_setzero_si512(), xs, off, reg_base, 1);
      }
      const __m512i lo = entry(h->lo, task, nt, lockstep, t0);
      const __m512i span = entry(h->span, task, nt, lockstep, t0);
      const __m512i flip = entry(h->out_flip, task, nt, lockstep, t0);
      const __mmask8 failed = _mm512_cmpgt_epu64_mask(_mm512_sub_epi64(v, lo), span);
      out = _mm512_mask_xor_epi64(out, xs & failed, out, flip);
    }
  }
  const __m512i x = _mm512_xor_si512(m, consume);
  /* an input not marked or a token onto a marked condition: x & (consume | out) */
  bad = _mm512_ternarylogic_epi64(bad, x, _mm512_or_si512(consume, out), TERN_A_OR_B_AND_C);
  /* the task busy */
  bad = _mm512_ternarylogic_epi64(bad, _mm512_srlv_epi64(busy, task), one, TERN_A_OR_B_AND_C);
  /* the case ends (out marks the output condition, one bit): with other work left it is an
   * explicit termination (scalar rules), else flags := DONE | COMPLETED. No branch: a lane
   * ends about once per case. */
  const __m512i ends01 = _mm512_srl_epi64(
      _mm512_and_si512(out, _mm512_set1_epi64((long long)net->output)),
      _mm_cvtsi32_si128((int)knhk_ctz64(net->output)));
  const __m512i ends = _mm512_sub_epi64(_mm512_setzero_si512(), ends01); /* all ones */
  bad = _mm512_or_si512(bad, _mm512_ternarylogic_epi64(x, busy, ends, TERN_A_OR_B_AND_C_));
  hot_lanes r;
  r.commit = _mm512_mask_testn_epi64_mask(candidates, bad, bad);
  r.marking = _mm512_or_si512(x, out);
  r.flags = _mm512_and_si512(ends, _mm512_set1_epi64(KNHK_FLAG_DONE | KNHK_FLAG_COMPLETED));
  return r;
}

KNHK_AVX512 KNHK_HOT_ENTRY knhk_status knhk_block_fire_avx512(const knhk_net_t *net,
                                                              knhk_block_t *blocks,
                                                              uint32_t nblocks,
                                                              const uint8_t *tasks,
                                                              uint8_t *statuses) {
  const __m512i lane_off = _mm512_setr_epi64(0, 8, 16, 24, 32, 40, 48, 56);
  const __m512i one = _mm512_set1_epi64(1);
  for (uint32_t k = 0; k < nblocks; k++) {
    knhk_block_t *b = &blocks[k];
    const uint8_t *tk = &tasks[(size_t)k * KNHK_BEAT_LANES];
    uint8_t *st = &statuses[(size_t)k * KNHK_BEAT_LANES];
    const __m512i task = _mm512_cvtepu8_epi64(_mm_loadl_epi64((const __m128i *)tk));
    const uint32_t t0 = tk[0];
    /* lockstep pays off where a lookup takes more than one permute */
    const int lockstep =
        net->ntasks > 16 && t0 < net->ntasks &&
        _mm512_kortestc(_mm512_cmpeq_epi64_mask(task, _mm512_set1_epi64(t0)), (__mmask16)0xFF00);
    const hot_lanes r =
        hot_rules(net, 0xFF, task, lockstep, t0, _mm512_load_si512(b->marking),
                  _mm512_load_si512(b->busy),
                  _mm512_load_si512(b->flags), &b->regs[0][0], &b->regs[0][0], lane_off, 6);
    _mm512_mask_store_epi64(b->marking, r.commit, r.marking);
    _mm512_mask_store_epi64(b->seq, r.commit, _mm512_add_epi64(_mm512_load_si512(b->seq), one));
    _mm512_mask_store_epi64(b->flags, r.commit, r.flags); /* committed lanes' flags were 0 */
    memset(st, KNHK_OK, KNHK_BEAT_LANES);
    /* every other lane on the scalar rules (lanes are distinct cases: any order gives the
     * same result); the test reads the mask register directly (all committed: nothing to do) */
    if (KNHK_UNLIKELY(!_mm512_kortestc((__mmask16)r.commit, (__mmask16)0xFF00))) {
      for (uint32_t left = (uint32_t)(uint8_t)~r.commit; left; left &= left - 1) {
        uint32_t i = (uint32_t)__builtin_ctz(left);
        st[i] = (uint8_t)knhk_block_lane_fire(net, b, i, tk[i]);
      }
    }
  }
  return KNHK_OK;
}

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
  const __m256i eflags = _mm256_srli_epi32(w1, 16);

  const __mmask8 in_range = _mm256_cmplt_epu32_mask(idx, _mm256_set1_epi32((int)ncases));
  /* Two in-range lanes on one case: the whole beat in lane order on the scalar path. */
  const __m256i earlier_same = _mm256_conflict_epi32(idx);
  if (_mm256_mask_test_epi32_mask(in_range, earlier_same, _mm256_set1_epi32((int)in_range)))
    return knhk_beat_scalar(net, cases, ncases, events, KNHK_BEAT_LANES, statuses);

  /* fires that evaluate their guards (caller-supplied bits take the scalar path) */
  __mmask8 ok = in_range & _mm256_cmpeq_epi32_mask(op, _mm256_set1_epi32(KNHK_OP_FIRE)) &
                _mm256_testn_epi32_mask(eflags, _mm256_set1_epi32(KNHK_EVENT_USE_BITS)) &
                _mm256_cmplt_epu32_mask(task, _mm256_set1_epi32(KNHK_MAX_TASKS));
  if (ok) {
    const __m512i task64 = _mm512_cvtepu32_epi64(task);
    const __m512i coff = _mm512_slli_epi64(_mm512_cvtepu32_epi64(idx), KNHK_CASE_SHIFT);
    char *cb = (char *)cases;
    const __m512i m = GATHER(ok, coff, cb + offsetof(knhk_case_t, marking));
    const __m512i busy = GATHER(ok, coff, cb + offsetof(knhk_case_t, busy));
    const __m512i flags = _mm512_and_si512(GATHER(ok, coff, cb + offsetof(knhk_case_t, flags)),
                                           _mm512_set1_epi64(0xffffffff));
    const __m512i seq = GATHER(ok, coff, cb + offsetof(knhk_case_t, seq));
    const hot_lanes r = hot_rules(net, ok, task64, 0, 0, m, busy, flags, NULL,
                                  cb + offsetof(knhk_case_t, regs), coff, 3);
    _mm512_mask_i64scatter_epi64((void *)(cb + offsetof(knhk_case_t, marking)), r.commit, coff,
                                 r.marking, 1);
    _mm512_mask_i64scatter_epi64((void *)(cb + offsetof(knhk_case_t, seq)), r.commit, coff,
                                 _mm512_add_epi64(seq, _mm512_set1_epi64(1)), 1);
    /* flags is 32 bits wide in knhk_case_t: scatter the low halves where the case ended */
    const __mmask8 ended = r.commit & _mm512_test_epi64_mask(r.flags, r.flags);
    if (ended)
      _mm512_mask_i64scatter_epi32((void *)(cb + offsetof(knhk_case_t, flags)), ended, coff,
                                   _mm512_cvtepi64_epi32(r.flags), 1);
    ok = r.commit;
  }
  memset(statuses, KNHK_OK, KNHK_BEAT_LANES);
  /* Every other lane, in lane order, on the scalar rules. */
  for (uint32_t left = (uint32_t)(uint8_t)~ok; left; left &= left - 1) {
    uint32_t i = (uint32_t)__builtin_ctz(left);
    (void)knhk_beat_scalar(net, cases, ncases, &events[i], 1, &statuses[i]);
  }
  return KNHK_OK;
}

#else

/* Keeps the translation unit non-empty where there is no AVX-512 path (ISO C). */
typedef int knhk_beat_avx512_unused;

#endif
