/* knhk_case.c — executing cases: the one implementation of the firing rules (DESIGN.md §2).
 *
 * Every operation works on local copies of the case words and writes them back only when it
 * succeeds, so a refusal leaves the case byte-for-byte unchanged. No allocation, no locks, no
 * syscalls, no timing code. */
#include "knhk_internal.h"

#include <stddef.h>
#include <string.h>

/* ---- guards: no branches (knhk_compare and knhk_truth in knhk_internal.h) ---- */

KNHK_INLINE uint32_t term_eval(const knhk_term_t *term, const int64_t *regs) {
  int64_t a = regs[term->lhs & (KNHK_REGISTERS - 1)];
  int64_t reg = regs[term->rhs_reg & (KNHK_REGISTERS - 1)];
  int64_t use_reg = -(int64_t)(term->rhs_is_reg & 1);
  int64_t b = (reg & use_reg) | (term->rhs_const & ~use_reg);
  return knhk_compare(a, b, knhk_truth[term->op & 15]);
}

KNHK_INLINE uint32_t guard_eval(const knhk_guard_t *g, const int64_t *regs) {
  uint32_t a = term_eval(&g->term[0], regs);
  uint32_t b = term_eval(&g->term[1], regs);
  uint32_t is_or = g->combine & 1u;
  return (a & b) | ((a | b) & is_or);
}

/* ---- the working copy of a case ---- */

typedef struct work {
  uint64_t m, busy, or_expect, absorb, mi_live;
  uint32_t flags;
} work_t;

KNHK_INLINE void load(work_t *w, const knhk_case_t *c) {
  w->m = c->marking;
  w->busy = c->busy;
  w->or_expect = c->or_expect;
  w->absorb = c->absorb;
  w->mi_live = c->mi_live;
  w->flags = c->flags;
}

/* The slot of an MI task whose mi_live bit an operation cleared is zeroed here: withdrawn
 * instances (cancellation, threshold, termination) leave no trace. */
__attribute__((noinline)) static void clear_slots(const knhk_net_t *n, knhk_case_t *c,
                                                  uint64_t gone) {
  while (gone) {
    uint32_t t = knhk_ctz64(gone);
    uint32_t k = (uint32_t)(n->tasks[t].mi.slot - 1u) & (KNHK_MAX_MI_TASKS - 1u);
    c->mi[k].started = 0;
    c->mi[k].done = 0;
    c->mi[k].base = 0;
    c->mi[k].created = 0;
    c->mi[k].completed = 0;
    c->mi[k].reserved = 0;
    gone &= gone - 1;
  }
}

KNHK_INLINE void store(const knhk_net_t *n, knhk_case_t *c, const work_t *w) {
  uint64_t gone = c->mi_live & ~w->mi_live;
  if (KNHK_UNLIKELY(gone)) clear_slots(n, c, gone);
  c->marking = w->m;
  c->busy = w->busy;
  c->or_expect = w->or_expect;
  c->absorb = w->absorb;
  c->mi_live = w->mi_live;
  c->flags = w->flags;
  c->seq++;
}

/* A general (non-local) OR-join t with some but not all inputs marked: enabled when nothing
 * upstream can move (two masks), else when the key of the state is in the table seal derived
 * (knhk_hot_t.orj_*; knhk_net.c, orjoin_seal): a multiply-shift hash and one or a few
 * compared slots. */
static inline int orjoin_enabled(const knhk_net_t *n, uint32_t t, uint64_t m, uint64_t busy) {
  const knhk_hot_t *h = KNHK_HOT_TABLES(n);
  /* nothing upstream can move (no token but on inputs only t consumes, nothing busy): no
   * state but this one is reachable, so no further input can be marked */
  if (((m & h->orj_quiet[t]) | (busy & h->orj_tasks[t])) == 0) return 1;
  uint64_t km = m & h->orj_conds[t], kb = (busy & h->orj_tasks[t]) | KNHK_BIT(t);
  uint32_t slot = knhk_orj_slot(km, kb);
  /* the first slot holds the key, or one of its keys' neighbours; probes past it are rare */
  if (h->orj_table[slot].busy == kb && h->orj_table[slot].marking == km) return 1;
  for (uint32_t p = 1; p <= h->orj_probes; p++) {
    const uint32_t i = (slot + p) & (2u * KNHK_ORJOIN_MAX_KEYS - 1u);
    if (h->orj_table[i].busy == kb && h->orj_table[i].marking == km) return 1;
    if (h->orj_table[i].busy == 0) return 0;
  }
  return 0;
}

/* Start: returns 1 and updates *w when task t (bit) is enabled, else 0 with *w garbage. */
KNHK_INLINE int start_work(const knhk_net_t *n, uint32_t t, const knhk_task_t *T, uint64_t bit,
                           work_t *w) {
  uint64_t have = w->m & T->pre;
  uint64_t consume;
  int enabled;
  switch (T->join) {
    case KNHK_JOIN_AND:
      enabled = have == T->pre;
      consume = T->pre;
      break;
    case KNHK_JOIN_XOR:
      enabled = have != 0;
      consume = have & (0 - have);
      break;
    case KNHK_JOIN_OR: {
      if (KNHK_HOT_TABLES(n)->orj_general & bit) {
        /* general OR-join (WCP-37/38): consumes every marked input */
        enabled = have == T->pre || (have != 0 && orjoin_enabled(n, t, w->m, w->busy));
        consume = have;
        break;
      }
      uint64_t need = T->pre & w->or_expect;
      enabled = need != 0 && (have & need) == need;
      consume = need;
      w->or_expect &= ~need;
      break;
    }
    default: /* KNHK_JOIN_DISCRIMINATOR */
      enabled = have != 0;
      consume = have;
      w->absorb |= T->pre & ~have;
      break;
  }
  /* an MI task with instances still running after its threshold (KNHK_MI_KEEP) waits */
  enabled &= ((w->busy | w->mi_live) & bit) == 0;
  w->m &= ~consume;
  w->busy |= bit;
  return enabled;
}

/* Termination rules after tokens moved (WCP-43 explicit, WCP-11 implicit). */
KNHK_INLINE void settle(const knhk_net_t *n, work_t *w) {
  if (w->m & n->output) {
    if ((w->m ^ n->output) | w->busy | w->mi_live) w->flags |= KNHK_FLAG_EXPLICIT_TERMINATION;
    w->m = n->output;
    w->busy = 0;
    w->or_expect = 0;
    w->absorb = 0;
    w->mi_live = 0;
    w->flags |= KNHK_FLAG_DONE | KNHK_FLAG_COMPLETED;
  } else if ((w->m | w->busy | w->mi_live) == 0) {
    w->flags |= KNHK_FLAG_DONE | KNHK_FLAG_COMPLETED | KNHK_FLAG_IMPLICIT_TERMINATION;
  }
}

/* Complete: cancellation first, then the split's output. Returns a status; *w is only
 * meaningful on KNHK_OK. `bits` are the branch predicates (computed or supplied). */
KNHK_INLINE knhk_status complete_work(const knhk_net_t *n, uint32_t t, const knhk_task_t *T,
                                      uint64_t bit, uint64_t bits, work_t *w) {
  uint64_t out, expect;
  (void)t;
  if (T->split == KNHK_SPLIT_AND) {
    out = T->post;
    expect = T->or_expect_all;
  } else {
    /* the task's flows in the net's flow array (up to KNHK_MAX_BRANCHES = 64: bit k = flow k) */
    const knhk_branch_t *br = &n->branches[T->first_branch];
    uint64_t valid = ~0ull >> ((64u - T->nbranches) & 63u); /* nbranches >= 1 after seal */
    uint32_t d = T->default_branch & 63u;
    uint64_t def = 1ull << d;
    if (T->split == KNHK_SPLIT_XOR) {
      /* first true guard in order; the default flow is the fallback, never raced */
      bits &= valid & ~def;
      bits |= (uint64_t)(bits == 0) << d;
      uint32_t k = (uint32_t)__builtin_ctzll(bits);
      out = br[k].conditions;
      expect = br[k].or_expect;
    } else {
      /* OR: every true guard (the default's own guard included), else the default */
      bits &= valid;
      bits |= (uint64_t)(bits == 0) << d;
      out = 0;
      expect = 0;
      while (bits) {
        uint32_t k = (uint32_t)__builtin_ctzll(bits);
        out |= br[k].conditions;
        expect |= br[k].or_expect;
        bits &= bits - 1;
      }
    }
  }
  w->m &= ~T->cancel_conditions;
  w->or_expect &= ~T->cancel_conditions;
  w->absorb &= ~T->cancel_conditions;
  w->busy &= ~(T->cancel_tasks | bit);
  w->mi_live &= ~T->cancel_tasks; /* a withdrawn MI task's instances go with it */
  uint64_t absorbed = out & w->absorb;
  out ^= absorbed;
  w->absorb ^= absorbed;
  if (KNHK_UNLIKELY(w->m & out)) return KNHK_SAFETY_VIOLATION;
  w->m |= out;
  w->or_expect |= expect;
  settle(n, w);
  return KNHK_OK;
}

KNHK_INLINE uint64_t eval_bits(const knhk_net_t *n, const knhk_case_t *c, const knhk_task_t *T) {
  if (T->split == KNHK_SPLIT_AND) return 0;
  uint64_t bits = 0;
  const knhk_branch_t *br = &n->branches[T->first_branch];
  if (KNHK_UNLIKELY(T->split == KNHK_SPLIT_XOR && T->nbranches > 8)) {
    /* a wide XOR split: complete_work takes the first true non-default flow, so the guards
     * after it (and the default's) need not be evaluated; none true: 0, the default */
    for (uint32_t k = 0; k < T->nbranches; k++)
      if (k != T->default_branch && guard_eval(&br[k].guard, c->regs)) return 1ull << k;
    return 0;
  }
  for (uint32_t k = 0; k < T->nbranches; k++)
    bits |= (uint64_t)guard_eval(&br[k].guard, c->regs) << k;
  return bits;
}

/* Precondition shared by every case operation. */
KNHK_INLINE knhk_status admit(const knhk_net_t *n, const knhk_case_t *c, uint32_t t) {
  if (KNHK_UNLIKELY(!n->sealed)) return KNHK_NOT_SEALED;
  if (KNHK_UNLIKELY(t >= n->ntasks)) return KNHK_BAD_TASK;
  if (KNHK_UNLIKELY(c->flags & KNHK_FLAG_DONE)) return KNHK_CASE_COMPLETE;
  return KNHK_OK;
}

static knhk_status op_start_mi(const knhk_net_t *n, knhk_case_t *c, uint32_t t, uint64_t count);

KNHK_INLINE knhk_status op_start(const knhk_net_t *n, knhk_case_t *c, uint32_t t) {
  knhk_status s = admit(n, c, t);
  if (s != KNHK_OK) return s;
  const knhk_task_t *T = &n->tasks[t];
  if (KNHK_UNLIKELY(T->mi.slot)) {
    /* the count: the count register's value (a negative one is out of range), else minimum */
    uint64_t count = T->mi.count_reg == KNHK_MI_NO_REG
                         ? T->mi.minimum
                         : (uint64_t)c->regs[T->mi.count_reg & (KNHK_REGISTERS - 1)];
    return op_start_mi(n, c, t, count);
  }
  work_t w;
  load(&w, c);
  if (!start_work(n, t, T, KNHK_BIT(t), &w)) return KNHK_NOT_ENABLED;
  store(n, c, &w);
  return KNHK_OK;
}

KNHK_INLINE knhk_status op_complete(const knhk_net_t *n, knhk_case_t *c, uint32_t t,
                                    uint64_t bits, int use_bits) {
  knhk_status s = admit(n, c, t);
  if (s != KNHK_OK) return s;
  const knhk_task_t *T = &n->tasks[t];
  uint64_t bit = KNHK_BIT(t);
  if (KNHK_UNLIKELY(T->mi.slot)) return KNHK_MI_TASK;
  if (!(c->busy & bit)) return KNHK_NOT_STARTED;
  if (!use_bits) bits = eval_bits(n, c, T);
  work_t w;
  load(&w, c);
  s = complete_work(n, t, T, bit, bits, &w);
  if (s != KNHK_OK) return s;
  store(n, c, &w);
  return KNHK_OK;
}

/* The short path of fire (knhk_hot_t, derived at seal): a hot task's fire touches only the
 * marking, seq and, when the case ends, flags. Returns KNHK_OK after committing, or
 * KNHK_TAKE_GENERAL_PATH when the general path must decide (a refusal, an explicit
 * termination, anything unusual); nothing is written then.
 *
 * The rules in one pass: consume = the preset (AND join) or its one marked input (XOR join);
 * x = marking ^ consume. The task may fire exactly when every consumed condition was marked
 * and no produced condition is marked after consuming: (x & (consume | out)) == 0. The new
 * marking is x | out. Every refusal check is folded into
 * one word, so the common path has one data-dependent branch.
 *
 * fire_hot_any tests the task's kind bit by bit: the block and beat lanes take it, and so does
 * knhk_fire, out of line, for the kinds it has no sequence of its own for (fire_short below).
 * The case is given field by field (regs with a stride) so that the same code serves a
 * knhk_case_t and a lane of a knhk_block_t. */
#define KNHK_TAKE_GENERAL_PATH (-1)
KNHK_INLINE int fire_hot_any(const knhk_net_t *n, uint64_t *marking, const uint64_t *busy,
                             void *flags, int wide_flags, uint64_t *seq, const int64_t *regs,
                             uint32_t stride, uint32_t t, uint32_t bits, int use_bits) {
  if (KNHK_UNLIKELY(t >= KNHK_MAX_TASKS)) return KNHK_TAKE_GENERAL_PATH;
  const knhk_hot_t *h = KNHK_HOT_TABLES(n);
  const knhk_hot_meta_t meta = h->meta[t]; /* kind 0 for unsealed nets and slots >= ntasks */
  if (KNHK_UNLIKELY(!(meta.kind & KNHK_HOT))) return KNHK_TAKE_GENERAL_PATH;
  uint64_t m = *marking;
  /* AND join: consume the preset. XOR join: the one marked input (none or two or more
   * marked: the general path decides, consuming the lowest). */
  uint64_t consume = h->pre[t];
  if (KNHK_UNLIKELY(meta.kind & KNHK_HOT_XOR_JOIN)) {
    consume &= m;
    if (KNHK_UNLIKELY((consume & (consume - 1)) | (uint64_t)(consume == 0)))
      return KNHK_TAKE_GENERAL_PATH;
  }
  uint64_t out = h->out_on[t];
  if (meta.kind & KNHK_HOT_XOR_SPLIT) {
    uint64_t failed; /* all ones when the guard does not hold */
    if (use_bits) {
      failed = (uint64_t)((bits & meta.race) == 0);
    } else {
      uint64_t v = (uint64_t)regs[(size_t)meta.lhs * stride];
      failed = (uint64_t)(h->span[t] < v - h->lo[t]);
    }
    /* a select by mask, not a branch: guards on case data are unpredictable in general */
    out ^= h->out_flip[t] & (0 - failed);
  }
  /* x: the marking after consuming; the new marking depends on the old one through one XOR
   * (then OR out), the shortest chain through memory for successive fires on one case */
  uint64_t x = m ^ consume;
  /* refused or unusual: an input not marked, a token onto a marked condition, busy, done or
   * flagged */
  /* flags: a uint32_t in knhk_case_t, a uint64_t in a block lane (a constant per caller) */
  uint64_t fl = wide_flags ? *(const uint64_t *)flags : *(const uint32_t *)flags;
  uint64_t bad = (x & (consume | out)) | fl;
  if (KNHK_UNLIKELY(bad)) return KNHK_TAKE_GENERAL_PATH;
  if (KNHK_UNLIKELY((*busy >> t) & 1u)) return KNHK_TAKE_GENERAL_PATH;
  if ((meta.kind & KNHK_HOT_ENDS) && (out & n->output)) {
    /* the case ends; with other work left it is an explicit termination: general path */
    if (KNHK_UNLIKELY(x | *busy)) return KNHK_TAKE_GENERAL_PATH;
    if (wide_flags)
      *(uint64_t *)flags = KNHK_FLAG_DONE | KNHK_FLAG_COMPLETED;
    else
      *(uint32_t *)flags = KNHK_FLAG_DONE | KNHK_FLAG_COMPLETED;
  }
  *marking = x | out;
  *seq += 1;
  return KNHK_OK;
}

KNHK_INLINE int fire_hot_any_case(const knhk_net_t *n, knhk_case_t *c, uint32_t t,
                                  uint32_t bits, int use_bits) {
  return fire_hot_any(n, &c->marking, &c->busy, &c->flags, 0, &c->seq, c->regs, 1, t, bits,
                      use_bits);
}

KNHK_INLINE knhk_status op_fire(const knhk_net_t *n, knhk_case_t *c, uint32_t t, uint64_t bits,
                                int use_bits) {
  knhk_status s = admit(n, c, t);
  if (s != KNHK_OK) return s;
  const knhk_task_t *T = &n->tasks[t];
  uint64_t bit = KNHK_BIT(t);
  if (KNHK_UNLIKELY(T->mi.slot)) return KNHK_MI_TASK;
  if (!use_bits) bits = eval_bits(n, c, T);
  work_t w;
  load(&w, c);
  if (!start_work(n, t, T, bit, &w)) return KNHK_NOT_ENABLED;
  s = complete_work(n, t, T, bit, bits, &w);
  if (s != KNHK_OK) return s;
  store(n, c, &w);
  return KNHK_OK;
}

KNHK_INLINE knhk_status op_cancel_task(const knhk_net_t *n, knhk_case_t *c, uint32_t t) {
  knhk_status s = admit(n, c, t);
  if (s != KNHK_OK) return s;
  uint64_t bit = KNHK_BIT(t);
  work_t w;
  load(&w, c);
  if ((w.busy | w.mi_live) & bit) {
    /* a busy task is withdrawn; an MI task's instances (running, or past a KNHK_MI_KEEP
     * threshold) with it */
    w.busy &= ~bit;
    w.mi_live &= ~bit;
  } else {
    /* withdraw an enabled task: the tokens it would consume are removed, it does not run */
    if (!start_work(n, t, &n->tasks[t], bit, &w)) return KNHK_NOT_ENABLED;
    w.busy &= ~bit;
  }
  settle(n, &w);
  store(n, c, &w);
  return KNHK_OK;
}

KNHK_INLINE knhk_status op_cancel_case(const knhk_net_t *n, knhk_case_t *c) {
  if (KNHK_UNLIKELY(!n->sealed)) return KNHK_NOT_SEALED;
  if (c->flags & KNHK_FLAG_DONE) return KNHK_CASE_COMPLETE;
  work_t w;
  load(&w, c);
  w.m = 0;
  w.busy = 0;
  w.or_expect = 0;
  w.absorb = 0;
  w.mi_live = 0;
  w.flags |= KNHK_FLAG_DONE | KNHK_FLAG_CANCELLED;
  store(n, c, &w);
  return KNHK_OK;
}

/* ---- multiple-instance tasks (knhk.h; knhk_mi_slot_t) ---- */

/* Start of MI task t creating `count` instances: the task's start (tokens, busy), its slot
 * filled, and with threshold 0 (KNHK_MI_KEEP, WCP-12) its completion at once. */
static knhk_status op_start_mi(const knhk_net_t *n, knhk_case_t *c, uint32_t t, uint64_t count) {
  const knhk_task_t *T = &n->tasks[t];
  uint64_t bit = KNHK_BIT(t);
  work_t w;
  load(&w, c);
  if (!start_work(n, t, T, bit, &w)) return KNHK_NOT_ENABLED;
  if (count < T->mi.minimum || count > T->mi.maximum) return KNHK_MI_LIMIT;
  w.mi_live |= bit;
  if (T->mi.threshold == 0) {
    knhk_status s = complete_work(n, t, T, bit, eval_bits(n, c, T), &w);
    if (s != KNHK_OK) return s;
  }
  if (w.mi_live & bit) { /* not withdrawn by its own completion (explicit termination) */
    knhk_mi_slot_t *slot = &c->mi[(T->mi.slot - 1u) & (KNHK_MAX_MI_TASKS - 1u)];
    slot->started = 0;
    slot->done = 0;
    slot->base = 0;
    slot->created = (uint32_t)count;
    slot->completed = 0;
    slot->reserved = 0;
  }
  store(n, c, &w);
  return KNHK_OK;
}

/* Precondition of the instance operations: *slot is the live slot of MI task t. */
KNHK_INLINE knhk_status mi_admit(const knhk_net_t *n, const knhk_case_t *c, uint32_t t,
                                 uint32_t *slot) {
  knhk_status s = admit(n, c, t);
  if (s != KNHK_OK) return s;
  const knhk_task_t *T = &n->tasks[t];
  if (!T->mi.slot) return KNHK_NOT_MI_TASK;
  if (!(c->mi_live & KNHK_BIT(t))) return KNHK_NOT_STARTED;
  *slot = (T->mi.slot - 1u) & (KNHK_MAX_MI_TASKS - 1u);
  return KNHK_OK;
}

static knhk_status op_instance_start(const knhk_net_t *n, knhk_case_t *c, uint32_t t,
                                     uint32_t i) {
  uint32_t k = 0;
  knhk_status s = mi_admit(n, c, t, &k);
  if (s != KNHK_OK) return s;
  knhk_mi_slot_t *slot = &c->mi[k];
  if (i >= slot->created || i < slot->base) return KNHK_BAD_INSTANCE;
  uint32_t off = i - slot->base;
  if (off >= KNHK_MI_WINDOW_SIZE) return KNHK_MI_WINDOW;
  if (slot->started & KNHK_BIT(off)) return KNHK_BAD_INSTANCE;
  slot->started |= KNHK_BIT(off);
  c->seq++;
  return KNHK_OK;
}

static knhk_status op_instance_complete(const knhk_net_t *n, knhk_case_t *c, uint32_t t,
                                        uint32_t i, uint64_t bits, int use_bits) {
  uint32_t k = 0;
  knhk_status s = mi_admit(n, c, t, &k);
  if (s != KNHK_OK) return s;
  const knhk_task_t *T = &n->tasks[t];
  uint64_t bit = KNHK_BIT(t);
  knhk_mi_slot_t *sl = &c->mi[k];
  /* the slot's words one by one (a struct copy may read them as one vector, which cannot
   * take the value of an instance start's recent 8-byte store) */
  uint64_t started = sl->started, done = sl->done;
  uint32_t base = sl->base, created = sl->created;
  if (i >= created || i < base || i - base >= KNHK_MI_WINDOW_SIZE) return KNHK_BAD_INSTANCE;
  uint64_t b = KNHK_BIT(i - base);
  if (!(started & b) || (done & b)) return KNHK_BAD_INSTANCE;
  done |= b;
  /* base moves past the completed prefix (the window slides) */
  uint32_t skip = knhk_ctz64(~done);
  if (skip == 64) {
    started = 0;
    done = 0;
  } else {
    started >>= skip;
    done >>= skip;
  }
  base += skip;
  uint32_t completed = sl->completed + 1;
  uint32_t threshold = T->mi.threshold < created ? T->mi.threshold : created;
  if (KNHK_LIKELY((c->busy & bit) && completed < threshold)) {
    /* the common case: the task runs on; only the slot and seq change */
    sl->started = started;
    sl->done = done;
    sl->base = base;
    sl->completed = completed;
    c->seq++;
    return KNHK_OK;
  }
  work_t w;
  load(&w, c);
  if (w.busy & bit) {
    if (completed >= threshold) {
      /* the task completes; the rest are withdrawn (WCP-35) unless they run on (KEEP) */
      if (!(T->mi.flags & KNHK_MI_KEEP) || completed == created) w.mi_live &= ~bit;
      if (!use_bits) bits = eval_bits(n, c, T);
      s = complete_work(n, t, T, bit, bits, &w);
      if (s != KNHK_OK) return s;
    }
  } else if (completed == created) {
    /* the last instance running on past the threshold: the slot is free, the task may be
     * enabled again, and the case may end (nothing left) */
    w.mi_live &= ~bit;
    settle(n, &w);
  }
  if (w.mi_live & bit) {
    sl->started = started;
    sl->done = done;
    sl->base = base;
    sl->completed = completed;
  }
  store(n, c, &w);
  return KNHK_OK;
}

static knhk_status op_instance_add(const knhk_net_t *n, knhk_case_t *c, uint32_t t,
                                   uint32_t *out) {
  uint32_t k = 0;
  knhk_status s = mi_admit(n, c, t, &k);
  if (s != KNHK_OK) return s;
  const knhk_task_t *T = &n->tasks[t];
  if (!(c->busy & KNHK_BIT(t))) return KNHK_NOT_STARTED;
  if (!(T->mi.flags & KNHK_MI_DYNAMIC) || c->mi[k].created >= T->mi.maximum)
    return KNHK_MI_LIMIT;
  if (out) *out = c->mi[k].created;
  c->mi[k].created++;
  c->seq++;
  return KNHK_OK;
}

/* ---- public API ---- */

knhk_status knhk_case_init(const knhk_net_t *net, knhk_case_t *c) {
  if (!net || !c) return KNHK_BAD_ARGUMENT;
  if (!net->sealed) return KNHK_NOT_SEALED;
  c->marking = net->input;
  c->busy = 0;
  c->or_expect = 0;
  c->absorb = 0;
  c->seq = 0;
  c->flags = 0;
  c->reserved = 0;
  c->mi_live = 0;
  c->reserved2 = 0;
  for (uint32_t i = 0; i < KNHK_REGISTERS; i++) c->regs[i] = 0;
  memset(c->mi, 0, sizeof c->mi);
  return KNHK_OK;
}

uint64_t knhk_enabled(const knhk_net_t *n, const knhk_case_t *c) {
  if (!n->sealed || (c->flags & KNHK_FLAG_DONE)) return 0;
  uint64_t enabled = 0;
  for (uint32_t t = 0; t < n->ntasks; t++) {
    work_t w;
    load(&w, c);
    enabled |= (uint64_t)start_work(n, t, &n->tasks[t], KNHK_BIT(t), &w) << t;
  }
  return enabled;
}

knhk_status knhk_start(const knhk_net_t *net, knhk_case_t *c, uint32_t t) {
  return op_start(net, c, t);
}

knhk_status knhk_complete(const knhk_net_t *net, knhk_case_t *c, uint32_t t) {
  return op_complete(net, c, t, 0, 0);
}

knhk_status knhk_complete_bits(const knhk_net_t *net, knhk_case_t *c, uint32_t t,
                               uint32_t branch_bits) {
  return op_complete(net, c, t, branch_bits, 1);
}

knhk_status knhk_complete_bits64(const knhk_net_t *net, knhk_case_t *c, uint32_t t,
                                 uint64_t branch_bits) {
  return op_complete(net, c, t, branch_bits, 1);
}

/* Fire of a general OR-join marked KNHK_HOT_ORJOIN at seal (AND split, no cancellation set,
 * no side state in the net; so sealed, t < ntasks): the decision (all inputs marked, or the
 * key in the table), then the short path's token move. Returns KNHK_OK after committing, or
 * KNHK_TAKE_GENERAL_PATH with nothing written (every refusal, an explicit termination). */
KNHK_INLINE int fire_orjoin(const knhk_net_t *n, knhk_case_t *c, uint32_t t, uint32_t kind) {
  const knhk_hot_t *h = KNHK_HOT_TABLES(n);
  uint64_t m = c->marking, busy = c->busy, pre = h->pre[t], have = m & pre;
  if (have != pre && !orjoin_enabled(n, t, m, busy)) return KNHK_TAKE_GENERAL_PATH;
  uint64_t out = h->out_on[t], x = m ^ have;
  if (KNHK_UNLIKELY(c->flags | ((busy >> t) & 1u) | (uint64_t)(have == 0) | (x & out)))
    return KNHK_TAKE_GENERAL_PATH;
  if (kind & KNHK_HOT_ENDS) {
    if (x | busy) return KNHK_TAKE_GENERAL_PATH; /* explicit termination */
    c->flags = KNHK_FLAG_DONE | KNHK_FLAG_COMPLETED;
  }
  c->marking = x | out;
  c->seq++;
  return KNHK_OK;
}

/* The general path out of line, so that fire's short path stays a small leaf function with
 * few saved registers. */
__attribute__((noinline)) static knhk_status fire_slow(const knhk_net_t *net, knhk_case_t *c,
                                                       uint32_t t, uint64_t bits, int use_bits) {
  return op_fire(net, c, t, bits, use_bits);
}

/* A general OR-join's short sequence (fire_orjoin), else the general path: a function of its
 * own, so that it saves only the registers it needs. Its split is AND, which reads no
 * branch bits: the general path gets none. */
__attribute__((noinline)) static knhk_status fire_orjoin_or_slow(const knhk_net_t *net,
                                                                 knhk_case_t *c, uint32_t t,
                                                                 uint32_t kind) {
  if (KNHK_LIKELY(fire_orjoin(net, c, t, kind) == KNHK_OK)) return KNHK_OK;
  return fire_slow(net, c, t, 0, 0);
}

/* A hot task whose kind fire_short has no sequence for (one that may end the case, an XOR
 * join with an XOR split), or a hot fire refused there: the per-bit rules, else the general
 * path. */
__attribute__((noinline)) static knhk_status fire_hot_any_or_slow(const knhk_net_t *net,
                                                                  knhk_case_t *c, uint32_t t,
                                                                  uint64_t bits, int use_bits) {
  if (KNHK_LIKELY(fire_hot_any_case(net, c, t, (uint32_t)bits, use_bits) == KNHK_OK))
    return KNHK_OK;
  return fire_slow(net, c, t, bits, use_bits);
}

/* Whatever fire_short did not take: a dispatch, inline in its cold tails, that tail-calls one
 * of the three above. */
KNHK_INLINE knhk_status fire_general(const knhk_net_t *net, knhk_case_t *c, uint32_t t,
                                     uint64_t bits, int use_bits) {
  uint32_t kind = t < KNHK_MAX_TASKS ? KNHK_HOT_TABLES(net)->meta[t].kind : 0;
  if (kind & KNHK_HOT) return fire_hot_any_or_slow(net, c, t, bits, use_bits);
  if (kind & KNHK_HOT_ORJOIN) return fire_orjoin_or_slow(net, c, t, kind);
  return fire_slow(net, c, t, bits, use_bits);
}

/* fire_short's last step for a hot task: the refusal checks folded into one word, then the
 * token move. */
KNHK_INLINE knhk_status fire_commit(const knhk_net_t *net, knhk_case_t *c, uint32_t t,
                                    const knhk_hot_t *h, uint64_t m, uint64_t consume,
                                    uint64_t out, uint64_t bits, int use_bits) {
  uint64_t x = m ^ consume;
  /* an input not marked, a token onto a marked condition, done or flagged, or busy */
  if (KNHK_UNLIKELY((x & (consume | out)) | c->flags | (c->busy & h->task_bit[t])))
    return fire_general(net, c, t, bits, use_bits);
  c->marking = x | out;
  c->seq++;
  return KNHK_OK;
}

/* knhk_fire's short path: the rules of fire_hot_any, with a straight sequence of its own for
 * each of the three kinds hot tasks have most: a plain task (an AND join or a single input, an
 * AND split, not marking the output), the same with a two-way XOR split, and with an XOR
 * join. One compare of the kind byte picks the sequence; every other kind leaves through
 * fire_general. Measured on the Zen 3 machine (docs/performance.md), where a call of an empty
 * function already costs ~4 ticks and the short path runs at about five instructions a cycle:
 * the bit-by-bit tests, their jumps out of line and back, a shift for the busy test and the
 * registers saved for them cost 0.5-1.3 ticks a step. */
KNHK_INLINE knhk_status fire_short(const knhk_net_t *net, knhk_case_t *c, uint32_t t,
                                   uint32_t bits, int use_bits, uint64_t general_bits) {
  if (KNHK_UNLIKELY(t >= KNHK_MAX_TASKS)) return fire_general(net, c, t, general_bits, use_bits);
  const knhk_hot_t *h = KNHK_HOT_TABLES(net);
  const uint32_t kind = h->meta[t].kind; /* 0 for unsealed nets and slots >= ntasks */
  const uint64_t m = c->marking;
  uint64_t consume = h->pre[t];
  uint64_t out = h->out_on[t];
  if (KNHK_LIKELY(kind == KNHK_HOT))
    return fire_commit(net, c, t, h, m, consume, out, general_bits, use_bits);
  if (kind == (KNHK_HOT | KNHK_HOT_XOR_SPLIT)) {
    uint64_t failed; /* 1 when the guard does not hold */
    if (use_bits) {
      failed = (uint64_t)((bits & h->meta[t].race) == 0);
    } else {
      uint64_t v = (uint64_t)c->regs[h->meta[t].lhs];
      failed = (uint64_t)(h->span[t] < v - h->lo[t]);
    }
    /* a select by mask, not a branch: guards on case data are unpredictable in general */
    out ^= h->out_flip[t] & (0 - failed);
    return fire_commit(net, c, t, h, m, consume, out, general_bits, use_bits);
  }
  if (kind == (KNHK_HOT | KNHK_HOT_XOR_JOIN)) {
    consume &= m;
    /* not exactly one input marked: c - 1 is then at least c ^ (c - 1), the lowest bit of c
     * and the bits below it (all ones for c = 0; c's higher bits for two or more) */
    if (KNHK_UNLIKELY((consume - 1) >= (consume ^ (consume - 1))))
      return fire_general(net, c, t, general_bits, use_bits);
    return fire_commit(net, c, t, h, m, consume, out, general_bits, use_bits);
  }
  return fire_general(net, c, t, general_bits, use_bits);
}

KNHK_HOT_ENTRY knhk_status knhk_fire(const knhk_net_t *net, knhk_case_t *c, uint32_t t) {
  return fire_short(net, c, t, 0, 0, 0);
}

KNHK_HOT_ENTRY knhk_status knhk_fire_bits(const knhk_net_t *net, knhk_case_t *c,
                                          uint32_t t, uint32_t branch_bits) {
  return fire_short(net, c, t, branch_bits, 1, branch_bits);
}

/* Wide tasks' caller bits: a hot task reads only its guarded flow's bit among its first two
 * flows (knhk_hot_meta_t.race), so the short path takes the low word. */
knhk_status knhk_fire_bits64(const knhk_net_t *net, knhk_case_t *c, uint32_t t,
                             uint64_t branch_bits) {
  return fire_short(net, c, t, (uint32_t)branch_bits, 1, branch_bits);
}

/* fire_short inline in the loop: one call for the whole sequence. */
KNHK_HOT_ENTRY knhk_status knhk_fire_sequence(const knhk_net_t *net, knhk_case_t *c,
                                              const uint32_t *tasks, uint32_t n,
                                              uint32_t *fired) {
  uint32_t i = 0;
  knhk_status s = KNHK_OK;
  if (KNHK_UNLIKELY(!tasks && n)) {
    s = KNHK_BAD_ARGUMENT;
  } else {
    for (; i < n; i++) {
      s = fire_short(net, c, tasks[i], 0, 0, 0);
      if (KNHK_UNLIKELY(s != KNHK_OK)) break;
    }
  }
  if (fired) *fired = i;
  return s;
}

knhk_status knhk_start_mi(const knhk_net_t *net, knhk_case_t *c, uint32_t t, uint32_t count) {
  knhk_status s = admit(net, c, t);
  if (s != KNHK_OK) return s;
  if (!net->tasks[t].mi.slot) return KNHK_NOT_MI_TASK;
  return op_start_mi(net, c, t, count);
}

knhk_status knhk_instance_start(const knhk_net_t *net, knhk_case_t *c, uint32_t t,
                                uint32_t instance) {
  return op_instance_start(net, c, t, instance);
}

knhk_status knhk_instance_complete(const knhk_net_t *net, knhk_case_t *c, uint32_t t,
                                   uint32_t instance) {
  return op_instance_complete(net, c, t, instance, 0, 0);
}

knhk_status knhk_instance_complete_bits64(const knhk_net_t *net, knhk_case_t *c, uint32_t t,
                                          uint32_t instance, uint64_t branch_bits) {
  return op_instance_complete(net, c, t, instance, branch_bits, 1);
}

knhk_status knhk_instance_add(const knhk_net_t *net, knhk_case_t *c, uint32_t t,
                              uint32_t *out_instance) {
  return op_instance_add(net, c, t, out_instance);
}

const knhk_mi_slot_t *knhk_instance_slot(const knhk_net_t *net, const knhk_case_t *c,
                                         uint32_t t) {
  if (!net || !c || !net->sealed || t >= net->ntasks || !net->tasks[t].mi.slot) return NULL;
  return &c->mi[(net->tasks[t].mi.slot - 1u) & (KNHK_MAX_MI_TASKS - 1u)];
}

uint32_t knhk_instance_state_of(const knhk_net_t *net, const knhk_case_t *c, uint32_t t,
                             uint32_t instance) {
  const knhk_mi_slot_t *m = knhk_instance_slot(net, c, t);
  if (!m || !(c->mi_live & KNHK_BIT(t)) || instance >= m->created) return KNHK_INSTANCE_NONE;
  if (instance < m->base) return KNHK_INSTANCE_COMPLETED;
  uint32_t off = instance - m->base;
  if (off >= KNHK_MI_WINDOW_SIZE || !(m->started & KNHK_BIT(off))) return KNHK_INSTANCE_CREATED;
  return (m->done & KNHK_BIT(off)) ? KNHK_INSTANCE_COMPLETED : KNHK_INSTANCE_STARTED;
}

knhk_status knhk_cancel_task(const knhk_net_t *net, knhk_case_t *c, uint32_t t) {
  return op_cancel_task(net, c, t);
}

knhk_status knhk_cancel_case(const knhk_net_t *net, knhk_case_t *c) {
  return op_cancel_case(net, c);
}

knhk_state knhk_case_state(const knhk_net_t *net, const knhk_case_t *c) {
  if (c->flags & KNHK_FLAG_CANCELLED) return KNHK_STATE_CANCELLED;
  if (c->flags & KNHK_FLAG_COMPLETED) return KNHK_STATE_COMPLETE;
  /* live instances (running on past a KEEP threshold) may still free their task */
  if ((c->busy | c->mi_live) == 0 && c->marking != 0 && knhk_enabled(net, c) == 0)
    return KNHK_STATE_DEADLOCKED;
  return KNHK_STATE_RUNNING;
}

/* The scalar beat: every lane through the firing rules above, in lane order. */
/* One lane of a beat by the general rules, out of line so that the beat's loop stays small. */
__attribute__((noinline)) static knhk_status beat_lane(const knhk_net_t *net, knhk_case_t *cases,
                                                       uint32_t ncases, const knhk_event_t *e) {
  if (KNHK_UNLIKELY(e->case_index >= ncases)) return KNHK_BAD_ARGUMENT;
  knhk_case_t *c = &cases[e->case_index];
  int use_bits = (e->flags & KNHK_EVENT_USE_BITS) != 0;
  uint64_t bits = ((uint64_t)e->branch_bits_hi << 32) | e->branch_bits;
  switch (e->op) {
    case KNHK_OP_FIRE:
      if (fire_hot_any_case(net, c, e->task, e->branch_bits, use_bits) == KNHK_OK)
        return KNHK_OK;
      return op_fire(net, c, e->task, bits, use_bits);
    case KNHK_OP_START: return op_start(net, c, e->task);
    case KNHK_OP_COMPLETE: return op_complete(net, c, e->task, bits, use_bits);
    case KNHK_OP_CANCEL_TASK: return op_cancel_task(net, c, e->task);
    case KNHK_OP_CANCEL_CASE: return op_cancel_case(net, c);
    default: return KNHK_BAD_ARGUMENT;
  }
}

KNHK_HOT_ENTRY knhk_status knhk_beat_scalar(const knhk_net_t *net, knhk_case_t *cases,
                                            uint32_t ncases,
                                            const knhk_event_t *events, uint32_t n, uint8_t *statuses) {
  if (n > KNHK_BEAT_LANES) return KNHK_BAD_ARGUMENT;
  if (!net->sealed) return KNHK_NOT_SEALED;
  for (uint32_t i = 0; i < n; i++) {
    const knhk_event_t *e = &events[i];
    /* the common lane, a fire of a hot task with its guards evaluated, inline (caller bits
     * and everything else: out of line, so that the loop keeps its registers); lanes on
     * distinct cases overlap in the pipeline because nothing but the loop counter links them */
    if (KNHK_LIKELY(e->op == KNHK_OP_FIRE && !(e->flags & KNHK_EVENT_USE_BITS) &&
                    e->case_index < ncases) &&
        KNHK_LIKELY(fire_hot_any_case(net, &cases[e->case_index], e->task, 0, 0) == KNHK_OK)) {
      statuses[i] = KNHK_OK;
      continue;
    }
    statuses[i] = (uint8_t)beat_lane(net, cases, ncases, e);
  }
  return KNHK_OK;
}

/* ---- code paths: chosen at run time from the CPU (never at build time), no state ---- */

uint32_t knhk_path_supported(uint32_t path) {
  switch (path) {
    case KNHK_BEAT_PATH_SCALAR: return 1;
#if KNHK_HAVE_AVX512
    case KNHK_BEAT_PATH_AVX512: return (uint32_t)knhk_beat_avx512_supported();
#endif
#if KNHK_HAVE_AVX2
    case KNHK_BEAT_PATH_AVX2: return (uint32_t)knhk_beat_avx2_supported();
#endif
    default: return 0;
  }
}

/* The widest path the CPU has: AVX-512, else AVX2, else scalar. */
uint32_t knhk_beat_path(void) {
#if KNHK_HAVE_AVX512
  if (knhk_beat_avx512_supported()) return KNHK_BEAT_PATH_AVX512;
#endif
#if KNHK_HAVE_AVX2
  if (knhk_beat_avx2_supported()) return KNHK_BEAT_PATH_AVX2;
#endif
  return KNHK_BEAT_PATH_SCALAR;
}

/* A full beat on a named vector path (the caller checked that the CPU has it). */
static knhk_status beat_vector(uint32_t path, const knhk_net_t *net, knhk_case_t *cases,
                               uint32_t ncases, const knhk_event_t *events, uint32_t n,
                               uint8_t *statuses) {
  (void)path; /* unused where no vector path is compiled in (aarch64) */
  if (n == KNHK_BEAT_LANES && net->sealed) {
#if KNHK_HAVE_AVX512
    if (path == KNHK_BEAT_PATH_AVX512)
      return knhk_beat_avx512(net, cases, ncases, events, statuses);
#endif
#if KNHK_HAVE_AVX2
    if (path == KNHK_BEAT_PATH_AVX2) return knhk_beat_avx2(net, cases, ncases, events, statuses);
#endif
  }
  return knhk_beat_scalar(net, cases, ncases, events, n, statuses);
}

/* Dispatch at run time: a full beat goes to the widest vector path the CPU has. */
knhk_status knhk_beat_simd(const knhk_net_t *net, knhk_case_t *cases, uint32_t ncases,
                           const knhk_event_t *events, uint32_t n, uint8_t *statuses) {
  return beat_vector(knhk_beat_path(), net, cases, ncases, events, n, statuses);
}

knhk_status knhk_beat_on(const knhk_net_t *net, knhk_case_t *cases, uint32_t ncases,
                         const knhk_event_t *events, uint32_t n, uint8_t *statuses,
                         uint32_t path) {
  if (!knhk_path_supported(path)) return KNHK_BAD_ARGUMENT;
  return beat_vector(path, net, cases, ncases, events, n, statuses);
}

/* The scalar path: measured faster than the gather-based AVX-512 path (docs/performance.md). */
knhk_status knhk_beat(const knhk_net_t *net, knhk_case_t *cases, uint32_t ncases,
                      const knhk_event_t *events, uint32_t n, uint8_t *statuses) {
  return knhk_beat_scalar(net, cases, ncases, events, n, statuses);
}

/* ---- blocks: eight cases side by side ---- */

knhk_status knhk_block_get(const knhk_block_t *b, uint32_t lane, knhk_case_t *out) {
  if (lane >= KNHK_BEAT_LANES) return KNHK_BAD_ARGUMENT;
  out->marking = b->marking[lane];
  out->busy = b->busy[lane];
  out->or_expect = b->or_expect[lane];
  out->absorb = b->absorb[lane];
  out->seq = b->seq[lane];
  out->flags = (uint32_t)b->flags[lane];
  out->reserved = 0;
  out->mi_live = 0;
  out->reserved2 = 0;
  for (uint32_t r = 0; r < KNHK_REGISTERS; r++) out->regs[r] = b->regs[r][lane];
  memset(out->mi, 0, sizeof out->mi);
  return KNHK_OK;
}

knhk_status knhk_block_set(knhk_block_t *b, uint32_t lane, const knhk_case_t *c) {
  /* a block holds no MI slots: a case with live instances does not fit in a lane */
  if (lane >= KNHK_BEAT_LANES || c->mi_live) return KNHK_BAD_ARGUMENT;
  b->marking[lane] = c->marking;
  b->busy[lane] = c->busy;
  b->or_expect[lane] = c->or_expect;
  b->absorb[lane] = c->absorb;
  b->seq[lane] = c->seq;
  b->flags[lane] = c->flags;
  for (uint32_t r = 0; r < KNHK_REGISTERS; r++) b->regs[r][lane] = c->regs[r];
  return KNHK_OK;
}

knhk_status knhk_block_init(const knhk_net_t *net, knhk_block_t *b) {
  knhk_case_t c;
  knhk_status s = knhk_case_init(net, &c);
  if (s != KNHK_OK) return s;
  for (uint32_t i = 0; i < KNHK_BEAT_LANES; i++) (void)knhk_block_set(b, i, &c);
  return KNHK_OK;
}

/* One lane's event by the general rules on a copy of the lane, written back on success
 * (a refusal leaves the lane unchanged). */
static knhk_status block_lane_event(const knhk_net_t *net, knhk_block_t *b, uint32_t lane,
                                    const knhk_event_t *e) {
  /* a block holds no MI slots: an MI task's start, complete or fire is refused in a lane */
  if (e->op <= KNHK_OP_FIRE && e->task < net->ntasks && net->tasks[e->task].mi.slot)
    return KNHK_MI_TASK;
  knhk_case_t c;
  (void)knhk_block_get(b, lane, &c);
  knhk_event_t one = *e;
  one.case_index = 0;
  uint8_t status = KNHK_BAD_ARGUMENT;
  (void)knhk_beat_scalar(net, &c, 1, &one, 1, &status);
  if (status == KNHK_OK) (void)knhk_block_set(b, lane, &c);
  return (knhk_status)status;
}

__attribute__((noinline)) knhk_status knhk_block_lane_fire(const knhk_net_t *net,
                                                           knhk_block_t *b, uint32_t lane,
                                                           uint32_t t) {
  if (t == KNHK_NO_TASK) return KNHK_LANE_IDLE;
  knhk_event_t e = {0, KNHK_OP_FIRE, (uint8_t)t, 0, 0, 0};
  return block_lane_event(net, b, lane, &e);
}

KNHK_HOT_ENTRY knhk_status knhk_block_fire_scalar(const knhk_net_t *net,
                                                  knhk_block_t *blocks, uint32_t nblocks,
                                                  const uint8_t *tasks, uint8_t *statuses) {
  if (!net->sealed) return KNHK_NOT_SEALED;
  for (uint32_t k = 0; k < nblocks; k++) {
    knhk_block_t *b = &blocks[k];
    const uint8_t *tk = &tasks[(size_t)k * KNHK_BEAT_LANES];
    uint8_t *st = &statuses[(size_t)k * KNHK_BEAT_LANES];
    memset(st, KNHK_OK, KNHK_BEAT_LANES);
    /* lanes are distinct cases: nothing links them; unrolled, every lane's fields are at
     * constant offsets */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 8
#endif
    for (uint32_t i = 0; i < KNHK_BEAT_LANES; i++) {
      if (KNHK_UNLIKELY(fire_hot_any(net, &b->marking[i], &b->busy[i], &b->flags[i], 1,
                                     &b->seq[i], &b->regs[0][i], KNHK_BEAT_LANES, tk[i], 0,
                                     0) != KNHK_OK))
        st[i] = (uint8_t)knhk_block_lane_fire(net, b, i, tk[i]);
    }
  }
  return KNHK_OK;
}

knhk_status knhk_block_fire_on(const knhk_net_t *net, knhk_block_t *blocks, uint32_t nblocks,
                               const uint8_t *tasks, uint8_t *statuses, uint32_t path) {
  if (!knhk_path_supported(path)) return KNHK_BAD_ARGUMENT;
  if (!net->sealed) return KNHK_NOT_SEALED;
#if KNHK_HAVE_AVX512
  if (path == KNHK_BEAT_PATH_AVX512)
    return knhk_block_fire_avx512(net, blocks, nblocks, tasks, statuses);
#endif
#if KNHK_HAVE_AVX2
  if (path == KNHK_BEAT_PATH_AVX2)
    return knhk_block_fire_avx2(net, blocks, nblocks, tasks, statuses);
#endif
  return knhk_block_fire_scalar(net, blocks, nblocks, tasks, statuses);
}

knhk_status knhk_block_fire(const knhk_net_t *net, knhk_block_t *blocks, uint32_t nblocks,
                            const uint8_t *tasks, uint8_t *statuses) {
#if KNHK_HAVE_AVX512
  if (net->sealed && knhk_beat_avx512_supported())
    return knhk_block_fire_avx512(net, blocks, nblocks, tasks, statuses);
#endif
#if KNHK_HAVE_AVX2
  if (net->sealed && knhk_beat_avx2_supported())
    return knhk_block_fire_avx2(net, blocks, nblocks, tasks, statuses);
#endif
  return knhk_block_fire_scalar(net, blocks, nblocks, tasks, statuses);
}

knhk_status knhk_block_beat(const knhk_net_t *net, knhk_block_t *b, const knhk_event_t *events,
                            uint32_t lanes, uint8_t *statuses) {
  if (!net->sealed) return KNHK_NOT_SEALED;
  for (uint32_t i = 0; i < KNHK_BEAT_LANES; i++) {
    if (!((lanes >> i) & 1u)) {
      statuses[i] = KNHK_LANE_IDLE;
      continue;
    }
    statuses[i] = (uint8_t)block_lane_event(net, b, i, &events[i]);
  }
  return KNHK_OK;
}
