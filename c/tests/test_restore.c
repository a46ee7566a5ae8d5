/* test_restore.c — saving and restoring cases (knhk_case_save, knhk_case_restore,
 * knhk_case_check, knhk_net_fingerprint). Run under ASan/UBSan by `make test`. Exit status is
 * nonzero when a check failed.
 *
 *   - round trip: cases of eight nets, at every point of random runs, are saved and restored;
 *     the restored case equals the original byte for byte and, driven by the rest of the run,
 *     returns the same status and the same bytes after every operation;
 *   - the encoding is the one knhk.h documents (an encoder written here from the header agrees
 *     byte for byte), and a golden encoding is pinned;
 *   - every operation keeps a valid case valid (knhk_case_check after every step);
 *   - refusals: length, format, checksum, another net, stray marking and busy bits, flags,
 *     side words, state, enabled set; a refusal leaves the target untouched;
 *   - fuzz: random mutations of saved bytes (raw, and with the checksum made right again so
 *     that the checks behind it are reached) are refused or give a valid case that keeps
 *     running validly; buffers of the exact length, so ASan sees any read past the end. */
#include "knhk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;
static int checks;

#define CHECK(cond)                                                                        \
  do {                                                                                     \
    checks++;                                                                              \
    if (!(cond)) {                                                                         \
      failures++;                                                                          \
      if (failures < 50)                                                                   \
        fprintf(stderr, "%s:%d: %s: check failed: %s\n", __FILE__, __LINE__, __func__,    \
                #cond);                                                                    \
    }                                                                                      \
  } while (0)

#define CHECK_STATUS(expr, want)                                                           \
  do {                                                                                     \
    knhk_status got_ = (expr);                                                             \
    checks++;                                                                              \
    if (got_ != (want)) {                                                                  \
      failures++;                                                                          \
      if (failures < 50)                                                                   \
        fprintf(stderr, "%s:%d: %s: %s returned %s, want %s\n", __FILE__, __LINE__,        \
                __func__, #expr, knhk_status_name(got_), knhk_status_name(want));          \
    }                                                                                      \
  } while (0)

#define B(i) (1ull << (i))

/* ---- a small deterministic generator (xorshift64*) ---- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1Dull;
}
static uint32_t below(uint32_t n) { return (uint32_t)(rnd() % n); }

/* ---- nets ---- */

#define NNETS 8
static knhk_net_t nets[NNETS];
static knhk_net_t twin; /* built like nets[0] */
static knhk_net_t other; /* nets[0] with another guard constant */
static const char *const net_names[NNETS] = {
    "sequence", "xor+and", "or-split/or-join", "discriminator", "cancel region",
    "cycle", "and-split onto output", "deferred choice"};

static knhk_net_t *cur;
static uint32_t C(void) {
  uint32_t c = 0;
  CHECK_STATUS(knhk_net_add_condition(cur, &c), KNHK_OK);
  return c;
}
static uint32_t T(uint32_t join, uint32_t split) {
  uint32_t t = 0;
  CHECK_STATUS(knhk_net_add_task(cur, join, split, &t), KNHK_OK);
  return t;
}
static void in(uint32_t c, uint32_t t) { CHECK_STATUS(knhk_net_add_input_flow(cur, c, t), KNHK_OK); }
static void out(uint32_t t, uint32_t c) {
  CHECK_STATUS(knhk_net_add_output_flow(cur, t, c, NULL, 0), KNHK_OK);
}
static void out_guard(uint32_t t, uint32_t c, uint32_t op, uint32_t reg, int64_t k,
                      uint32_t dflt) {
  knhk_guard_t g;
  knhk_guard_const(&g, op, reg, k);
  CHECK_STATUS(knhk_net_add_output_flow(cur, t, c, &g, dflt), KNHK_OK);
}
static void io(uint32_t i, uint32_t o) {
  CHECK_STATUS(knhk_net_set_input(cur, i), KNHK_OK);
  CHECK_STATUS(knhk_net_set_output(cur, o), KNHK_OK);
}
static void seal(void) { CHECK_STATUS(knhk_net_seal(cur, NULL), KNHK_OK); }

/* i -> A -> c1 -> B (XOR: r0 < k -> c2, else c3) ; c2 -> C -> o ; c3 -> D -> o */
static void build_sequence(knhk_net_t *n, int64_t k) {
  cur = n;
  knhk_net_init(n);
  uint32_t i = C(), c1 = C(), c2 = C(), c3 = C(), o = C();
  uint32_t a = T(KNHK_JOIN_XOR, KNHK_SPLIT_AND), b = T(KNHK_JOIN_XOR, KNHK_SPLIT_XOR);
  uint32_t c = T(KNHK_JOIN_XOR, KNHK_SPLIT_AND), d = T(KNHK_JOIN_XOR, KNHK_SPLIT_AND);
  io(i, o);
  in(i, a); out(a, c1);
  in(c1, b); out_guard(b, c2, KNHK_GUARD_LT, 0, k, 0); out_guard(b, c3, KNHK_GUARD_TRUE, 0, 0, 1);
  in(c2, c); out(c, o); in(c3, d); out(d, o);
  seal();
}

static void build_nets(void) {
  build_sequence(&nets[0], 5);
  build_sequence(&twin, 5);
  build_sequence(&other, 6);

  /* A AND-splits to c1, c2; B XOR-splits c1 (r1 == 1 -> c3, else c4); C: c2 -> c5; D XOR-joins
   * c3/c4 into c6; E AND-joins c5, c6 -> o */
  cur = &nets[1];
  knhk_net_init(cur);
  {
    uint32_t i = C(), c1 = C(), c2 = C(), c3 = C(), c4 = C(), c5 = C(), c6 = C(), o = C();
    uint32_t a = T(KNHK_JOIN_XOR, KNHK_SPLIT_AND), b = T(KNHK_JOIN_XOR, KNHK_SPLIT_XOR);
    uint32_t c = T(KNHK_JOIN_XOR, KNHK_SPLIT_AND), d = T(KNHK_JOIN_XOR, KNHK_SPLIT_AND);
    uint32_t e = T(KNHK_JOIN_AND, KNHK_SPLIT_AND);
    io(i, o);
    in(i, a); out(a, c1); out(a, c2);
    in(c1, b); out_guard(b, c3, KNHK_GUARD_EQ, 1, 1, 0); out_guard(b, c4, KNHK_GUARD_TRUE, 0, 0, 1);
    in(c2, c); out(c, c5);
    in(c3, d); in(c4, d); out(d, c6);
    in(c5, e); in(c6, e); out(e, o);
    seal();
  }

  /* WCP-6/7: A OR-splits to c1 (r0 & 1), c2 (r0 & 2, default); B, C; D OR-joins c3, c4 */
  cur = &nets[2];
  knhk_net_init(cur);
  {
    uint32_t i = C(), c1 = C(), c2 = C(), c3 = C(), c4 = C(), o = C();
    uint32_t a = T(KNHK_JOIN_XOR, KNHK_SPLIT_OR);
    uint32_t b = T(KNHK_JOIN_XOR, KNHK_SPLIT_AND), c = T(KNHK_JOIN_XOR, KNHK_SPLIT_AND);
    uint32_t d = T(KNHK_JOIN_OR, KNHK_SPLIT_AND);
    io(i, o);
    in(i, a); out_guard(a, c1, KNHK_GUARD_BIT, 0, 1, 0); out_guard(a, c2, KNHK_GUARD_BIT, 0, 2, 1);
    in(c1, b); out(b, c3); in(c2, c); out(c, c4);
    in(c3, d); in(c4, d); out(d, o);
    seal();
  }

  /* WCP-9: A AND-splits to three branches; D discriminates; F after it */
  cur = &nets[3];
  knhk_net_init(cur);
  {
    uint32_t i = C(), c1 = C(), c2 = C(), c5 = C(), c3 = C(), c4 = C(), c6 = C(), m = C(), o = C();
    uint32_t a = T(KNHK_JOIN_XOR, KNHK_SPLIT_AND);
    uint32_t b = T(KNHK_JOIN_XOR, KNHK_SPLIT_AND), c = T(KNHK_JOIN_XOR, KNHK_SPLIT_AND),
             e = T(KNHK_JOIN_XOR, KNHK_SPLIT_AND);
    uint32_t d = T(KNHK_JOIN_DISCRIMINATOR, KNHK_SPLIT_AND), f = T(KNHK_JOIN_XOR, KNHK_SPLIT_AND);
    io(i, o);
    in(i, a); out(a, c1); out(a, c2); out(a, c5);
    in(c1, b); out(b, c3); in(c2, c); out(c, c4); in(c5, e); out(e, c6);
    in(c3, d); in(c4, d); in(c6, d); out(d, m);
    in(m, f); out(f, o);
    seal();
  }

  /* WCP-25/43: A AND-splits to c1, c2; B: c1 -> c3; E: c3 -> o; K: c2 -> o cancels c1, c3, B */
  cur = &nets[4];
  knhk_net_init(cur);
  {
    uint32_t i = C(), c1 = C(), c2 = C(), c3 = C(), o = C();
    uint32_t a = T(KNHK_JOIN_XOR, KNHK_SPLIT_AND), b = T(KNHK_JOIN_XOR, KNHK_SPLIT_AND);
    uint32_t e = T(KNHK_JOIN_XOR, KNHK_SPLIT_AND), k = T(KNHK_JOIN_XOR, KNHK_SPLIT_AND);
    io(i, o);
    in(i, a); out(a, c1); out(a, c2);
    in(c1, b); out(b, c3); in(c3, e); out(e, o);
    in(c2, k); out(k, o);
    CHECK_STATUS(knhk_net_add_cancel_condition(cur, k, c1), KNHK_OK);
    CHECK_STATUS(knhk_net_add_cancel_condition(cur, k, c3), KNHK_OK);
    CHECK_STATUS(knhk_net_add_cancel_task(cur, k, b), KNHK_OK);
    seal();
  }

  /* WCP-10: A: i -> c1; B: c1 -> XOR (r2 < 3 -> c2, else c3); C: c2 -> c1; D: c3 -> o */
  cur = &nets[5];
  knhk_net_init(cur);
  {
    uint32_t i = C(), c1 = C(), c2 = C(), c3 = C(), o = C();
    uint32_t a = T(KNHK_JOIN_XOR, KNHK_SPLIT_AND), b = T(KNHK_JOIN_XOR, KNHK_SPLIT_XOR);
    uint32_t c = T(KNHK_JOIN_XOR, KNHK_SPLIT_AND), d = T(KNHK_JOIN_XOR, KNHK_SPLIT_AND);
    io(i, o);
    in(i, a); out(a, c1);
    in(c1, b); out_guard(b, c2, KNHK_GUARD_LT, 2, 3, 0); out_guard(b, c3, KNHK_GUARD_TRUE, 0, 0, 1);
    in(c2, c); out(c, c1); in(c3, d); out(d, o);
    seal();
  }

  /* WCP-43 by an AND split: A: i -> o and c1; B: c1 -> o */
  cur = &nets[6];
  knhk_net_init(cur);
  {
    uint32_t i = C(), o = C(), c1 = C();
    uint32_t a = T(KNHK_JOIN_XOR, KNHK_SPLIT_AND), b = T(KNHK_JOIN_XOR, KNHK_SPLIT_AND);
    io(i, o);
    in(i, a); out(a, o); out(a, c1); in(c1, b); out(b, o);
    seal();
  }

  /* WCP-16: A: i -> c1; B and C both take c1 (first start wins) -> c2; D: c2 -> o */
  cur = &nets[7];
  knhk_net_init(cur);
  {
    uint32_t i = C(), c1 = C(), c2 = C(), o = C();
    uint32_t a = T(KNHK_JOIN_XOR, KNHK_SPLIT_AND), b = T(KNHK_JOIN_XOR, KNHK_SPLIT_AND);
    uint32_t c = T(KNHK_JOIN_XOR, KNHK_SPLIT_AND), d = T(KNHK_JOIN_XOR, KNHK_SPLIT_AND);
    io(i, o);
    in(i, a); out(a, c1); in(c1, b); in(c1, c); out(b, c2); out(c, c2); in(c2, d); out(d, o);
    seal();
  }
}

/* ---- the encoding as knhk.h documents it, written here independently ---- */

static uint32_t crc32c_ref(const uint8_t *p, size_t n) {
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; i++) {
    crc ^= p[i];
    for (int k = 0; k < 8; k++) crc = (crc & 1u) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
  }
  return crc ^ 0xFFFFFFFFu;
}
static void le32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void le64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void reseal(uint8_t *b) { le32(b + 244, crc32c_ref(b, 244)); }

/* Encodes any case words (valid or not), with the given fingerprint and enabled set. */
static void forge(uint8_t b[KNHK_CASE_BYTES], uint64_t fingerprint, const knhk_case_t *c,
                  uint64_t enabled) {
  memset(b, 0, KNHK_CASE_BYTES);
  le32(b + 0, KNHK_CASE_MAGIC);
  le32(b + 4, KNHK_CASE_FORMAT);
  le64(b + 8, fingerprint);
  le64(b + 16, c->marking);
  le64(b + 24, c->busy);
  le64(b + 32, c->or_expect);
  le64(b + 40, c->absorb);
  le64(b + 48, enabled);
  le64(b + 56, c->seq);
  le32(b + 64, c->flags);
  for (int r = 0; r < 8; r++) le64(b + 72 + 8 * r, (uint64_t)c->regs[r]);
  reseal(b);
}

/* ---- random operations ---- */

enum { OP_FIRE, OP_START, OP_COMPLETE, OP_FIRE_BITS, OP_COMPLETE_BITS, OP_CANCEL_TASK,
       OP_CANCEL_CASE, OP_SET_REG, OP_KINDS };

typedef struct op {
  uint32_t kind, task, bits, reg;
  int64_t value;
} op_t;

static op_t random_op(const knhk_net_t *n, const knhk_case_t *c) {
  op_t o = {0, 0, 0, 0, 0};
  uint64_t en = knhk_enabled(n, c), busy = c->busy;
  uint32_t roll = below(100);
  if (roll < 45 && en) { /* an enabled task */
    uint32_t k = below((uint32_t)__builtin_popcountll(en));
    while (k--) en &= en - 1;
    o.task = (uint32_t)__builtin_ctzll(en);
    o.kind = below(4) == 0 ? OP_START : below(3) == 0 ? OP_FIRE_BITS : OP_FIRE;
  } else if (roll < 65 && busy) { /* a busy task */
    uint32_t k = below((uint32_t)__builtin_popcountll(busy));
    while (k--) busy &= busy - 1;
    o.task = (uint32_t)__builtin_ctzll(busy);
    o.kind = below(3) == 0 ? OP_COMPLETE_BITS : OP_COMPLETE;
  } else if (roll < 80) {
    o.kind = OP_SET_REG;
    o.reg = below(KNHK_REGISTERS);
    o.value = (int64_t)below(8) - 1;
  } else {
    o.kind = below(OP_KINDS);
    if (o.kind == OP_CANCEL_CASE && below(4) != 0) o.kind = OP_CANCEL_TASK;
    o.task = below(n->ntasks + 1); /* sometimes out of range */
  }
  o.bits = below(16);
  return o;
}

static knhk_status apply(const knhk_net_t *n, knhk_case_t *c, const op_t *o) {
  switch (o->kind) {
    case OP_FIRE: return knhk_fire(n, c, o->task);
    case OP_START: return knhk_start(n, c, o->task);
    case OP_COMPLETE: return knhk_complete(n, c, o->task);
    case OP_FIRE_BITS: return knhk_fire_bits(n, c, o->task, o->bits);
    case OP_COMPLETE_BITS: return knhk_complete_bits(n, c, o->task, o->bits);
    case OP_CANCEL_TASK: return knhk_cancel_task(n, c, o->task);
    case OP_CANCEL_CASE: return knhk_cancel_case(n, c);
    default: c->regs[o->reg] = o->value; return KNHK_OK;
  }
}

/* ---- saved cases collected for the fuzz loop ---- */

#define POOL 512
static uint8_t pool[POOL][KNHK_CASE_BYTES];
static uint32_t pool_net[POOL];
static uint32_t pool_len;

static void keep(uint32_t ni, const uint8_t *b) {
  uint32_t slot = pool_len < POOL ? pool_len++ : below(POOL);
  memcpy(pool[slot], b, KNHK_CASE_BYTES);
  pool_net[slot] = ni;
}

/* ---- tests ---- */

static void test_statuses_named(void) {
  const uint32_t refusals[] = {KNHK_BAD_LENGTH,     KNHK_BAD_FORMAT,     KNHK_BAD_CHECKSUM,
                               KNHK_WRONG_NET,      KNHK_BAD_MARKING,    KNHK_BAD_BUSY,
                               KNHK_BAD_FLAGS,      KNHK_BAD_SIDE_WORDS, KNHK_BAD_CASE_STATE,
                               KNHK_BAD_ENABLED};
  for (size_t i = 0; i < sizeof refusals / sizeof refusals[0]; i++) {
    CHECK(refusals[i] < KNHK_STATUS_COUNT);
    CHECK(strncmp(knhk_status_name(refusals[i]), "KNHK_", 5) == 0);
    CHECK(strcmp(knhk_status_name(refusals[i]), "KNHK_UNKNOWN_STATUS") != 0);
    for (size_t j = 0; j < i; j++) CHECK(refusals[i] != refusals[j]);
  }
  CHECK(strcmp(knhk_status_name(KNHK_BAD_ENABLED), "KNHK_BAD_ENABLED") == 0);
  CHECK(strcmp(knhk_status_name(KNHK_WRONG_NET), "KNHK_WRONG_NET") == 0);
  /* the reference CRC is CRC-32C */
  CHECK(crc32c_ref((const uint8_t *)"123456789", 9) == 0xE3069283u);
}

static void test_fingerprint(void) {
  static knhk_net_t unsealed;
  knhk_net_init(&unsealed);
  CHECK(knhk_net_fingerprint(NULL) == 0);
  CHECK(knhk_net_fingerprint(&unsealed) == 0);
  for (uint32_t a = 0; a < NNETS; a++) {
    CHECK(knhk_net_fingerprint(&nets[a]) != 0);
    for (uint32_t b = 0; b < a; b++)
      CHECK(knhk_net_fingerprint(&nets[a]) != knhk_net_fingerprint(&nets[b]));
  }
  CHECK(knhk_net_fingerprint(&twin) == knhk_net_fingerprint(&nets[0]));
  CHECK(knhk_net_fingerprint(&other) != knhk_net_fingerprint(&nets[0]));
}

/* Golden: the first case of nets[0], after A fired and r0 = -2, r7 = INT64_MIN. A change here is
 * a change of the format (bump KNHK_CASE_FORMAT) or of the fingerprint. */
static void test_golden(void) {
  static const char golden[2 * KNHK_CASE_BYTES + 1] =
      "4b4e4843" "02000000"                 /* magic "KNHC", format 2 */
      "cb6d75975b629e36"                    /* fingerprint of nets[0] */
      "0200000000000000" "0000000000000000" /* marking c1, busy */
      "0000000000000000" "0000000000000000" /* or_expect, absorb */
      "0200000000000000" "0100000000000000" /* enabled B, seq 1 */
      "00000000" "00000000"                 /* flags, reserved */
      "feffffffffffffff" "0000000000000000" "0000000000000000" "0000000000000000"
      "0000000000000000" "0000000000000000" "0000000000000000" "0000000000000080" /* regs */
      "0000000000000000"                    /* mi_live */
      "000000000000000000000000000000000000000000000000" /* MI slots 0..3 */
      "000000000000000000000000000000000000000000000000"
      "000000000000000000000000000000000000000000000000"
      "000000000000000000000000000000000000000000000000"
      "00000000" "7258138e";                /* reserved, CRC-32C */
  /* format 1 (ABI up to 4), still restored: the same case */
  static const char golden_v1[2 * 144 + 1] =
      "4b4e4843" "01000000"                 /* magic "KNHC", format 1 */
      "cb6d75975b629e36"                    /* fingerprint of nets[0] */
      "0200000000000000" "0000000000000000" /* marking c1, busy */
      "0000000000000000" "0000000000000000" /* or_expect, absorb */
      "0200000000000000" "0100000000000000" /* enabled B, seq 1 */
      "00000000" "00000000"                 /* flags, reserved */
      "feffffffffffffff" "0000000000000000" "0000000000000000" "0000000000000000"
      "0000000000000000" "0000000000000000" "0000000000000000" "0000000000000080" /* regs */
      "00000000" "a7bb2d8a";                /* reserved, CRC-32C */
  CHECK(knhk_net_fingerprint(&nets[0]) == 0x369e625b97756dcbull);
  knhk_case_t c;
  CHECK_STATUS(knhk_case_init(&nets[0], &c), KNHK_OK);
  CHECK_STATUS(knhk_fire(&nets[0], &c, 0), KNHK_OK);
  c.regs[0] = -2;
  c.regs[7] = INT64_MIN;
  uint8_t b[KNHK_CASE_BYTES];
  CHECK_STATUS(knhk_case_save(&nets[0], &c, b, sizeof b), KNHK_OK);
  char hex[2 * KNHK_CASE_BYTES + 1];
  for (uint32_t i = 0; i < KNHK_CASE_BYTES; i++) snprintf(hex + 2 * i, 3, "%02x", b[i]);
  CHECK(strcmp(hex, golden) == 0);
  if (strcmp(hex, golden) != 0) fprintf(stderr, "saved: %s\n", hex);
  /* and the golden bytes restore to that case */
  uint8_t g[KNHK_CASE_BYTES];
  for (uint32_t i = 0; i < KNHK_CASE_BYTES; i++) {
    unsigned v = 0;
    sscanf(golden + 2 * i, "%2x", &v);
    g[i] = (uint8_t)v;
  }
  knhk_case_t r;
  CHECK_STATUS(knhk_case_restore(&nets[0], &r, g, sizeof g), KNHK_OK);
  CHECK(memcmp(&r, &c, sizeof r) == 0);
  uint8_t g1[144];
  for (uint32_t i = 0; i < 144; i++) {
    unsigned v = 0;
    sscanf(golden_v1 + 2 * i, "%2x", &v);
    g1[i] = (uint8_t)v;
  }
  knhk_case_t r1;
  memset(&r1, 0x77, sizeof r1);
  CHECK_STATUS(knhk_case_restore(&nets[0], &r1, g1, sizeof g1), KNHK_OK);
  CHECK(memcmp(&r1, &c, sizeof r1) == 0);
  CHECK_STATUS(knhk_case_restore(&nets[0], &r1, g1, sizeof g1 - 1), KNHK_BAD_LENGTH);
  g1[140] ^= 1;
  CHECK_STATUS(knhk_case_restore(&nets[0], &r1, g1, sizeof g1), KNHK_BAD_CHECKSUM);
}

/* Every point of random runs of every net: save, restore, the same behaviour after. */
static void test_round_trip(void) {
  enum { RUNS = 60, STEPS = 28 };
  static knhk_case_t states[STEPS + 1];
  static op_t ops[STEPS];
  uint64_t compared = 0, restored = 0;
  for (uint32_t ni = 0; ni < NNETS; ni++) {
    const knhk_net_t *n = &nets[ni];
    const int failed_before = failures;
    for (uint32_t run = 0; run < RUNS; run++) {
      CHECK_STATUS(knhk_case_init(n, &states[0]), KNHK_OK);
      for (uint32_t r = 0; r < KNHK_REGISTERS; r++) states[0].regs[r] = (int64_t)below(4);
      for (uint32_t s = 0; s < STEPS; s++) {
        ops[s] = random_op(n, &states[s]);
        states[s + 1] = states[s];
        knhk_status st = apply(n, &states[s + 1], &ops[s]);
        if (st != KNHK_OK) CHECK(memcmp(&states[s + 1], &states[s], sizeof states[s]) == 0);
        CHECK_STATUS(knhk_case_check(n, &states[s + 1]), KNHK_OK); /* ops keep validity */
      }
      for (uint32_t k = 0; k <= STEPS; k++) {
        uint8_t b[KNHK_CASE_BYTES], f[KNHK_CASE_BYTES];
        CHECK_STATUS(knhk_case_save(n, &states[k], b, sizeof b), KNHK_OK);
        forge(f, knhk_net_fingerprint(n), &states[k], knhk_enabled(n, &states[k]));
        CHECK(memcmp(b, f, sizeof b) == 0); /* the documented encoding */
        if (below(4) == 0) keep(ni, b);
        knhk_case_t r, c = states[k];
        memset(&r, 0x5A, sizeof r);
        CHECK_STATUS(knhk_case_restore(n, &r, b, sizeof b), KNHK_OK);
        CHECK(memcmp(&r, &states[k], sizeof r) == 0);
        CHECK(knhk_case_state(n, &r) == knhk_case_state(n, &states[k]));
        restored++;
        for (uint32_t s = k; s < STEPS; s++) {
          knhk_status sa = apply(n, &c, &ops[s]);
          knhk_status sb = apply(n, &r, &ops[s]);
          CHECK(sa == sb);
          CHECK(memcmp(&c, &r, sizeof c) == 0);
          CHECK(knhk_enabled(n, &c) == knhk_enabled(n, &r));
          compared++;
        }
        /* the same bytes restore into a twin net (same builder calls), not into another */
        if (ni == 0) {
          CHECK_STATUS(knhk_case_restore(&twin, &r, b, sizeof b), KNHK_OK);
          CHECK_STATUS(knhk_case_restore(&other, &r, b, sizeof b), KNHK_WRONG_NET);
        }
        for (uint32_t nj = 0; nj < NNETS; nj++)
          if (nj != ni) CHECK_STATUS(knhk_case_restore(&nets[nj], &r, b, sizeof b), KNHK_WRONG_NET);
      }
    }
    if (failures != failed_before) fprintf(stderr, "round trip: net %s failed\n", net_names[ni]);
  }
  printf("round trip: %llu cases restored across %u nets, %llu later operations identical\n",
         (unsigned long long)restored, NNETS, (unsigned long long)compared);
}

/* A forged case must be refused with `want`, by check (when the words are the fault), by save
 * and by restore, and leave the targets untouched. */
static void refuse_case(const knhk_net_t *n, const knhk_case_t *bad, knhk_status want,
                        int line) {
  uint8_t b[KNHK_CASE_BYTES], out[KNHK_CASE_BYTES];
  forge(b, knhk_net_fingerprint(n), bad, knhk_enabled(n, bad));
  knhk_case_t r, keep_r;
  memset(&r, 0xA5, sizeof r);
  keep_r = r;
  knhk_status s = knhk_case_restore(n, &r, b, sizeof b);
  if (s != want)
    fprintf(stderr, "line %d: restore gave %s, want %s\n", line, knhk_status_name(s),
            knhk_status_name(want));
  CHECK(s == want);
  CHECK(memcmp(&r, &keep_r, sizeof r) == 0);
  if (want != KNHK_BAD_ENABLED) {
    CHECK(knhk_case_check(n, bad) == want);
    memset(out, 0xEE, sizeof out);
    CHECK(knhk_case_save(n, bad, out, sizeof out) == want);
    for (uint32_t i = 0; i < sizeof out; i++) CHECK(out[i] == 0xEE);
  }
}
#define REFUSE_CASE(n, bad, want) refuse_case((n), (bad), (want), __LINE__)

static void test_refusals(void) {
  const knhk_net_t *n = &nets[3]; /* discriminator: 9 conditions, 6 tasks */
  knhk_case_t c, bad;
  uint8_t b[KNHK_CASE_BYTES], x[KNHK_CASE_BYTES + 8];
  CHECK_STATUS(knhk_case_init(n, &c), KNHK_OK);
  CHECK_STATUS(knhk_fire(n, &c, 0), KNHK_OK); /* c1, c2, c5 marked */
  CHECK_STATUS(knhk_case_save(n, &c, b, sizeof b), KNHK_OK);
  knhk_case_t r;
  memset(&r, 0xA5, sizeof r);
  const knhk_case_t untouched = r;

  /* arguments */
  CHECK_STATUS(knhk_case_restore(NULL, &r, b, sizeof b), KNHK_BAD_ARGUMENT);
  CHECK_STATUS(knhk_case_restore(n, NULL, b, sizeof b), KNHK_BAD_ARGUMENT);
  CHECK_STATUS(knhk_case_restore(n, &r, NULL, sizeof b), KNHK_BAD_ARGUMENT);
  CHECK_STATUS(knhk_case_save(n, &c, NULL, sizeof b), KNHK_BAD_ARGUMENT);
  CHECK_STATUS(knhk_case_check(n, NULL), KNHK_BAD_ARGUMENT);
  static knhk_net_t unsealed;
  knhk_net_init(&unsealed);
  CHECK_STATUS(knhk_case_restore(&unsealed, &r, b, sizeof b), KNHK_NOT_SEALED);
  CHECK_STATUS(knhk_case_save(&unsealed, &c, b, sizeof b), KNHK_NOT_SEALED);
  CHECK_STATUS(knhk_case_check(&unsealed, &c), KNHK_NOT_SEALED);

  /* length: short, long, truncated at every length */
  CHECK_STATUS(knhk_case_save(n, &c, x, KNHK_CASE_BYTES - 1), KNHK_BAD_LENGTH);
  CHECK_STATUS(knhk_case_save(n, &c, x, sizeof x), KNHK_OK); /* more room is fine */
  CHECK(memcmp(x, b, sizeof b) == 0);
  for (uint32_t len = 0; len < KNHK_CASE_BYTES + 8; len++) {
    if (len == KNHK_CASE_BYTES) continue;
    uint8_t *exact = malloc(len ? len : 1); /* ASan: any read past len is caught */
    memcpy(exact, x, len);
    CHECK_STATUS(knhk_case_restore(n, &r, exact, len), KNHK_BAD_LENGTH);
    free(exact);
  }
  CHECK(memcmp(&r, &untouched, sizeof r) == 0);

  /* format: magic, version, reserved fields (with a right checksum) */
  memcpy(x, b, sizeof b);
  x[0] ^= 1;
  CHECK_STATUS(knhk_case_restore(n, &r, x, sizeof b), KNHK_BAD_FORMAT);
  memcpy(x, b, sizeof b);
  le32(x + 4, KNHK_CASE_FORMAT + 1);
  reseal(x);
  CHECK_STATUS(knhk_case_restore(n, &r, x, sizeof b), KNHK_BAD_FORMAT);
  CHECK_STATUS(knhk_case_restore(n, &r, x, 8), KNHK_BAD_FORMAT); /* version before length */
  memcpy(x, b, sizeof b);
  x[68] = 1;
  reseal(x);
  CHECK_STATUS(knhk_case_restore(n, &r, x, sizeof b), KNHK_BAD_FORMAT);
  memcpy(x, b, sizeof b);
  x[243] = 0x80;
  reseal(x);
  CHECK_STATUS(knhk_case_restore(n, &r, x, sizeof b), KNHK_BAD_FORMAT);

  /* checksum: every single bit flip past the magic and version */
  for (uint32_t bit = 64; bit < 8 * KNHK_CASE_BYTES; bit++) {
    memcpy(x, b, sizeof b);
    x[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    CHECK_STATUS(knhk_case_restore(n, &r, x, sizeof b), KNHK_BAD_CHECKSUM);
  }
  CHECK(memcmp(&r, &untouched, sizeof r) == 0);

  /* another net: a different fingerprint, even with a right checksum */
  CHECK_STATUS(knhk_case_restore(&nets[2], &r, b, sizeof b), KNHK_WRONG_NET);
  memcpy(x, b, sizeof b);
  x[8] ^= 4;
  reseal(x);
  CHECK_STATUS(knhk_case_restore(n, &r, x, sizeof b), KNHK_WRONG_NET);
  CHECK(memcmp(&r, &untouched, sizeof r) == 0);

  /* stray marking and busy bits: past nconditions / ntasks */
  bad = c; bad.marking |= B(n->nconditions);
  REFUSE_CASE(n, &bad, KNHK_BAD_MARKING);
  bad = c; bad.marking |= B(63);
  REFUSE_CASE(n, &bad, KNHK_BAD_MARKING);
  bad = c; bad.busy |= B(n->ntasks);
  REFUSE_CASE(n, &bad, KNHK_BAD_BUSY);
  bad = c; bad.busy |= B(63);
  REFUSE_CASE(n, &bad, KNHK_BAD_BUSY);

  /* flags: unknown bits, combinations no operation produces */
  const uint32_t bad_flags[] = {
      32u, KNHK_FLAG_DONE, KNHK_FLAG_COMPLETED, KNHK_FLAG_CANCELLED,
      KNHK_FLAG_DONE | KNHK_FLAG_COMPLETED | KNHK_FLAG_CANCELLED,
      KNHK_FLAG_DONE | KNHK_FLAG_COMPLETED | KNHK_FLAG_EXPLICIT_TERMINATION |
          KNHK_FLAG_IMPLICIT_TERMINATION,
      KNHK_FLAG_DONE | KNHK_FLAG_CANCELLED | KNHK_FLAG_EXPLICIT_TERMINATION,
      KNHK_FLAG_EXPLICIT_TERMINATION, KNHK_FLAG_DONE | 32u, 0xFFFFFFFFu};
  for (size_t i = 0; i < sizeof bad_flags / sizeof bad_flags[0]; i++) {
    bad = c;
    bad.flags = bad_flags[i];
    REFUSE_CASE(n, &bad, KNHK_BAD_FLAGS);
  }

  /* side words: absorb outside the discriminator's inputs (c3 = 4, c4 = 5, c6 = 6), absorb on a
   * marked condition, or_expect in a net without OR-joins */
  bad = c; bad.absorb = B(1);
  REFUSE_CASE(n, &bad, KNHK_BAD_SIDE_WORDS);
  bad = c; bad.absorb = B(4); bad.marking |= B(4);
  REFUSE_CASE(n, &bad, KNHK_BAD_SIDE_WORDS);
  bad = c; bad.or_expect = B(4);
  REFUSE_CASE(n, &bad, KNHK_BAD_SIDE_WORDS);
  bad = c; bad.absorb = B(4) | B(6); /* inside: valid (the discriminator fired on c4) */
  CHECK_STATUS(knhk_case_check(n, &bad), KNHK_OK);
  {
    const knhk_net_t *orn = &nets[2]; /* OR-join inputs c3 = 3, c4 = 4 */
    knhk_case_t oc;
    CHECK_STATUS(knhk_case_init(orn, &oc), KNHK_OK);
    bad = oc; bad.or_expect = B(1);
    REFUSE_CASE(orn, &bad, KNHK_BAD_SIDE_WORDS);
    bad = oc; bad.absorb = B(3);
    REFUSE_CASE(orn, &bad, KNHK_BAD_SIDE_WORDS);
    bad = oc; bad.or_expect = B(3) | B(4);
    CHECK_STATUS(knhk_case_check(orn, &bad), KNHK_OK);
  }

  /* state against the marking */
  const uint64_t o = nets[3].output;
  bad = c; bad.marking |= o; /* running with the output marked */
  REFUSE_CASE(n, &bad, KNHK_BAD_CASE_STATE);
  bad = c; bad.marking = 0; bad.busy = 0; /* running with nothing left */
  REFUSE_CASE(n, &bad, KNHK_BAD_CASE_STATE);
  bad = c; bad.flags = KNHK_FLAG_DONE | KNHK_FLAG_COMPLETED; /* complete without the output */
  REFUSE_CASE(n, &bad, KNHK_BAD_CASE_STATE);
  bad.marking = o | B(1); /* ... with another token */
  REFUSE_CASE(n, &bad, KNHK_BAD_CASE_STATE);
  bad.marking = o; bad.busy = B(1); /* ... with a busy task */
  REFUSE_CASE(n, &bad, KNHK_BAD_CASE_STATE);
  bad.busy = 0; bad.absorb = B(4); /* ... with side state */
  REFUSE_CASE(n, &bad, KNHK_BAD_CASE_STATE);
  bad.absorb = 0;
  CHECK_STATUS(knhk_case_check(n, &bad), KNHK_OK);
  bad.flags |= KNHK_FLAG_IMPLICIT_TERMINATION; /* implicit termination with a token */
  REFUSE_CASE(n, &bad, KNHK_BAD_CASE_STATE);
  bad.marking = 0; bad.absorb = B(4); /* implicit termination keeps its side words */
  CHECK_STATUS(knhk_case_check(n, &bad), KNHK_OK);
  bad = c; bad.flags = KNHK_FLAG_DONE | KNHK_FLAG_CANCELLED; /* cancelled with tokens */
  REFUSE_CASE(n, &bad, KNHK_BAD_CASE_STATE);
  bad.marking = 0; bad.absorb = B(4); /* ... with side state */
  REFUSE_CASE(n, &bad, KNHK_BAD_CASE_STATE);

  /* the enabled set: any other value than the one the rules give */
  for (uint32_t t = 0; t < 64; t++) {
    forge(x, knhk_net_fingerprint(n), &c, knhk_enabled(n, &c) ^ B(t));
    CHECK_STATUS(knhk_case_restore(n, &r, x, sizeof b), KNHK_BAD_ENABLED);
  }
  bad = c;
  bad.marking = B(1) | B(4); /* valid words, but no longer the saved enabled set */
  forge(x, knhk_net_fingerprint(n), &bad, knhk_enabled(n, &c));
  CHECK_STATUS(knhk_case_restore(n, &r, x, sizeof b), KNHK_BAD_ENABLED);
  CHECK(memcmp(&r, &untouched, sizeof r) == 0);

  /* registers and seq are not restricted */
  bad = c;
  bad.seq = ~0ull;
  for (uint32_t i = 0; i < KNHK_REGISTERS; i++) bad.regs[i] = (int64_t)(rnd());
  CHECK_STATUS(knhk_case_save(n, &bad, x, sizeof b), KNHK_OK);
  CHECK_STATUS(knhk_case_restore(n, &r, x, sizeof b), KNHK_OK);
  CHECK(memcmp(&r, &bad, sizeof r) == 0);

  /* reserved fields of the struct are not saved: restore writes zeros */
  bad = c;
  bad.reserved = 7;
  bad.reserved2 = 9;
  CHECK_STATUS(knhk_case_save(n, &bad, x, sizeof b), KNHK_OK);
  CHECK(memcmp(x, b, sizeof b) == 0);
  CHECK_STATUS(knhk_case_restore(n, &r, x, sizeof b), KNHK_OK);
  CHECK(r.reserved == 0 && r.reserved2 == 0);
  CHECK(memcmp(&r, &c, sizeof r) == 0);
}

static int is_refusal(knhk_status s) {
  return s == KNHK_BAD_LENGTH || s == KNHK_BAD_FORMAT || s == KNHK_BAD_CHECKSUM ||
         s == KNHK_WRONG_NET || s == KNHK_BAD_MARKING || s == KNHK_BAD_BUSY ||
         s == KNHK_BAD_FLAGS || s == KNHK_BAD_SIDE_WORDS || s == KNHK_BAD_CASE_STATE ||
         s == KNHK_BAD_MI_SLOT ||
         s == KNHK_BAD_ENABLED;
}

/* Mutated bytes: refused (target untouched), or a valid case that keeps running validly. */
static void test_fuzz(void) {
  enum { ROUNDS = 40000 };
  uint32_t seen[KNHK_STATUS_COUNT] = {0};
  CHECK(pool_len > 100);
  for (uint32_t round = 0; round < ROUNDS; round++) {
    uint32_t p = below(pool_len);
    uint32_t ni = below(8) == 0 ? below(NNETS) : pool_net[p]; /* sometimes another net */
    const knhk_net_t *n = &nets[ni];
    uint8_t x[KNHK_CASE_BYTES + 16];
    memcpy(x, pool[p], KNHK_CASE_BYTES);
    memset(x + KNHK_CASE_BYTES, (int)below(256), 16);
    uint64_t len = KNHK_CASE_BYTES;
    int fix_crc = round % 2; /* odd rounds reach the checks behind the checksum */
    uint32_t nmut = 1 + below(4);
    for (uint32_t m = 0; m < nmut; m++) {
      uint32_t at = below(8) == 0 ? below(KNHK_CASE_BYTES) : 16 + below(56); /* mostly words */
      switch (below(5)) {
        case 0: x[at] = (uint8_t)rnd(); break;
        case 1: /* a whole word to a random value, or a word from another saved case */
          le64(x + (at & ~7u), below(2) ? rnd() : 1ull << below(64));
          break;
        case 2:
          if (below(8) == 0) len = below(KNHK_CASE_BYTES + 16);
          break;
        default: x[at] ^= (uint8_t)(1u << below(8)); break;
      }
    }
    if (fix_crc) reseal(x);
    uint8_t *exact = malloc(len ? len : 1);
    memcpy(exact, x, len);
    knhk_case_t r;
    memset(&r, 0xA5, sizeof r);
    const knhk_case_t untouched = r;
    knhk_status s = knhk_case_restore(n, &r, exact, len);
    free(exact);
    seen[s < KNHK_STATUS_COUNT ? s : 0]++;
    if (s != KNHK_OK) {
      CHECK(is_refusal(s));
      CHECK(memcmp(&r, &untouched, sizeof r) == 0);
      continue;
    }
    /* accepted: valid, and stays valid under any operation */
    CHECK_STATUS(knhk_case_check(n, &r), KNHK_OK);
    CHECK(r.reserved == 0 && r.reserved2 == 0);
    uint8_t again[KNHK_CASE_BYTES];
    CHECK_STATUS(knhk_case_save(n, &r, again, sizeof again), KNHK_OK);
    CHECK(memcmp(again, x, KNHK_CASE_BYTES) == 0); /* accepted bytes are canonical */
    for (uint32_t step = 0; step < 16; step++) {
      op_t o = random_op(n, &r);
      knhk_case_t before = r;
      knhk_status st = apply(n, &r, &o);
      if (st != KNHK_OK) CHECK(memcmp(&r, &before, sizeof r) == 0);
      CHECK_STATUS(knhk_case_check(n, &r), KNHK_OK);
    }
  }
  printf("fuzz: %u mutated saves:", ROUNDS);
  for (uint32_t s = 0; s < KNHK_STATUS_COUNT; s++)
    if (seen[s]) printf(" %s %u", knhk_status_name(s) + 5, seen[s]);
  printf("\n");
  CHECK(seen[KNHK_OK] > 0);
  CHECK(seen[KNHK_BAD_CHECKSUM] > 0 && seen[KNHK_BAD_MARKING] > 0 && seen[KNHK_BAD_BUSY] > 0 &&
        seen[KNHK_BAD_SIDE_WORDS] > 0 && seen[KNHK_BAD_ENABLED] > 0 &&
        seen[KNHK_BAD_CASE_STATE] > 0 && seen[KNHK_WRONG_NET] > 0 && seen[KNHK_BAD_LENGTH] > 0);
}

int main(void) {
  build_nets();
  test_statuses_named();
  test_fingerprint();
  test_golden();
  test_round_trip();
  test_refusals();
  test_fuzz();
  printf("libknhk restore tests: %d checks, %d failed\n", checks, failures);
  return failures ? 1 : 0;
}
