/* knhk_save.c — saving a case as bytes and restoring it only where it fits the net (cold
 * path). The format and the validity rules are documented in knhk.h ("Saving and restoring
 * cases"). No allocation, no locks, no syscalls; every read of the caller's bytes is inside
 * [0, len) and byte by byte, so any bytes at any alignment are safe to hand in. */
#include "knhk_internal.h"

#include <stddef.h>

/* Offsets of the encoding (knhk.h). */
enum {
  OFF_MAGIC = 0,
  OFF_FORMAT = 4,
  OFF_NET = 8,
  OFF_MARKING = 16,
  OFF_BUSY = 24,
  OFF_OR_EXPECT = 32,
  OFF_ABSORB = 40,
  OFF_ENABLED = 48,
  OFF_SEQ = 56,
  OFF_FLAGS = 64,
  OFF_RESERVED0 = 68,
  OFF_REGS = 72,
  /* format 1 (ABI up to 4): a reserved word and the CRC */
  OFF_V1_RESERVED1 = 136,
  OFF_V1_CRC = 140,
  V1_BYTES = 144,
  /* format 2 (ABI 5): mi_live and the MI slots */
  OFF_MI_LIVE = 136,
  OFF_MI = 144, /* per slot: started u64, done u64, base u32, created u32 */
  MI_SLOT_BYTES = 24,
  OFF_RESERVED1 = 240,
  OFF_CRC = 244
};
_Static_assert(OFF_REGS + 8 * KNHK_REGISTERS == OFF_MI_LIVE, "registers fill 72..136");
_Static_assert(OFF_MI + MI_SLOT_BYTES * KNHK_MAX_MI_TASKS == OFF_RESERVED1, "slots fill 144..240");
_Static_assert(OFF_CRC + 4 == KNHK_CASE_BYTES, "the CRC ends the encoding");

static void put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
  return v;
}
static uint64_t get64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

/* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), bit by bit: 140 bytes on a cold
 * path do not need a table. crc32c("123456789") == 0xE3069283. */
static uint32_t crc32c(const uint8_t *p, size_t n) {
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; i++) {
    crc ^= p[i];
    for (int k = 0; k < 8; k++) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
  }
  return ~crc;
}

/* ---- the net's fingerprint: FNV-1a over the builder's fields, then a 64-bit finaliser ---- */

typedef struct fnv {
  uint64_t h;
} fnv_t;

static void mix(fnv_t *f, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; i++) {
    f->h ^= (uint8_t)(v >> (8 * i));
    f->h *= 0x100000001B3ull;
  }
}

static void mix_guard(fnv_t *f, const knhk_guard_t *g) {
  for (int k = 0; k < 2; k++) {
    const knhk_term_t *t = &g->term[k];
    mix(f, t->op, 1);
    mix(f, t->lhs, 1);
    mix(f, t->rhs_is_reg, 1);
    mix(f, t->rhs_reg, 1);
    mix(f, (uint64_t)t->rhs_const, 8);
  }
  mix(f, g->combine, 1);
}

uint64_t knhk_net_fingerprint(const knhk_net_t *net) {
  if (!net || !net->sealed) return 0;
  fnv_t f = {0xCBF29CE484222325ull};
  mix(&f, 1, 4); /* format 1's number: fingerprints of nets without MI tasks did not change */
  mix(&f, net->nconditions, 4);
  mix(&f, net->ntasks, 4);
  mix(&f, net->input, 8);
  mix(&f, net->output, 8);
  for (uint32_t t = 0; t < net->ntasks && t < KNHK_MAX_TASKS; t++) {
    const knhk_task_t *T = &net->tasks[t];
    mix(&f, T->pre, 8);
    mix(&f, T->post, 8);
    mix(&f, T->cancel_conditions, 8);
    mix(&f, T->cancel_tasks, 8);
    mix(&f, T->join, 1);
    mix(&f, T->split, 1);
    mix(&f, T->nbranches, 1);
    mix(&f, T->default_branch, 1);
    /* the task's flows in order, from the net's flow array (the same bytes as when each task had
     * its own 8 slots, so the fingerprints of nets built then did not change) */
    const knhk_branch_t *br = &net->branches[T->first_branch];
    for (uint32_t k = 0; k < T->nbranches && T->first_branch + k < KNHK_MAX_FLOWS; k++) {
      mix(&f, br[k].conditions, 8);
      mix_guard(&f, &br[k].guard);
    }
    if (T->mi.slot) { /* multiple instances (format 2): the attributes and the slot */
      mix(&f, T->mi.minimum, 4);
      mix(&f, T->mi.maximum, 4);
      mix(&f, T->mi.threshold, 4);
      mix(&f, T->mi.flags, 1);
      mix(&f, T->mi.count_reg, 1);
      mix(&f, T->mi.slot, 1);
    }
  }
  /* murmur3's fmix64: every input bit reaches every output bit */
  uint64_t h = f.h;
  h ^= h >> 33;
  h *= 0xFF51AFD7ED558CCDull;
  h ^= h >> 33;
  h *= 0xC4CEB9FE1A85EC53ull;
  h ^= h >> 33;
  return h ? h : 1;
}

/* ---- validity of a case for a net (knhk.h) ---- */

static uint64_t low_bits(uint32_t n) { return n >= 64 ? ~0ull : KNHK_BIT(n) - 1; }

#define FLAGS_KNOWN                                                                  \
  (KNHK_FLAG_DONE | KNHK_FLAG_COMPLETED | KNHK_FLAG_CANCELLED |                      \
   KNHK_FLAG_EXPLICIT_TERMINATION | KNHK_FLAG_IMPLICIT_TERMINATION)
#define FLAGS_COMPLETED (KNHK_FLAG_DONE | KNHK_FLAG_COMPLETED)
#define FLAGS_CANCELLED (KNHK_FLAG_DONE | KNHK_FLAG_CANCELLED)

/* MI state: mi_live only on MI tasks, every busy MI task live, a live task not busy only with
 * KNHK_MI_KEEP; a live slot consistent (below; see knhk_mi_slot_t), the others all zero. */
static knhk_status check_mi(const knhk_net_t *net, uint64_t busy, uint64_t mi_live,
                            const knhk_mi_slot_t *mi) {
  uint64_t mi_tasks = 0, keep = 0;
  for (uint32_t t = 0; t < net->ntasks && t < KNHK_MAX_TASKS; t++) {
    const knhk_task_t *T = &net->tasks[t];
    if (!T->mi.slot) continue;
    mi_tasks |= KNHK_BIT(t);
    if (T->mi.flags & KNHK_MI_KEEP) keep |= KNHK_BIT(t);
  }
  if ((mi_live & ~mi_tasks) | (busy & mi_tasks & ~mi_live) | (mi_live & ~busy & ~keep))
    return KNHK_BAD_MI_SLOT;
  uint32_t seen = 0; /* slots of the net's MI tasks */
  for (uint32_t t = 0; t < net->ntasks && t < KNHK_MAX_TASKS; t++) {
    const knhk_task_t *T = &net->tasks[t];
    if (!T->mi.slot) continue;
    uint32_t k = (T->mi.slot - 1u) & (KNHK_MAX_MI_TASKS - 1u);
    seen |= 1u << k;
    const knhk_mi_slot_t *m = &mi[k];
    if (!(mi_live & KNHK_BIT(t))) {
      if (m->started | m->done | m->base | m->created | m->completed | m->reserved)
        return KNHK_BAD_MI_SLOT;
      continue;
    }
    if (m->created == 0 || m->created > T->mi.maximum || m->base >= m->created || m->reserved ||
        (m->done & 1u) || (m->done & ~m->started) ||
        m->completed != m->base + knhk_popcount64(m->done))
      return KNHK_BAD_MI_SLOT;
    uint32_t span = m->created - m->base;
    if (span < 64 && (m->started & ~low_bits(span))) return KNHK_BAD_MI_SLOT;
    uint32_t completed = m->completed;
    uint32_t threshold = T->mi.threshold < m->created ? T->mi.threshold : m->created;
    /* a running task has not reached its threshold; a task running on past it has not
     * completed every instance (either would have ended the slot or the task) */
    if ((busy & KNHK_BIT(t)) ? completed >= threshold : completed >= m->created)
      return KNHK_BAD_MI_SLOT;
  }
  for (uint32_t k = 0; k < KNHK_MAX_MI_TASKS; k++)
    if (!(seen & (1u << k)) &&
        (mi[k].started | mi[k].done | mi[k].base | mi[k].created | mi[k].completed |
         mi[k].reserved))
      return KNHK_BAD_MI_SLOT;
  return KNHK_OK;
}

static knhk_status check_words(const knhk_net_t *net, uint64_t marking, uint64_t busy,
                               uint64_t or_expect, uint64_t absorb, uint32_t flags,
                               uint64_t mi_live, const knhk_mi_slot_t *mi) {
  if (marking & ~low_bits(net->nconditions)) return KNHK_BAD_MARKING;
  if (busy & ~low_bits(net->ntasks)) return KNHK_BAD_BUSY;
  if (flags != 0 && flags != FLAGS_COMPLETED &&
      flags != (FLAGS_COMPLETED | KNHK_FLAG_EXPLICIT_TERMINATION) &&
      flags != (FLAGS_COMPLETED | KNHK_FLAG_IMPLICIT_TERMINATION) && flags != FLAGS_CANCELLED)
    return KNHK_BAD_FLAGS;
  /* side words: OR-join inputs that a split activated (seal records them per branch, so
   * their union over tasks is every value or_expect can take bits from); discriminator
   * inputs, never marked while their next token is to be absorbed */
  uint64_t or_inputs = 0, disc_inputs = 0;
  for (uint32_t t = 0; t < net->ntasks && t < KNHK_MAX_TASKS; t++) {
    or_inputs |= net->tasks[t].or_expect_all;
    if (net->tasks[t].join == KNHK_JOIN_DISCRIMINATOR) disc_inputs |= net->tasks[t].pre;
  }
  if ((or_expect & ~or_inputs) | (absorb & ~disc_inputs) | (absorb & marking))
    return KNHK_BAD_SIDE_WORDS;
  knhk_status s = check_mi(net, busy, mi_live, mi);
  if (s != KNHK_OK) return s;
  int ok;
  if (flags == 0) /* running: work left, the output not reached */
    ok = (marking | busy | mi_live) != 0 && (marking & net->output) == 0;
  else if (flags == FLAGS_CANCELLED)
    ok = (marking | busy | or_expect | absorb | mi_live) == 0;
  else if (flags & KNHK_FLAG_IMPLICIT_TERMINATION) /* nothing left; side words as they were */
    ok = (marking | busy | mi_live) == 0;
  else /* the output reached: the rest cleared */
    ok = marking == net->output && (busy | or_expect | absorb | mi_live) == 0;
  return ok ? KNHK_OK : KNHK_BAD_CASE_STATE;
}

knhk_status knhk_case_check(const knhk_net_t *net, const knhk_case_t *c) {
  if (!net || !c) return KNHK_BAD_ARGUMENT;
  if (!net->sealed) return KNHK_NOT_SEALED;
  return check_words(net, c->marking, c->busy, c->or_expect, c->absorb, c->flags, c->mi_live,
                     c->mi);
}

/* ---- save and restore ---- */

knhk_status knhk_case_save(const knhk_net_t *net, const knhk_case_t *c, void *out,
                           uint64_t cap) {
  if (!net || !c || !out) return KNHK_BAD_ARGUMENT;
  if (!net->sealed) return KNHK_NOT_SEALED;
  if (cap < KNHK_CASE_BYTES) return KNHK_BAD_LENGTH;
  knhk_status s = knhk_case_check(net, c);
  if (s != KNHK_OK) return s;
  /* written in place, field by field (no memcpy: libknhk imports nothing but memset) */
  uint8_t *b = out;
  put32(b + OFF_MAGIC, KNHK_CASE_MAGIC);
  put32(b + OFF_FORMAT, KNHK_CASE_FORMAT);
  put64(b + OFF_NET, knhk_net_fingerprint(net));
  put64(b + OFF_MARKING, c->marking);
  put64(b + OFF_BUSY, c->busy);
  put64(b + OFF_OR_EXPECT, c->or_expect);
  put64(b + OFF_ABSORB, c->absorb);
  put64(b + OFF_ENABLED, knhk_enabled(net, c));
  put64(b + OFF_SEQ, c->seq);
  put32(b + OFF_FLAGS, c->flags);
  put32(b + OFF_RESERVED0, 0);
  for (uint32_t r = 0; r < KNHK_REGISTERS; r++) put64(b + OFF_REGS + 8 * r, (uint64_t)c->regs[r]);
  put64(b + OFF_MI_LIVE, c->mi_live);
  for (uint32_t k = 0; k < KNHK_MAX_MI_TASKS; k++) {
    uint8_t *p = b + OFF_MI + MI_SLOT_BYTES * k;
    put64(p, c->mi[k].started);
    put64(p + 8, c->mi[k].done);
    put32(p + 16, c->mi[k].base);
    put32(p + 20, c->mi[k].created);
  }
  put32(b + OFF_RESERVED1, 0);
  put32(b + OFF_CRC, crc32c(b, OFF_CRC));
  return KNHK_OK;
}

knhk_status knhk_case_restore(const knhk_net_t *net, knhk_case_t *c, const void *bytes,
                              uint64_t len) {
  if (!net || !c || !bytes) return KNHK_BAD_ARGUMENT;
  if (!net->sealed) return KNHK_NOT_SEALED;
  const uint8_t *b = bytes;
  if (len < OFF_NET) return KNHK_BAD_LENGTH;
  uint32_t format = get32(b + OFF_FORMAT);
  if (get32(b + OFF_MAGIC) != KNHK_CASE_MAGIC || (format != 1 && format != KNHK_CASE_FORMAT))
    return KNHK_BAD_FORMAT;
  /* format 1 (no MI state) is still read: checkpoints written before ABI 5 */
  uint32_t crc_at = format == 1 ? OFF_V1_CRC : OFF_CRC;
  if (len != (format == 1 ? V1_BYTES : KNHK_CASE_BYTES)) return KNHK_BAD_LENGTH;
  if (get32(b + crc_at) != crc32c(b, crc_at)) return KNHK_BAD_CHECKSUM;
  if (get32(b + OFF_RESERVED0) | get32(b + (format == 1 ? OFF_V1_RESERVED1 : OFF_RESERVED1)))
    return KNHK_BAD_FORMAT;
  if (get64(b + OFF_NET) != knhk_net_fingerprint(net)) return KNHK_WRONG_NET;
  knhk_case_t r; /* only the words the checks read; *c is written after them */
  r.marking = get64(b + OFF_MARKING);
  r.busy = get64(b + OFF_BUSY);
  r.or_expect = get64(b + OFF_OR_EXPECT);
  r.absorb = get64(b + OFF_ABSORB);
  r.flags = get32(b + OFF_FLAGS);
  r.mi_live = format == 1 ? 0 : get64(b + OFF_MI_LIVE);
  for (uint32_t k = 0; k < KNHK_MAX_MI_TASKS; k++) {
    const uint8_t *p = b + OFF_MI + MI_SLOT_BYTES * k;
    int v1 = format == 1;
    r.mi[k].started = v1 ? 0 : get64(p);
    r.mi[k].done = v1 ? 0 : get64(p + 8);
    r.mi[k].base = v1 ? 0 : get32(p + 16);
    r.mi[k].created = v1 ? 0 : get32(p + 20);
    /* not saved: it follows from base and done (check_mi holds a live slot to it) */
    r.mi[k].completed = r.mi[k].base + knhk_popcount64(r.mi[k].done);
    r.mi[k].reserved = 0;
  }
  knhk_status s =
      check_words(net, r.marking, r.busy, r.or_expect, r.absorb, r.flags, r.mi_live, r.mi);
  if (s != KNHK_OK) return s;
  /* enabled is a function of the rest: recomputed, and a saved value that differs means bytes
   * from rules other than these */
  if (knhk_enabled(net, &r) != get64(b + OFF_ENABLED)) return KNHK_BAD_ENABLED;
  /* field by field (no struct copy, which a compiler may turn into a memcpy import) */
  c->marking = r.marking;
  c->busy = r.busy;
  c->or_expect = r.or_expect;
  c->absorb = r.absorb;
  c->seq = get64(b + OFF_SEQ);
  c->flags = r.flags;
  c->reserved = 0;
  c->mi_live = r.mi_live;
  c->reserved2 = 0;
  for (uint32_t i = 0; i < KNHK_REGISTERS; i++) c->regs[i] = (int64_t)get64(b + OFF_REGS + 8 * i);
  for (uint32_t k = 0; k < KNHK_MAX_MI_TASKS; k++) {
    c->mi[k].started = r.mi[k].started;
    c->mi[k].done = r.mi[k].done;
    c->mi[k].base = r.mi[k].base;
    c->mi[k].created = r.mi[k].created;
    c->mi[k].completed = r.mi[k].completed;
    c->mi[k].reserved = 0;
  }
  return KNHK_OK;
}
