/* knhk_beat_avx2.c — the 8-lane beats as AVX2 vectors (x86-64 only).
 *
 * Taken at run time when the CPU has AVX2 but not AVX-512 F/CD/VL (knhk_beat_path), or when a
 * caller names the path (knhk_block_fire_path, knhk_beat_simd_path). Never chosen at build
 * time: this file is compiled with per-function target attributes, the rest of libknhk stays
 * portable. It computes, for the lanes it takes, exactly what the scalar short path (fire_hot_any
 * in knhk_case.c) computes for a fire of a hot task: same tables (knhk_hot_t), same checks,
 * same marking, seq and flags. Every other lane (another operation, a task that is not hot, a
 * refusal, an explicit termination) goes through the scalar rules on its own, so the firing
 * rules stay in knhk_case.c.
 *
 * A 256-bit register holds four 64-bit lanes, so an 8-lane block is two halves, computed side
 * by side (independent chains). AVX2 has no 64-bit table permute over more than four entries
 * and no mask registers; so:
 *   - in a block, the per-task tables are one broadcast per field when every lane fires the
 *     same task (lockstep), two broadcasts and a blend when the lanes fire two tasks (as when
 *     the cases of a batch take the two branches of an XOR split); a block whose lanes fire
 *     three or more tasks takes the scalar path (gathers, vpgatherqq, measured slower than
 *     it); the array beat gathers (its cases are scattered anyway);
 *   - reasons to refuse a lane are accumulated in one vector per half and compared with zero
 *     once; committed lanes are merged into the block's fields with blends and written with
 *     full stores (the block belongs to the caller's thread; no masked stores);
 *   - unsigned 64-bit compares (the guard's range) are signed compares with the sign bit
 *     flipped.
 *
 *   knhk_block_fire_avx2: a knhk_block_t (struct of arrays).
 *   knhk_beat_avx2: cases in an array (knhk_case_t, 256 bytes each): gathers in, scalar stores
 *     out (AVX2 has no scatter). Two lanes on one case (found by comparing the indices with
 *     their rotations): the whole beat runs on the scalar path, in lane order.
 *
 * No state: the CPU check reads the compiler runtime's CPU model (__builtin_cpu_supports). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "knhk_internal.h"

#if KNHK_HAVE_AVX2
#include <immintrin.h>

int knhk_beat_avx2_supported(void) { return __builtin_cpu_supports("avx2") != 0; }

#define KNHK_AVX2 __attribute__((target("avx2")))

/* table[task] for 4 lanes. In a block (pair != NULL) the lanes fire at most two tasks, t0 and
 * pair->t1 (one when they are equal: lockstep): one broadcast per task and a blend on
 * pair->sel (all ones in the lanes that fire t1). In the array beat (pair == NULL) a gather
 * (idx: the lanes' tasks below KNHK_MAX_TASKS). */
typedef struct task_pair {
  uint32_t t0, t1;
  uint32_t kinds; /* meta.kind of t0 | of t1: both hot (checked by the caller) */
  __m256i sel;
  __m256i xor_join, xor_split; /* all ones in the lanes whose task has that kind */
} task_pair;

KNHK_AVX2 KNHK_INLINE __m256i entry4(const void *table, __m256i idx, const task_pair *pair) {
  const uint64_t *tab = (const uint64_t *)table;
  if (pair) {
    const __m256i a = _mm256_set1_epi64x((long long)tab[pair->t0]);
    if (pair->t1 == pair->t0) return a;
    return _mm256_blendv_epi8(a, _mm256_set1_epi64x((long long)tab[pair->t1]), pair->sel);
  }
  return _mm256_i64gather_epi64((const long long *)table, idx, 8);
}

/* What the short path decides for 4 lanes. */
typedef struct hot4 {
  __m256i marking; /* the new marking of the committed lanes */
  __m256i flags;   /* the new flags of the committed lanes: DONE | COMPLETED where it ends */
  __m256i commit;  /* all ones in the lanes the short path takes */
} hot4;

/* The rules of fire_hot_any on 4 lanes (see hot_rules in knhk_beat_avx512.c). `cand`: all ones in
 * lanes with a fire. `task`: any value (>= KNHK_MAX_TASKS, not hot: scalar rules);
 * `pair`: NULL, or the lanes fire t0 or t1 (both < ntasks); `m`, `busy`, `flags`: the lanes' words (flags
 * zero-extended). The XOR split's register: `xreg` when the caller loaded it (a block whose
 * net's XOR splits all read one register), else gathered at reg_base + lane_off[i] +
 * (lhs << reg_shift). */
KNHK_AVX2 KNHK_INLINE hot4 hot_rules4(const knhk_net_t *net, __m256i cand, __m256i task,
                                      const task_pair *pair, __m256i m, __m256i busy,
                                      __m256i flags, const int64_t *xreg, const char *reg_base,
                                      __m256i lane_off, int reg_shift) {
  const knhk_hot_t *h = KNHK_HOT_TABLES(net);
  const __m256i one = _mm256_set1_epi64x(1);
  const __m256i zero = _mm256_setzero_si256();
  const __m256i idx = _mm256_and_si256(task, _mm256_set1_epi64x(KNHK_MAX_TASKS - 1));
  __m256i bad = flags;
  __m256i meta = zero;
  /* kinds: the union of the lanes' kinds; in a block the caller read them (both tasks hot,
   * below ntasks: no range or hot test per lane) */
  uint32_t kinds = (uint32_t)h->kinds;
  if (pair) {
    kinds = pair->kinds;
  } else {
    /* a task beyond the tables: refused here (entries >= ntasks are zero: not hot) */
    bad = _mm256_or_si256(bad, _mm256_andnot_si256(_mm256_set1_epi64x(KNHK_MAX_TASKS - 1), task));
    meta = entry4(h->meta, idx, pair);
    bad = _mm256_or_si256(bad, _mm256_andnot_si256(meta, one)); /* KNHK_HOT == 1: not hot */
  }
  const __m256i pre = entry4(h->pre, idx, pair);
  __m256i consume = pre;
  if (kinds & KNHK_HOT_XOR_JOIN) {
    const __m256i xjb = _mm256_set1_epi64x(KNHK_HOT_XOR_JOIN);
    const __m256i xj = pair ? pair->xor_join : _mm256_cmpeq_epi64(_mm256_and_si256(meta, xjb), xjb);
    const __m256i have = _mm256_and_si256(m, pre);
    const __m256i less = _mm256_sub_epi64(have, one);
    /* two or more bits: have & (have - 1); none: the top bit of (have - 1) & ~have */
    const __m256i multi = _mm256_and_si256(have, less);
    const __m256i none = _mm256_srli_epi64(_mm256_andnot_si256(have, less), 63);
    bad = _mm256_or_si256(bad, _mm256_and_si256(xj, _mm256_or_si256(multi, none)));
    consume = _mm256_blendv_epi8(pre, have, xj);
  }
  __m256i out = entry4(h->out_on, idx, pair);
  if (kinds & KNHK_HOT_XOR_SPLIT) {
    const __m256i xsb = _mm256_set1_epi64x(KNHK_HOT_XOR_SPLIT);
    const __m256i xs =
        pair ? pair->xor_split
             : _mm256_and_si256(cand, _mm256_cmpeq_epi64(_mm256_and_si256(meta, xsb), xsb));
    if (!_mm256_testz_si256(xs, xs)) {
      __m256i v;
      if (xreg) {
        v = _mm256_loadu_si256((const __m256i *)xreg);
      } else {
        if (pair) meta = entry4(h->meta, idx, pair);
        const __m256i lhs = _mm256_and_si256(_mm256_srli_epi64(meta, 8),
                                             _mm256_set1_epi64x(KNHK_REGISTERS - 1));
        const __m256i off =
            _mm256_add_epi64(lane_off, _mm256_sll_epi64(lhs, _mm_cvtsi32_si128(reg_shift)));
        v = _mm256_mask_i64gather_epi64(zero, (const long long *)reg_base, off, xs, 1);
      }
      const __m256i sign = _mm256_set1_epi64x((long long)0x8000000000000000ull);
      const __m256i lo = entry4(h->lo, idx, pair);
      const __m256i span = entry4(h->span, idx, pair);
      const __m256i flip = entry4(h->out_flip, idx, pair);
      /* unsigned v - lo > span */
      const __m256i failed = _mm256_cmpgt_epi64(_mm256_xor_si256(_mm256_sub_epi64(v, lo), sign),
                                                _mm256_xor_si256(span, sign));
      out = _mm256_xor_si256(out, _mm256_and_si256(_mm256_and_si256(xs, failed), flip));
    }
  }
  const __m256i x = _mm256_xor_si256(m, consume);
  /* an input not marked or a token onto a marked condition: x & (consume | out) */
  bad = _mm256_or_si256(bad, _mm256_and_si256(x, _mm256_or_si256(consume, out)));
  /* the task busy (a shift by 64 or more gives 0: those lanes are refused above) */
  bad = _mm256_or_si256(bad, _mm256_and_si256(_mm256_srlv_epi64(busy, task), one));
  hot4 r;
  r.flags = zero;
  if (kinds & KNHK_HOT_ENDS) {
    /* the case ends: with other work left it is an explicit termination (scalar rules), else
     * flags := DONE | COMPLETED */
    const __m256i ends01 = _mm256_srl_epi64(
        _mm256_and_si256(out, _mm256_set1_epi64x((long long)net->output)),
        _mm_cvtsi32_si128((int)knhk_ctz64(net->output)));
    const __m256i ends = _mm256_sub_epi64(zero, ends01); /* all ones */
    bad = _mm256_or_si256(bad, _mm256_and_si256(_mm256_or_si256(x, busy), ends));
    r.flags = _mm256_and_si256(ends, _mm256_set1_epi64x(KNHK_FLAG_DONE | KNHK_FLAG_COMPLETED));
  }
  r.commit = _mm256_and_si256(_mm256_cmpeq_epi64(bad, zero), cand);
  r.marking = _mm256_or_si256(x, out);
  return r;
}

/* One half (lanes 4h .. 4h+3) of a block: decide, then merge the committed lanes into the
 * block's fields (blends, full stores). Returns the committed lanes as 4 bits. */
KNHK_AVX2 KNHK_INLINE uint32_t block_half(const knhk_net_t *net, knhk_block_t *b, size_t half,
                                          __m256i task, const task_pair *pair, int one_xreg) {
  const size_t o = half * 4;
  const __m256i all = _mm256_set1_epi64x(-1);
  const __m256i m = _mm256_load_si256((const __m256i *)&b->marking[o]);
  const __m256i busy = _mm256_load_si256((const __m256i *)&b->busy[o]);
  const __m256i flags = _mm256_load_si256((const __m256i *)&b->flags[o]);
  const __m256i seq = _mm256_load_si256((const __m256i *)&b->seq[o]);
  const int64_t *xreg =
      one_xreg ? &b->regs[KNHK_HOT_TABLES(net)->xor_split_reg & (KNHK_REGISTERS - 1)][o] : NULL;
  const __m256i lane_off = _mm256_setr_epi64x((long long)(o * 8), (long long)(o * 8 + 8),
                                              (long long)(o * 8 + 16), (long long)(o * 8 + 24));
  const hot4 r = hot_rules4(net, all, task, pair, m, busy, flags, xreg,
                            (const char *)&b->regs[0][0], lane_off, 6);
  _mm256_store_si256((__m256i *)&b->marking[o], _mm256_blendv_epi8(m, r.marking, r.commit));
  /* seq - (-1) = seq + 1 in committed lanes */
  _mm256_store_si256((__m256i *)&b->seq[o], _mm256_sub_epi64(seq, r.commit));
  /* committed lanes' flags were 0; they change only where a lane's task may end the case */
  if (pair->kinds & KNHK_HOT_ENDS)
    _mm256_store_si256((__m256i *)&b->flags[o],
                       _mm256_or_si256(flags, _mm256_and_si256(r.flags, r.commit)));
  return (uint32_t)_mm256_movemask_pd(_mm256_castsi256_pd(r.commit));
}

/* Nets of at most 32 conditions and 32 tasks: a block's markings, busy sets and flags then
 * fit in 32 bits, so its 8 lanes are one register of 32-bit lanes (the 64-bit fields packed
 * on load, widened on store) and each rule is one vector operation instead of two (one per
 * half). Blocks with a bit above 31 in any of those words (not a valid case of such a net,
 * but a caller may write one) take the halves, so the result is the same byte for byte. */

/* The low dwords of a's and b's four 64-bit lanes, in lane order: a0 a1 a2 a3 b0 b1 b2 b3. */
KNHK_AVX2 KNHK_INLINE __m256i pack_lo32(__m256i a, __m256i b) {
  const __m256i t = _mm256_blend_epi32(a, _mm256_slli_epi64(b, 32), 0xAA); /* a0 b0 a1 b1 ... */
  return _mm256_permutevar8x32_epi32(t, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
}

/* The low dword of table[t0] or, in the lanes of sel (32-bit lanes), of table[t1]. */
KNHK_AVX2 KNHK_INLINE __m256i entry8(const uint64_t *table, const task_pair *pair, __m256i sel) {
  const __m256i a = _mm256_set1_epi32((int)(uint32_t)table[pair->t0]);
  if (pair->t1 == pair->t0) return a;
  return _mm256_blendv_epi8(a, _mm256_set1_epi32((int)(uint32_t)table[pair->t1]), sel);
}

/* table[t0] or, in the lanes of sel (64-bit lanes), table[t1]: 64-bit entries for a half. */
KNHK_AVX2 KNHK_INLINE __m256i entry4w(const uint64_t *table, const task_pair *pair,
                                      __m256i sel) {
  const __m256i a = _mm256_set1_epi64x((long long)table[pair->t0]);
  if (pair->t1 == pair->t0) return a;
  return _mm256_blendv_epi8(a, _mm256_set1_epi64x((long long)table[pair->t1]), sel);
}

/* Whether every marking, busy and flags word of the block fits in 32 bits. */
KNHK_AVX2 KNHK_INLINE int block_fits32(const knhk_block_t *b) {
  __m256i any = _mm256_setzero_si256();
  for (size_t o = 0; o < KNHK_BEAT_LANES; o += 4) {
    any = _mm256_or_si256(any, _mm256_load_si256((const __m256i *)&b->marking[o]));
    any = _mm256_or_si256(any, _mm256_load_si256((const __m256i *)&b->busy[o]));
    any = _mm256_or_si256(any, _mm256_load_si256((const __m256i *)&b->flags[o]));
  }
  return _mm256_testz_si256(any, _mm256_set1_epi64x((long long)0xFFFFFFFF00000000ull));
}

/* The rules of hot_rules4 for all 8 lanes of a block as 32-bit lanes, and the merge into the
 * block. `sel8`, `xj8`, `xs8`: bytes of all ones in the lanes of t1, of an XOR join, of an
 * XOR split (the caller's). Returns the committed lanes as 8 bits. */
KNHK_AVX2 KNHK_INLINE uint32_t block_narrow(const knhk_net_t *net, knhk_block_t *b,
                                            const task_pair *pair, __m128i sel8, __m128i xj8,
                                            __m128i xs8, int one_xreg) {
  const knhk_hot_t *h = KNHK_HOT_TABLES(net);
  const __m256i zero = _mm256_setzero_si256();
  const __m256i one = _mm256_set1_epi32(1);
  const __m256i sel = _mm256_cvtepi8_epi32(sel8);
#define LOAD4(field, o) _mm256_load_si256((const __m256i *)&b->field[o])
  const __m256i m = pack_lo32(LOAD4(marking, 0), LOAD4(marking, 4));
  const __m256i busy = pack_lo32(LOAD4(busy, 0), LOAD4(busy, 4));
  const __m256i flags = pack_lo32(LOAD4(flags, 0), LOAD4(flags, 4));
  __m256i bad = flags;
  const __m256i pre = entry8(h->pre, pair, sel);
  __m256i consume = pre;
  if (pair->kinds & KNHK_HOT_XOR_JOIN) {
    const __m256i xj = _mm256_cvtepi8_epi32(xj8);
    const __m256i have = _mm256_and_si256(m, pre);
    const __m256i less = _mm256_sub_epi32(have, one);
    /* two or more bits: have & (have - 1); none: the top bit of (have - 1) & ~have */
    const __m256i multi = _mm256_and_si256(have, less);
    const __m256i none = _mm256_srli_epi32(_mm256_andnot_si256(have, less), 31);
    bad = _mm256_or_si256(bad, _mm256_and_si256(xj, _mm256_or_si256(multi, none)));
    consume = _mm256_blendv_epi8(pre, have, xj);
  }
  __m256i out = entry8(h->out_on, pair, sel);
  if (pair->kinds & KNHK_HOT_XOR_SPLIT) {
    /* the guard on 64-bit registers, a half at a time; its result packed like the fields */
    const __m256i sel_lo = _mm256_cvtepi8_epi64(sel8);
    const __m256i sel_hi = _mm256_cvtepi8_epi64(_mm_srli_si128(sel8, 4));
    const uint32_t l0 = one_xreg ? h->xor_split_reg : h->meta[pair->t0].lhs;
    const uint32_t l1 = one_xreg ? h->xor_split_reg : h->meta[pair->t1].lhs;
    const int64_t *r0 = b->regs[l0 & (KNHK_REGISTERS - 1)];
    const int64_t *r1 = b->regs[l1 & (KNHK_REGISTERS - 1)];
    __m256i v_lo = _mm256_load_si256((const __m256i *)&r0[0]);
    __m256i v_hi = _mm256_load_si256((const __m256i *)&r0[4]);
    if (r1 != r0) {
      v_lo = _mm256_blendv_epi8(v_lo, _mm256_load_si256((const __m256i *)&r1[0]), sel_lo);
      v_hi = _mm256_blendv_epi8(v_hi, _mm256_load_si256((const __m256i *)&r1[4]), sel_hi);
    }
    const __m256i sign = _mm256_set1_epi64x((long long)0x8000000000000000ull);
    /* unsigned v - lo > span */
    const __m256i f_lo = _mm256_cmpgt_epi64(
        _mm256_xor_si256(_mm256_sub_epi64(v_lo, entry4w(h->lo, pair, sel_lo)), sign),
        _mm256_xor_si256(entry4w(h->span, pair, sel_lo), sign));
    const __m256i f_hi = _mm256_cmpgt_epi64(
        _mm256_xor_si256(_mm256_sub_epi64(v_hi, entry4w(h->lo, pair, sel_hi)), sign),
        _mm256_xor_si256(entry4w(h->span, pair, sel_hi), sign));
    const __m256i failed = _mm256_and_si256(_mm256_cvtepi8_epi32(xs8), pack_lo32(f_lo, f_hi));
    out = _mm256_xor_si256(out, _mm256_and_si256(failed, entry8(h->out_flip, pair, sel)));
  }
  const __m256i x = _mm256_xor_si256(m, consume);
  /* an input not marked or a token onto a marked condition; the task busy */
  bad = _mm256_or_si256(bad, _mm256_and_si256(x, _mm256_or_si256(consume, out)));
  bad = _mm256_or_si256(bad, _mm256_and_si256(busy, entry8(h->task_bit, pair, sel)));
  __m256i ended = zero;
  if (pair->kinds & KNHK_HOT_ENDS) {
    /* the case ends: with other work left it is an explicit termination (scalar rules), else
     * flags := DONE | COMPLETED */
    const __m256i ends01 =
        _mm256_srl_epi32(_mm256_and_si256(out, _mm256_set1_epi32((int)(uint32_t)net->output)),
                         _mm_cvtsi32_si128((int)knhk_ctz64(net->output)));
    const __m256i ends = _mm256_sub_epi32(zero, ends01); /* all ones */
    bad = _mm256_or_si256(bad, _mm256_and_si256(_mm256_or_si256(x, busy), ends));
    ended = _mm256_and_si256(ends, _mm256_set1_epi32(KNHK_FLAG_DONE | KNHK_FLAG_COMPLETED));
  }
  const __m256i commit = _mm256_cmpeq_epi32(bad, zero);
  const __m256i nm = _mm256_blendv_epi8(m, _mm256_or_si256(x, out), commit);
  _mm256_store_si256((__m256i *)&b->marking[0], _mm256_cvtepu32_epi64(_mm256_castsi256_si128(nm)));
  _mm256_store_si256((__m256i *)&b->marking[4],
                     _mm256_cvtepu32_epi64(_mm256_extracti128_si256(nm, 1)));
  /* seq - (-1) = seq + 1 in committed lanes */
  _mm256_store_si256((__m256i *)&b->seq[0],
                     _mm256_sub_epi64(LOAD4(seq, 0),
                                      _mm256_cvtepi32_epi64(_mm256_castsi256_si128(commit))));
  _mm256_store_si256((__m256i *)&b->seq[4],
                     _mm256_sub_epi64(LOAD4(seq, 4),
                                      _mm256_cvtepi32_epi64(_mm256_extracti128_si256(commit, 1))));
  if (pair->kinds & KNHK_HOT_ENDS) {
    /* committed lanes' flags were 0 */
    const __m256i nf = _mm256_or_si256(flags, _mm256_and_si256(ended, commit));
    _mm256_store_si256((__m256i *)&b->flags[0],
                       _mm256_cvtepu32_epi64(_mm256_castsi256_si128(nf)));
    _mm256_store_si256((__m256i *)&b->flags[4],
                       _mm256_cvtepu32_epi64(_mm256_extracti128_si256(nf, 1)));
  }
#undef LOAD4
  return (uint32_t)_mm256_movemask_ps(_mm256_castsi256_ps(commit));
}

KNHK_AVX2 KNHK_HOT_ENTRY knhk_status knhk_block_fire_avx2(const knhk_net_t *net,
                                                          knhk_block_t *blocks, uint32_t nblocks,
                                                          const uint8_t *tasks,
                                                          uint8_t *statuses) {
  const knhk_hot_t *h = KNHK_HOT_TABLES(net);
  const int one_xreg = h->xor_split_reg < KNHK_REGISTERS;
  /* every marking and busy set of the net fits in 32 bits (block_narrow) */
  const int narrow = net->nconditions <= 32 && net->ntasks <= 32;
  for (uint32_t k = 0; k < nblocks; k++) {
    knhk_block_t *b = &blocks[k];
    const uint8_t *tk = &tasks[(size_t)k * KNHK_BEAT_LANES];
    uint8_t *st = &statuses[(size_t)k * KNHK_BEAT_LANES];
    uint64_t tw;
    memcpy(&tw, tk, sizeof tw);
    const __m128i t8 = _mm_cvtsi64_si128((long long)tw);
    task_pair pair;
    pair.t0 = tk[0];
    /* the lanes' tasks: t0 and, where they differ, the first other task t1 */
    const uint32_t not0 =
        (uint32_t)_mm_movemask_epi8(_mm_cmpeq_epi8(t8, _mm_set1_epi8((char)pair.t0))) ^ 0xFFFFu;
    pair.t1 = (not0 & 0xFFu) ? tk[__builtin_ctz(not0)] : pair.t0;
    const __m128i is1 = _mm_cmpeq_epi8(t8, _mm_set1_epi8((char)pair.t1));
    /* three or more tasks in the block, or one beyond the net: the table lookups would be
     * gathers, measured slower than the scalar path (docs/performance.md), so the block takes
     * the scalar path */
    if (KNHK_UNLIKELY((not0 & ~(uint32_t)_mm_movemask_epi8(is1) & 0xFFu) ||
                      pair.t0 >= net->ntasks || pair.t1 >= net->ntasks)) {
      (void)knhk_block_fire_scalar(net, b, 1, tk, st);
      continue;
    }
    /* both tasks' kinds, read once per block: a task that is not hot (its lanes would all go
     * to the scalar rules) sends the block to the scalar path; otherwise the lanes' XOR join
     * and XOR split masks follow from the two kinds and the lane selector */
    const uint32_t k0 = h->meta[pair.t0].kind, k1 = h->meta[pair.t1].kind;
    if (KNHK_UNLIKELY(!(k0 & k1 & KNHK_HOT))) {
      (void)knhk_block_fire_scalar(net, b, 1, tk, st);
      continue;
    }
    pair.kinds = k0 | k1;
    const __m128i sel8 = _mm_andnot_si128(_mm_cmpeq_epi8(t8, _mm_set1_epi8((char)pair.t0)), is1);
    const __m128i all8 = _mm_set1_epi8(-1);
    /* the lanes with kind bit `bit`: every lane, none, or those of t1 or of t0 */
#define KIND_LANES8(bit)                                                                 \
  ((k0 & (bit)) ? ((k1 & (bit)) ? all8 : _mm_andnot_si128(sel8, all8))                  \
                : ((k1 & (bit)) ? sel8 : _mm_setzero_si128()))
    const __m128i xj8 = KIND_LANES8(KNHK_HOT_XOR_JOIN);
    const __m128i xs8 = KIND_LANES8(KNHK_HOT_XOR_SPLIT);
#undef KIND_LANES8
    uint32_t commit;
    if (narrow && block_fits32(b)) {
      commit = block_narrow(net, b, &pair, sel8, xj8, xs8, one_xreg);
    } else {
      pair.sel = _mm256_cvtepi8_epi64(sel8);
      pair.xor_join = _mm256_cvtepi8_epi64(xj8);
      pair.xor_split = _mm256_cvtepi8_epi64(xs8);
      const uint32_t lo = block_half(net, b, 0, _mm256_cvtepu8_epi64(t8), &pair, one_xreg);
      pair.sel = _mm256_cvtepi8_epi64(_mm_srli_si128(sel8, 4));
      pair.xor_join = _mm256_cvtepi8_epi64(_mm_srli_si128(xj8, 4));
      pair.xor_split = _mm256_cvtepi8_epi64(_mm_srli_si128(xs8, 4));
      const uint32_t hi =
          block_half(net, b, 1, _mm256_cvtepu8_epi64(_mm_srli_si128(t8, 4)), &pair, one_xreg);
      commit = lo | hi << 4;
    }
    memset(st, KNHK_OK, KNHK_BEAT_LANES);
    /* every other lane on the scalar rules (lanes are distinct cases: any order gives the
     * same result) */
    if (KNHK_UNLIKELY(commit != 0xFF)) {
      for (uint32_t left = ~commit & 0xFFu; left; left &= left - 1) {
        uint32_t i = (uint32_t)__builtin_ctz(left);
        st[i] = (uint8_t)knhk_block_lane_fire(net, b, i, tk[i]);
      }
    }
  }
  return KNHK_OK;
}

/* 4 qwords at base + off[i] (byte offsets), all lanes. */
#define GATHER4(off, base) _mm256_i64gather_epi64((const long long *)(const void *)(base), (off), 1)

KNHK_AVX2 knhk_status knhk_beat_avx2(const knhk_net_t *net, knhk_case_t *cases, uint32_t ncases,
                                     const knhk_event_t *events, uint8_t *statuses) {
  /* Events are 16 bytes: dword 0 = case_index, dword 1 = op | task << 8 | flags << 16. Two
   * events per register; unpacking gives the lanes in the order 0 2 4 6 1 3 5 7. */
  const __m256i e01 = _mm256_loadu_si256((const __m256i *)(const void *)(events + 0));
  const __m256i e23 = _mm256_loadu_si256((const __m256i *)(const void *)(events + 2));
  const __m256i e45 = _mm256_loadu_si256((const __m256i *)(const void *)(events + 4));
  const __m256i e67 = _mm256_loadu_si256((const __m256i *)(const void *)(events + 6));
  const __m256i a = _mm256_unpacklo_epi32(e01, e23); /* c0 c2 w0 w2 | c1 c3 w1 w3 */
  const __m256i bb = _mm256_unpacklo_epi32(e45, e67); /* c4 c6 w4 w6 | c5 c7 w5 w7 */
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const __m256i idx = _mm256_permutevar8x32_epi32(_mm256_unpacklo_epi64(a, bb), order);
  const __m256i w1 = _mm256_permutevar8x32_epi32(_mm256_unpackhi_epi64(a, bb), order);
  const __m256i byte = _mm256_set1_epi32(0xff);
  const __m256i op = _mm256_and_si256(w1, byte);
  const __m256i task = _mm256_and_si256(_mm256_srli_epi32(w1, 8), byte);
  const __m256i eflags = _mm256_srli_epi32(w1, 16);
  const __m256i flip32 = _mm256_set1_epi32((int)0x80000000u);
  /* idx < ncases, unsigned */
  const __m256i in_range = _mm256_cmpgt_epi32(_mm256_xor_si256(_mm256_set1_epi32((int)ncases), flip32),
                                              _mm256_xor_si256(idx, flip32));
  /* Two in-range lanes on one case: the whole beat in lane order on the scalar path. Every
   * pair of lanes is at a distance of 1 to 4 in one of the two directions of a rotation. */
  __m256i dup = _mm256_setzero_si256();
  for (int r = 1; r <= 4; r++) {
    const __m256i rot = _mm256_setr_epi32(r & 7, (1 + r) & 7, (2 + r) & 7, (3 + r) & 7,
                                          (4 + r) & 7, (5 + r) & 7, (6 + r) & 7, (7 + r) & 7);
    const __m256i same = _mm256_cmpeq_epi32(idx, _mm256_permutevar8x32_epi32(idx, rot));
    dup = _mm256_or_si256(
        dup, _mm256_and_si256(same, _mm256_permutevar8x32_epi32(in_range, rot)));
  }
  if (!_mm256_testz_si256(dup, in_range))
    return knhk_beat_scalar(net, cases, ncases, events, KNHK_BEAT_LANES, statuses);

  /* fires that evaluate their guards (caller-supplied bits take the scalar path) */
  const __m256i ok32 = _mm256_andnot_si256(
      _mm256_cmpeq_epi32(_mm256_and_si256(eflags, _mm256_set1_epi32(KNHK_EVENT_USE_BITS)),
                         _mm256_set1_epi32(KNHK_EVENT_USE_BITS)),
      _mm256_and_si256(in_range, _mm256_cmpeq_epi32(op, _mm256_set1_epi32(KNHK_OP_FIRE))));
  uint32_t done = 0;
  if (!_mm256_testz_si256(ok32, ok32)) {
    char *cb = (char *)cases;
    /* lanes out of the vector: case index 0 (in bounds, ncases > 0 as some lane is in range),
     * refused below as not candidates */
    const __m256i safe = _mm256_and_si256(idx, ok32);
    uint64_t mk[8], sq[8], fl[8];
    for (int half = 0; half < 2; half++) {
      const __m128i c32 = half ? _mm256_extracti128_si256(safe, 1) : _mm256_castsi256_si128(safe);
      const __m128i k32 = half ? _mm256_extracti128_si256(ok32, 1) : _mm256_castsi256_si128(ok32);
      const __m128i t32 = half ? _mm256_extracti128_si256(task, 1) : _mm256_castsi256_si128(task);
      const __m256i cand = _mm256_cvtepi32_epi64(k32);
      const __m256i coff = _mm256_slli_epi64(_mm256_cvtepu32_epi64(c32), KNHK_CASE_SHIFT);
      const __m256i m = GATHER4(coff, cb + offsetof(knhk_case_t, marking));
      const __m256i busy = GATHER4(coff, cb + offsetof(knhk_case_t, busy));
      const __m256i flags = _mm256_and_si256(GATHER4(coff, cb + offsetof(knhk_case_t, flags)),
                                             _mm256_set1_epi64x(0xffffffff));
      const __m256i seq = GATHER4(coff, cb + offsetof(knhk_case_t, seq));
      const hot4 r = hot_rules4(net, cand, _mm256_cvtepu32_epi64(t32), NULL, m, busy, flags,
                                NULL, cb + offsetof(knhk_case_t, regs), coff, 3);
      _mm256_storeu_si256((__m256i *)(void *)&mk[half * 4], r.marking);
      _mm256_storeu_si256((__m256i *)(void *)&sq[half * 4],
                          _mm256_add_epi64(seq, _mm256_set1_epi64x(1)));
      _mm256_storeu_si256((__m256i *)(void *)&fl[half * 4], r.flags);
      done |= (uint32_t)_mm256_movemask_pd(_mm256_castsi256_pd(r.commit)) << (half * 4);
    }
    for (uint32_t left = done; left; left &= left - 1) {
      uint32_t i = (uint32_t)__builtin_ctz(left);
      knhk_case_t *c = &cases[events[i].case_index];
      c->marking = mk[i];
      c->seq = sq[i];
      if (fl[i]) c->flags = (uint32_t)fl[i];
    }
  }
  memset(statuses, KNHK_OK, KNHK_BEAT_LANES);
  /* Every other lane, in lane order, on the scalar rules. */
  for (uint32_t left = ~done & 0xFFu; left; left &= left - 1) {
    uint32_t i = (uint32_t)__builtin_ctz(left);
    (void)knhk_beat_scalar(net, cases, ncases, &events[i], 1, &statuses[i]);
  }
  return KNHK_OK;
}

#else

/* Keeps the translation unit non-empty where there is no AVX2 path (ISO C). */
typedef int knhk_beat_avx2_unused;

#endif
