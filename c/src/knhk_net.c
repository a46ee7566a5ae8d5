/* knhk_net.c — building and sealing nets (cold path). No allocation: the net is caller memory. */
#include "knhk_internal.h"

#include <string.h>

uint32_t knhk_abi_version(void) { return KNHK_ABI_VERSION; }
uint32_t knhk_version(void) { return KNHK_VERSION_HEX; }
const char *knhk_version_string(void) { return KNHK_VERSION_STRING; }

static const char *const knhk_status_names[] = {
    "KNHK_OK",
    "KNHK_NOT_ENABLED",
    "KNHK_NOT_STARTED",
    "KNHK_SAFETY_VIOLATION",
    "KNHK_CASE_COMPLETE",
    "KNHK_BAD_TASK",
    "KNHK_NOT_SEALED",
    "KNHK_BAD_ARGUMENT",
    "KNHK_SEALED",
    "KNHK_BAD_CONDITION",
    "KNHK_CAPACITY_CONDITIONS",
    "KNHK_CAPACITY_TASKS",
    "KNHK_CAPACITY_BRANCHES",
    "KNHK_DUPLICATE_FLOW",
    "KNHK_BAD_GUARD",
    "KNHK_NO_INPUT",
    "KNHK_NO_OUTPUT",
    "KNHK_INPUT_HAS_INFLOW",
    "KNHK_OUTPUT_HAS_OUTFLOW",
    "KNHK_TASK_NO_INPUT",
    "KNHK_TASK_NO_OUTPUT",
    "KNHK_UNREACHABLE",
    "KNHK_CANNOT_COMPLETE",
    "KNHK_NO_DEFAULT",
    "KNHK_TWO_DEFAULTS",
    "KNHK_MULTI_MERGE",
    "KNHK_NONLOCAL_OR_JOIN",
    "KNHK_INPUT_IS_OUTPUT",
    "KNHK_LANE_IDLE",
    "KNHK_BAD_LENGTH",
    "KNHK_BAD_FORMAT",
    "KNHK_BAD_CHECKSUM",
    "KNHK_WRONG_NET",
    "KNHK_BAD_MARKING",
    "KNHK_BAD_BUSY",
    "KNHK_BAD_FLAGS",
    "KNHK_BAD_SIDE_WORDS",
    "KNHK_BAD_CASE_STATE",
    "KNHK_BAD_ENABLED",
    "KNHK_OR_JOIN_CAP",
    "KNHK_MI_TASK",
    "KNHK_NOT_MI_TASK",
    "KNHK_BAD_INSTANCE",
    "KNHK_MI_LIMIT",
    "KNHK_MI_WINDOW",
    "KNHK_BAD_MI",
    "KNHK_CAPACITY_MI",
    "KNHK_BAD_MI_SLOT",
};
_Static_assert(sizeof knhk_status_names / sizeof knhk_status_names[0] == KNHK_STATUS_COUNT,
               "a status without a name");

const char *knhk_status_name(uint32_t status) {
  if (status >= KNHK_STATUS_COUNT) return "KNHK_UNKNOWN_STATUS";
  return knhk_status_names[status];
}

knhk_status knhk_net_init(knhk_net_t *net) {
  if (!net) return KNHK_BAD_ARGUMENT;
  memset(net, 0, sizeof *net);
  for (uint32_t t = 0; t < KNHK_MAX_TASKS; t++) net->tasks[t].default_branch = 0xFF;
  return KNHK_OK;
}

knhk_status knhk_net_add_condition(knhk_net_t *net, uint32_t *out_index) {
  if (!net) return KNHK_BAD_ARGUMENT;
  if (net->sealed) return KNHK_SEALED;
  if (net->nconditions >= KNHK_MAX_CONDITIONS) return KNHK_CAPACITY_CONDITIONS;
  if (out_index) *out_index = net->nconditions;
  net->nconditions++;
  return KNHK_OK;
}

knhk_status knhk_net_add_task(knhk_net_t *net, uint32_t join, uint32_t split,
                              uint32_t *out_index) {
  if (!net) return KNHK_BAD_ARGUMENT;
  if (net->sealed) return KNHK_SEALED;
  if (join > KNHK_JOIN_DISCRIMINATOR || split > KNHK_SPLIT_OR) return KNHK_BAD_ARGUMENT;
  if (net->ntasks >= KNHK_MAX_TASKS) return KNHK_CAPACITY_TASKS;
  knhk_task_t *t = &net->tasks[net->ntasks];
  t->join = (uint8_t)join;
  t->split = (uint8_t)split;
  t->first_branch = (uint16_t)net->nflows; /* its flows go after every earlier task's */
  if (out_index) *out_index = net->ntasks;
  net->ntasks++;
  return KNHK_OK;
}

static knhk_status check_builder(const knhk_net_t *net) {
  if (!net) return KNHK_BAD_ARGUMENT;
  if (net->sealed) return KNHK_SEALED;
  return KNHK_OK;
}

knhk_status knhk_net_set_mi(knhk_net_t *net, uint32_t task, const knhk_mi_spec_t *spec) {
  knhk_status s = check_builder(net);
  if (s != KNHK_OK) return s;
  if (!spec) return KNHK_BAD_ARGUMENT;
  if (task >= net->ntasks) return KNHK_BAD_TASK;
  if (spec->minimum == 0 || spec->minimum > spec->maximum ||
      spec->maximum > KNHK_MI_MAX_INSTANCES || (spec->flags & ~(KNHK_MI_DYNAMIC | KNHK_MI_KEEP)) ||
      (spec->threshold == 0 && !(spec->flags & KNHK_MI_KEEP)) ||
      (spec->count_reg != KNHK_MI_NO_REG && spec->count_reg >= KNHK_REGISTERS) || spec->reserved)
    return KNHK_BAD_MI;
  knhk_task_t *t = &net->tasks[task];
  uint8_t slot = t->mi.slot;
  if (!slot) {
    uint32_t used = 0;
    for (uint32_t i = 0; i < net->ntasks; i++) used += net->tasks[i].mi.slot != 0;
    if (used >= KNHK_MAX_MI_TASKS) return KNHK_CAPACITY_MI;
    slot = (uint8_t)(used + 1u);
  }
  t->mi = *spec;
  t->mi.slot = slot;
  return KNHK_OK;
}

knhk_status knhk_net_set_input(knhk_net_t *net, uint32_t condition) {
  knhk_status s = check_builder(net);
  if (s != KNHK_OK) return s;
  if (condition >= net->nconditions) return KNHK_BAD_CONDITION;
  net->input = KNHK_BIT(condition);
  return KNHK_OK;
}

knhk_status knhk_net_set_output(knhk_net_t *net, uint32_t condition) {
  knhk_status s = check_builder(net);
  if (s != KNHK_OK) return s;
  if (condition >= net->nconditions) return KNHK_BAD_CONDITION;
  net->output = KNHK_BIT(condition);
  return KNHK_OK;
}

knhk_status knhk_net_add_input_flow(knhk_net_t *net, uint32_t condition, uint32_t task) {
  knhk_status s = check_builder(net);
  if (s != KNHK_OK) return s;
  if (task >= net->ntasks) return KNHK_BAD_TASK;
  if (condition >= net->nconditions) return KNHK_BAD_CONDITION;
  knhk_task_t *t = &net->tasks[task];
  if (t->pre & KNHK_BIT(condition)) return KNHK_DUPLICATE_FLOW;
  t->pre |= KNHK_BIT(condition);
  return KNHK_OK;
}

static int guard_valid(const knhk_guard_t *g) {
  if (g->combine > KNHK_COMBINE_OR) return 0;
  for (int i = 0; i < 2; i++) {
    const knhk_term_t *term = &g->term[i];
    if (term->op > KNHK_GUARD_NBIT) return 0;
    if (term->lhs >= KNHK_REGISTERS) return 0;
    if (term->rhs_is_reg > 1) return 0;
    if (term->rhs_is_reg && term->rhs_reg >= KNHK_REGISTERS) return 0;
  }
  return 1;
}

knhk_status knhk_net_add_output_flow(knhk_net_t *net, uint32_t task, uint32_t condition,
                                     const knhk_guard_t *guard, uint32_t is_default) {
  knhk_status s = check_builder(net);
  if (s != KNHK_OK) return s;
  if (task >= net->ntasks) return KNHK_BAD_TASK;
  if (condition >= net->nconditions) return KNHK_BAD_CONDITION;
  knhk_task_t *t = &net->tasks[task];
  if (t->post & KNHK_BIT(condition)) return KNHK_DUPLICATE_FLOW;
  if (t->nbranches >= KNHK_MAX_BRANCHES || net->nflows >= KNHK_MAX_FLOWS)
    return KNHK_CAPACITY_BRANCHES;
  if (guard && !guard_valid(guard)) return KNHK_BAD_GUARD;
  /* The flow array keeps each task's flows contiguous, task by task: the new flow goes at the end
   * of this task's flows, the later tasks' flows move up by one (cold path). */
  uint32_t at = (uint32_t)t->first_branch + t->nbranches;
  memmove(&net->branches[at + 1u], &net->branches[at],
          (size_t)(net->nflows - at) * sizeof net->branches[0]);
  for (uint32_t u = task + 1u; u < net->ntasks; u++) net->tasks[u].first_branch++;
  net->nflows++;
  knhk_branch_t *b = &net->branches[at];
  memset(b, 0, sizeof *b);
  b->conditions = KNHK_BIT(condition);
  if (guard) {
    b->guard = *guard;
  } else {
    b->guard.term[0].op = KNHK_GUARD_TRUE;
    b->guard.term[1].op = KNHK_GUARD_TRUE;
    b->guard.combine = KNHK_COMBINE_AND;
  }
  if (is_default) {
    if (t->ndefaults == 0) t->default_branch = t->nbranches;
    t->ndefaults++;
  }
  t->post |= KNHK_BIT(condition);
  t->nbranches++;
  return KNHK_OK;
}

knhk_status knhk_net_add_cancel_condition(knhk_net_t *net, uint32_t task, uint32_t condition) {
  knhk_status s = check_builder(net);
  if (s != KNHK_OK) return s;
  if (task >= net->ntasks) return KNHK_BAD_TASK;
  if (condition >= net->nconditions) return KNHK_BAD_CONDITION;
  net->tasks[task].cancel_conditions |= KNHK_BIT(condition);
  return KNHK_OK;
}

knhk_status knhk_net_add_cancel_task(knhk_net_t *net, uint32_t task, uint32_t victim) {
  knhk_status s = check_builder(net);
  if (s != KNHK_OK) return s;
  if (task >= net->ntasks || victim >= net->ntasks) return KNHK_BAD_TASK;
  net->tasks[task].cancel_tasks |= KNHK_BIT(victim);
  return KNHK_OK;
}

uint64_t knhk_net_general_or_joins(const knhk_net_t *net) {
  if (!net || !net->sealed) return 0;
  return net->hot.tables.orj_general;
}

void knhk_guard_const(knhk_guard_t *guard, uint32_t op, uint32_t lhs, int64_t constant) {
  memset(guard, 0, sizeof *guard);
  guard->term[0].op = (uint8_t)op;
  guard->term[0].lhs = (uint8_t)lhs;
  guard->term[0].rhs_const = constant;
  guard->term[1].op = KNHK_GUARD_TRUE;
  guard->combine = KNHK_COMBINE_AND;
}

/* ---------------------------------------------------------------------------------------- */
/* Sealing: graph checks over 64-bit masks, bounded loops, no allocation.                   */
/* ---------------------------------------------------------------------------------------- */

static knhk_status report(knhk_seal_report_t *r, knhk_status s, uint32_t element, uint32_t index,
                          uint32_t other) {
  if (r) {
    r->status = (uint32_t)s;
    r->element = element;
    r->index = index;
    r->other = other;
  }
  return s;
}

/* Effective join of a task: a single input condition makes every join behave as XOR
 * (one token in, one token consumed), except the discriminator, which keeps its absorbing. */
static uint8_t effective_join(const knhk_task_t *t) {
  if (t->join == KNHK_JOIN_DISCRIMINATOR) return t->join;
  if (knhk_popcount64(t->pre) == 1) return KNHK_JOIN_XOR;
  return t->join;
}

/* Conditions consumed by some task in `tasks`'s postsets, and the reverse, as fixpoints. */
static uint64_t forward_conditions(const knhk_net_t *net, uint64_t from, uint64_t *tasks_out) {
  uint64_t conds = from, tasks = 0, prev;
  do {
    prev = conds;
    for (uint32_t i = 0; i < net->ntasks; i++) {
      if (net->tasks[i].pre & conds) {
        tasks |= KNHK_BIT(i);
        conds |= net->tasks[i].post;
      }
    }
  } while (conds != prev);
  if (tasks_out) *tasks_out = tasks;
  return conds;
}

static uint64_t backward_conditions(const knhk_net_t *net, uint64_t from, uint64_t *tasks_out) {
  uint64_t conds = from, tasks = 0, prev;
  do {
    prev = conds;
    for (uint32_t i = 0; i < net->ntasks; i++) {
      if (net->tasks[i].post & conds) {
        tasks |= KNHK_BIT(i);
        conds |= net->tasks[i].pre;
      }
    }
  } while (conds != prev);
  if (tasks_out) *tasks_out = tasks;
  return conds;
}

/* The region a branch token can reach on its own: starting from `start`, a task joins the
 * region when its join can fire from region tokens alone (XOR: any input in the region;
 * AND/OR/discriminator: all inputs in the region). `stop` tasks never join. */
static uint64_t branch_region(const knhk_net_t *net, uint64_t start, uint64_t stop,
                              uint64_t *tasks_out) {
  uint64_t conds = start, tasks = 0, prev;
  do {
    prev = conds;
    for (uint32_t i = 0; i < net->ntasks; i++) {
      const knhk_task_t *t = &net->tasks[i];
      if ((stop & KNHK_BIT(i)) || (tasks & KNHK_BIT(i))) continue;
      int joins = effective_join(t) == KNHK_JOIN_XOR ? (t->pre & conds) != 0
                                                     : (t->pre & conds) == t->pre;
      if (joins) {
        tasks |= KNHK_BIT(i);
        conds |= t->post;
      }
    }
  } while (conds != prev);
  if (tasks_out) *tasks_out = tasks;
  return conds;
}

/* The range [lo, lo + span] (unsigned, wrapping) on which `regs[lhs] op constant` holds.
 * Returns 0 when the comparison is not such a range: a bit test, or a guard that holds
 * nowhere (FALSE, LT INT64_MIN, GT INT64_MAX), which a range cannot express (it holds on at
 * least one value) and which the general path decides. */
static int guard_range(const knhk_term_t *term, uint64_t *lo, uint64_t *span) {
  const uint64_t c = (uint64_t)term->rhs_const;
  const uint64_t min = (uint64_t)INT64_MIN, max = (uint64_t)INT64_MAX;
  uint64_t first, last; /* as signed values first <= last, except NE, which wraps */
  switch (term->op) {
    case KNHK_GUARD_EQ: first = c; last = c; break;
    case KNHK_GUARD_NE: first = c + 1; last = c - 1; break; /* everything but c */
    case KNHK_GUARD_LT:
      if (c == min) return 0;
      first = min; last = c - 1; break;
    case KNHK_GUARD_LE: first = min; last = c; break;
    case KNHK_GUARD_GT:
      if (c == max) return 0;
      first = c + 1; last = max; break;
    case KNHK_GUARD_GE: first = c; last = max; break;
    case KNHK_GUARD_TRUE: first = min; last = max; break;
    default: return 0;
  }
  *lo = first;
  *span = last - first;
  return 1;
}

/* The short-path tables of task i (knhk_hot_t; fire_hot_any and fire_short in knhk_case.c): kind 0 unless the
 * task's firing touches only the marking: AND or XOR join, AND split or two-way XOR split with
 * a range guard, no cancellation set, and no side state anywhere in the net (no OR-join or
 * discriminator could absorb or expect what the task produces). Called on a net that passed
 * every check; t->join is effective. */
static void set_hot(knhk_net_t *net, uint32_t i, int side_state, int mi_keep) {
  const knhk_task_t *t = &net->tasks[i];
  knhk_hot_t *h = KNHK_HOT_TABLES(net);
  h->pre[i] = t->pre;
  h->out_on[i] = t->post;
  h->out_flip[i] = 0;
  h->lo[i] = 0;
  h->span[i] = ~0ull;
  h->task_bit[i] = KNHK_BIT(i);
  h->meta[i] = (knhk_hot_meta_t){0};
  if (side_state || t->cancel_conditions || t->cancel_tasks) return;
  /* an MI task: its start creates instances, its completion comes from them */
  if (t->mi.slot) return;
  /* instances running on past a KEEP threshold are work the short paths' end test does not
   * see: a task that marks the output takes the general path (explicit termination) */
  if (mi_keep && (t->post & net->output)) return;
  if (t->join == KNHK_JOIN_OR && t->split == KNHK_SPLIT_AND &&
      (h->orj_general & KNHK_BIT(i)) &&
      (!(t->post & net->output) || t->post == net->output)) {
    /* not hot: kinds (the hot union) leaves it out; ENDS: it marks the output */
    h->meta[i].kind = (uint8_t)(KNHK_HOT_ORJOIN | ((t->post & net->output) ? KNHK_HOT_ENDS : 0));
    return;
  }
  if (t->join != KNHK_JOIN_AND && t->join != KNHK_JOIN_XOR) return;
  /* An AND split onto the output condition and another condition ends the case by explicit
   * termination (the other token is cleared, WCP-43): the general path's work. The short
   * paths assume that a produced token on the output is the only one. */
  if ((t->post & net->output) && t->split == KNHK_SPLIT_AND && t->post != net->output) return;
  uint8_t kind = KNHK_HOT;
  if (t->split == KNHK_SPLIT_OR) return;
  if (t->split == KNHK_SPLIT_XOR) {
    if (t->nbranches != 2) return;
    uint32_t def = t->default_branch & 7u, k = 1u - def;
    const knhk_branch_t *br = &net->branches[t->first_branch];
    const knhk_guard_t *g = &br[k].guard;
    const knhk_term_t *term = &g->term[0];
    uint64_t lo, span;
    if (g->combine != KNHK_COMBINE_AND || g->term[1].op != KNHK_GUARD_TRUE) return;
    if (term->rhs_is_reg || !guard_range(term, &lo, &span)) return;
    kind |= KNHK_HOT_XOR_SPLIT;
    h->out_on[i] = br[k].conditions;
    h->out_flip[i] = h->out_on[i] ^ br[def].conditions;
    h->lo[i] = lo;
    h->span[i] = span;
    h->meta[i].lhs = (uint8_t)(term->lhs & (KNHK_REGISTERS - 1));
    /* the first hot XOR split names the register; a second one reading another clears it */
    if (!(h->kinds & KNHK_HOT_XOR_SPLIT)) h->xor_split_reg = h->meta[i].lhs;
    else if (h->xor_split_reg != h->meta[i].lhs) h->xor_split_reg = KNHK_REGISTERS;
    h->meta[i].race = (uint8_t)(1u << k);
  }
  if (t->join == KNHK_JOIN_XOR && knhk_popcount64(t->pre) > 1) kind |= KNHK_HOT_XOR_JOIN;
  if ((t->post & net->output) != 0) kind |= KNHK_HOT_ENDS;
  h->meta[i].kind = kind;
  h->kinds |= kind;
}

/* ---------------------------------------------------------------------------------------- */
/* Non-local OR-joins (WCP-37/38): the YAWL engine's rule, decided at seal.                  */
/*                                                                                          */
/* The rule (Wynn et al., "Achieving a general, formal and decidable approach to the OR-join */
/* in workflow using reset nets", 2005; YAWL's YNet.orJoinEnabled / E2WFOJNet): OR-join j is */
/* enabled in a state when an input of j is marked and no state reachable from it without   */
/* firing j marks the inputs marked now and a further one. YAWL asks that question of a     */
/* restricted net, as is done here: the conditions and tasks from which an input of j can be */
/* reached without passing j (C_j, T_j; a flow out of them to anything else is dropped),     */
/* busy tasks as tokens of their own (a busy task may complete), cancellation sets as reset  */
/* arcs, data abstracted (an XOR split may take any flow, an OR split any non-empty set of   */
/* flows), every other OR-join and discriminator taking one token from any one marked input  */
/* (YAWL's "optimistic" treatment), and the kernel's 1-safety: a completion that would mark  */
/* a marked condition does not happen. The answer depends only on the state's projection     */
/* onto C_j and T_j: the key.                                                                */
/*                                                                                          */
/* Seal explores (1) the case's reachable states from the input by the kernel's rules, a    */
/* general OR-join allowed to start whenever an input is marked (more states than a run can  */
/* reach, never fewer); then, per general OR-join, (2) the restricted net's states reachable */
/* from the keys of (1), and (3) for each of them, as a 64-bit set U over the subsets of j's */
/* inputs (at most 6), which sets of inputs some state reachable from it marks (a fixpoint   */
/* U(s) = {inputs(s)} + U(successors)). A key whose inputs are partly marked is enabling    */
/* when U holds no strict superset of its marked inputs; those keys go into the net's table. */
/* At run time a quiet mask (C_j less the inputs no task of T_j consumes) decides first the  */
/* states where nothing upstream can move (enabled, no lookup). A state outside (1) (only a  */
/* restored case can be in one) that is not quiet finds no key: the OR-join waits.           */
/*                                                                                          */
/* Scratch: on the stack, bounded (about 130 KiB, only for nets with a general OR-join);     */
/* time: bounded by KNHK_ORJOIN_MAX_WORK generated states over all the explorations.         */
/* ---------------------------------------------------------------------------------------- */

#define ORJ_STATES KNHK_ORJOIN_MAX_STATES
#define ORJ_INDEX_BITS 12u /* 4096 slots: load at most one half */
#define ORJ_TABLE (2u * KNHK_ORJOIN_MAX_KEYS)

typedef struct orj_set {
  uint64_t *w;       /* states, `stride` words each */
  uint16_t *index;   /* hash slot -> state number + 1; 0: empty */
  uint32_t stride, n;
  uint64_t *work;    /* states generated so far, over every exploration (KNHK_ORJOIN_MAX_WORK) */
} orj_set_t;

/* orj_add's refusals: the set is full, or the explorations generated too many states. */
#define ORJ_FULL 1
#define ORJ_WORK 2

static uint32_t orj_hash(const uint64_t *w, uint32_t stride) {
  uint64_t h = 0x9E3779B97F4A7C15ull;
  for (uint32_t i = 0; i < stride; i++) h = (h ^ w[i]) * 0xFF51AFD7ED558CCDull;
  return (uint32_t)(h >> (64u - ORJ_INDEX_BITS));
}

/* The state's number, or ORJ_STATES when absent; *slot gets its slot or the free one. */
static uint32_t orj_find(const orj_set_t *s, const uint64_t *w, uint32_t *slot) {
  uint32_t h = orj_hash(w, s->stride), mask = (1u << ORJ_INDEX_BITS) - 1u;
  for (;; h = (h + 1u) & mask) {
    uint32_t e = s->index[h];
    if (e == 0) break;
    if (memcmp(&s->w[(size_t)(e - 1u) * s->stride], w, s->stride * sizeof(uint64_t)) == 0) {
      if (slot) *slot = h;
      return e - 1u;
    }
  }
  if (slot) *slot = h;
  return ORJ_STATES;
}

/* Adds a state (generated: counted as work); returns 0, ORJ_WORK past KNHK_ORJOIN_MAX_WORK
 * generated states, or ORJ_FULL when the set is full (a new state past ORJ_STATES). */
static int orj_add(orj_set_t *s, const uint64_t *w) {
  uint32_t slot;
  if (++*s->work > KNHK_ORJOIN_MAX_WORK) return ORJ_WORK;
  if (orj_find(s, w, &slot) != ORJ_STATES) return 0;
  if (s->n >= ORJ_STATES) return ORJ_FULL;
  memcpy(&s->w[(size_t)s->n * s->stride], w, s->stride * sizeof(uint64_t));
  s->n++;
  s->index[slot] = (uint16_t)s->n;
  return 0;
}

/* The outputs of choice `k` of task t's split (AND: 1 choice; XOR: one per flow; OR: one per
 * non-empty set of flows), and the OR-join inputs it activates (structured OR-joins). */
/* An OR split of n flows has 2^n - 1 choices: past 2^24 (KNHK_ORJOIN_MAX_WORK) the work cap
 * would refuse anyway, so the count saturates there (wide OR splits, up to 64 flows). */
static uint64_t orj_nchoices(const knhk_task_t *T) {
  if (T->split == KNHK_SPLIT_AND) return 1;
  if (T->split == KNHK_SPLIT_XOR) return T->nbranches;
  if (T->nbranches > 24) return (uint64_t)KNHK_ORJOIN_MAX_WORK + 1u;
  return (1ull << T->nbranches) - 1u;
}

/* expect: per flow of the net's flow array (knhk_net_t.branches), the OR-join inputs it activates. */
static uint64_t orj_choice(const knhk_net_t *net, const uint64_t *expect, uint32_t t, uint64_t k,
                           uint64_t *exp) {
  const knhk_task_t *T = &net->tasks[t];
  uint64_t set = T->split == KNHK_SPLIT_AND ? ~0ull
                 : T->split == KNHK_SPLIT_XOR ? 1ull << (k & 63u)
                                              : k + 1u;
  uint64_t out = 0, e = 0;
  const knhk_branch_t *br = &net->branches[T->first_branch];
  for (uint32_t b = 0; b < T->nbranches; b++) {
    if (!((set >> b) & 1u)) continue;
    out |= br[b].conditions;
    if (expect) e |= expect[T->first_branch + b];
  }
  if (exp) *exp = e;
  return out;
}

/* (1) A case state: marking, busy, or_expect, absorb. Start by the kernel's rules (joins[]
 * effective), a general OR-join whenever an input is marked; returns 0 when not enabled. */
enum { ORJ_M, ORJ_B, ORJ_OE, ORJ_AB };

static int orj_start(const knhk_net_t *net, const uint8_t *joins, uint64_t general, uint32_t t,
                     uint64_t *x) {
  const knhk_task_t *T = &net->tasks[t];
  uint64_t have = x[ORJ_M] & T->pre;
  switch (joins[t]) {
    case KNHK_JOIN_AND:
      if (have != T->pre) return 0;
      x[ORJ_M] &= ~T->pre;
      break;
    case KNHK_JOIN_XOR:
      if (!have) return 0;
      x[ORJ_M] &= ~(have & (0 - have));
      break;
    case KNHK_JOIN_OR:
      if (general & KNHK_BIT(t)) {
        if (!have) return 0;
        x[ORJ_M] &= ~have;
      } else {
        uint64_t need = T->pre & x[ORJ_OE];
        if (!need || (have & need) != need) return 0;
        x[ORJ_M] &= ~need;
        x[ORJ_OE] &= ~need;
      }
      break;
    default: /* discriminator */
      if (!have) return 0;
      x[ORJ_M] &= ~have;
      x[ORJ_AB] |= T->pre & ~have;
      break;
  }
  x[ORJ_B] |= KNHK_BIT(t);
  return 1;
}

/* Adds x unless the case ended there (output marked, or nothing marked and nothing busy). */
static int orj_add_live(const knhk_net_t *net, orj_set_t *s, const uint64_t *x) {
  if ((x[ORJ_M] & net->output) || (x[ORJ_M] | x[ORJ_B]) == 0) return 0;
  return orj_add(s, x);
}

static int orj_explore_case(const knhk_net_t *net, const uint8_t *joins, uint64_t general,
                            const uint64_t *expect, orj_set_t *s) {
  uint64_t init[4] = {net->input, 0, 0, 0};
  int e = orj_add(s, init);
  if (e) return e;
  for (uint32_t q = 0; q < s->n; q++) {
    uint64_t st[4];
    memcpy(st, &s->w[(size_t)q * 4u], sizeof st);
    for (uint32_t t = 0; t < net->ntasks; t++) {
      const knhk_task_t *T = &net->tasks[t];
      uint64_t bit = KNHK_BIT(t), x[4];
      memcpy(x, st, sizeof x);
      if (!(st[ORJ_B] & bit)) {
        if (!orj_start(net, joins, general, t, x)) continue;
        if ((e = orj_add_live(net, s, x)) != 0) return e;
        x[ORJ_B] &= ~bit; /* cancel_task of an enabled task */
        if ((e = orj_add_live(net, s, x)) != 0) return e;
        continue;
      }
      x[ORJ_B] &= ~bit; /* cancel_task of a busy task */
      if ((e = orj_add_live(net, s, x)) != 0) return e;
      for (uint64_t k = 0, nk = orj_nchoices(T); k < nk; k++) {
        uint64_t exp, out = orj_choice(net, expect, t, k, &exp);
        memcpy(x, st, sizeof x);
        x[ORJ_M] &= ~T->cancel_conditions;
        x[ORJ_OE] &= ~T->cancel_conditions;
        x[ORJ_AB] &= ~T->cancel_conditions;
        x[ORJ_B] &= ~(T->cancel_tasks | bit);
        uint64_t absorbed = out & x[ORJ_AB];
        out ^= absorbed;
        x[ORJ_AB] ^= absorbed;
        if (x[ORJ_M] & out) continue; /* SAFETY_VIOLATION: no such step */
        x[ORJ_M] |= out;
        x[ORJ_OE] |= exp;
        if ((e = orj_add_live(net, s, x)) != 0) return e;
      }
    }
  }
  return 0;
}

/* (2) The restricted net of OR-join j: states (marking within conds, busy within tasks). */
typedef struct orj_restricted {
  const knhk_net_t *net;
  const uint8_t *joins;
  uint64_t conds, tasks;
  orj_set_t *set;
  uint64_t *u;    /* (3): per state, the input sets reachable from it */
  int add;        /* visit: 1 adds the successor, 0 ORs its U into *acc */
  uint64_t *acc;
  int full;       /* ORJ_FULL or ORJ_WORK once a cap is passed */
} orj_restricted_t;

static void orj_visit(orj_restricted_t *r, uint64_t m, uint64_t b) {
  uint64_t w[2] = {m, b};
  if (r->full) return;
  if (r->add) {
    r->full = orj_add(r->set, w);
    return;
  }
  if (++*r->set->work > KNHK_ORJOIN_MAX_WORK) {
    r->full = ORJ_WORK;
    return;
  }
  uint32_t i = orj_find(r->set, w, NULL);
  if (i < r->set->n) *r->acc |= r->u[i];
}

static void orj_successors(orj_restricted_t *r, uint64_t m, uint64_t b) {
  const knhk_net_t *net = r->net;
  for (uint64_t rest = r->tasks; rest; rest &= rest - 1) {
    uint32_t t = knhk_ctz64(rest);
    const knhk_task_t *T = &net->tasks[t];
    uint64_t bit = KNHK_BIT(t), have = m & T->pre;
    if (!(b & bit)) {
      if (r->joins[t] == KNHK_JOIN_AND) {
        if (have == T->pre) orj_visit(r, m & ~T->pre, b | bit);
      } else {
        for (uint64_t h = have; h; h &= h - 1) orj_visit(r, m & ~(h & (0 - h)), b | bit);
      }
      continue;
    }
    uint64_t cm = m & ~T->cancel_conditions, cb = b & ~(T->cancel_tasks | bit);
    for (uint64_t k = 0, nk = orj_nchoices(T); k < nk && !r->full; k++) {
      uint64_t out = orj_choice(net, NULL, t, k, NULL) & r->conds;
      if (cm & out) continue;
      orj_visit(r, cm | out, cb);
    }
  }
}

/* The marked inputs of j among pre (bit order) as a number below 2^|pre|. */
static uint32_t orj_inputs(uint64_t m, uint64_t pre) {
  uint32_t x = 0, i = 0;
  for (uint64_t rest = pre; rest; rest &= rest - 1, i++)
    if (m & rest & (0 - rest)) x |= 1u << i;
  return x;
}

/* Decides every general OR-join of `general` and writes the tables into net->hot. Returns
 * KNHK_OK or KNHK_OR_JOIN_CAP (via the report; the tables are then cleared). */
__attribute__((noinline)) static knhk_status orjoin_seal(knhk_net_t *net, knhk_seal_report_t *r,
                                                         const uint8_t *joins, uint64_t general,
                                                         const uint64_t *expect) {
  knhk_hot_t *h = KNHK_HOT_TABLES(net);
  uint64_t case_words[ORJ_STATES * 4u], sub_words[ORJ_STATES * 2u], u[ORJ_STATES];
  uint16_t case_index[1u << ORJ_INDEX_BITS], sub_index[1u << ORJ_INDEX_BITS];
  uint64_t roots[ORJ_STATES / 64u];
  uint64_t work = 0;
  orj_set_t cs = {case_words, case_index, 4, 0, &work}, ss = {sub_words, sub_index, 2, 0, &work};
  uint32_t first = knhk_ctz64(general), cap = KNHK_NO_OTHER, at = first;

  h->orj_general = 0;
  h->orj_probes = 0;
  h->orj_keys = 0;
  memset(h->orj_conds, 0, sizeof h->orj_conds);
  memset(h->orj_tasks, 0, sizeof h->orj_tasks);
  memset(h->orj_quiet, 0, sizeof h->orj_quiet);
  memset(h->orj_table, 0, sizeof h->orj_table);
  for (uint64_t g = general; g; g &= g - 1) {
    uint32_t j = knhk_ctz64(g);
    if (knhk_popcount64(net->tasks[j].pre) > KNHK_ORJOIN_MAX_INPUTS) {
      cap = KNHK_ORJOIN_CAP_INPUTS;
      at = j;
      goto fail;
    }
  }
  memset(case_index, 0, sizeof case_index);
  int e = orj_explore_case(net, joins, general, expect, &cs);
  if (e) {
    cap = e == ORJ_WORK ? KNHK_ORJOIN_CAP_WORK : KNHK_ORJOIN_CAP_STATES;
    goto fail;
  }
  for (uint64_t g = general; g; g &= g - 1) {
    uint32_t j = knhk_ctz64(g);
    const knhk_task_t *J = &net->tasks[j];
    uint64_t pre = J->pre, conds = pre, tasks = 0, prev_conds, prev_tasks;
    do { /* C_j, T_j: backward from j's inputs, not through j */
      prev_conds = conds;
      prev_tasks = tasks;
      for (uint32_t t = 0; t < net->ntasks; t++)
        if (t != j && (net->tasks[t].post & conds)) {
          tasks |= KNHK_BIT(t);
          conds |= net->tasks[t].pre;
        }
    } while (conds != prev_conds || tasks != prev_tasks);
    h->orj_conds[j] = conds;
    h->orj_tasks[j] = tasks;
    uint64_t consumed = 0;
    for (uint64_t rest = tasks; rest; rest &= rest - 1) consumed |= net->tasks[knhk_ctz64(rest)].pre;
    h->orj_quiet[j] = conds & ~(pre & ~consumed);

    /* (2) the restricted states reachable from the keys of every partly marked state */
    orj_restricted_t rs = {net, joins, conds, tasks, &ss, u, 1, NULL, 0};
    ss.n = 0;
    memset(sub_index, 0, sizeof sub_index);
    memset(roots, 0, sizeof roots);
    for (uint32_t q = 0; q < cs.n; q++) {
      const uint64_t *st = &cs.w[(size_t)q * 4u];
      uint64_t have = st[ORJ_M] & pre;
      if (!have || have == pre) continue;
      uint64_t w[2] = {st[ORJ_M] & conds, st[ORJ_B] & tasks};
      if ((rs.full = orj_add(&ss, w)) != 0) goto states;
      uint32_t at_q = orj_find(&ss, w, NULL);
      roots[at_q / 64u] |= KNHK_BIT(at_q % 64u);
    }
    for (uint32_t q = 0; q < ss.n && !rs.full; q++)
      orj_successors(&rs, ss.w[(size_t)q * 2u], ss.w[(size_t)q * 2u + 1u]);
    if (rs.full) goto states;

    /* (3) U by fixpoint, sweeping in reverse discovery order */
    for (uint32_t q = 0; q < ss.n; q++) u[q] = KNHK_BIT(orj_inputs(ss.w[(size_t)q * 2u], pre));
    rs.add = 0;
    for (uint32_t sweep = 0, changed = 1; changed && sweep <= ss.n && !rs.full; sweep++) {
      changed = 0;
      for (uint32_t q = ss.n; q-- > 0 && !rs.full;) {
        uint64_t acc = u[q];
        rs.acc = &acc;
        orj_successors(&rs, ss.w[(size_t)q * 2u], ss.w[(size_t)q * 2u + 1u]);
        if (acc != u[q]) {
          u[q] = acc;
          changed = 1;
        }
      }
    }
    if (rs.full) goto states; /* ORJ_WORK: U is not complete */

    /* the enabling keys into the table */
    uint32_t n_in = knhk_popcount64(pre);
    for (uint32_t q = 0; q < ss.n; q++) {
      if (!((roots[q / 64u] >> (q % 64u)) & 1u)) continue;
      uint32_t x = orj_inputs(ss.w[(size_t)q * 2u], pre);
      uint64_t sup = 0; /* the strict supersets of x among the subsets of the inputs */
      for (uint32_t y = 0; y < (1u << n_in); y++)
        if ((y & x) == x && y != x) sup |= KNHK_BIT(y);
      if (u[q] & sup) continue; /* a further input can still be marked: wait */
      if (h->orj_keys >= KNHK_ORJOIN_MAX_KEYS) {
        cap = KNHK_ORJOIN_CAP_KEYS;
        at = j;
        goto fail;
      }
      uint64_t km = ss.w[(size_t)q * 2u], kb = ss.w[(size_t)q * 2u + 1u] | KNHK_BIT(j);
      uint32_t slot = knhk_orj_slot(km, kb), probe = 0;
      while (h->orj_table[(slot + probe) & (ORJ_TABLE - 1u)].busy != 0) probe++;
      h->orj_table[(slot + probe) & (ORJ_TABLE - 1u)].marking = km;
      h->orj_table[(slot + probe) & (ORJ_TABLE - 1u)].busy = kb;
      if (probe > h->orj_probes) h->orj_probes = probe;
      h->orj_keys++;
    }
    continue;
  states:
    cap = rs.full == ORJ_WORK ? KNHK_ORJOIN_CAP_WORK : KNHK_ORJOIN_CAP_STATES;
    at = j;
    goto fail;
  }
  h->orj_general = general;
  return KNHK_OK;
fail:
  h->orj_probes = 0;
  h->orj_keys = 0;
  memset(h->orj_conds, 0, sizeof h->orj_conds);
  memset(h->orj_tasks, 0, sizeof h->orj_tasks);
  memset(h->orj_quiet, 0, sizeof h->orj_quiet);
  memset(h->orj_table, 0, sizeof h->orj_table);
  return report(r, KNHK_OR_JOIN_CAP, KNHK_ELEMENT_TASK, at, cap);
}

knhk_status knhk_net_seal(knhk_net_t *net, knhk_seal_report_t *r) {
  if (!net) return report(r, KNHK_BAD_ARGUMENT, KNHK_ELEMENT_NONE, 0, KNHK_NO_OTHER);
  if (net->sealed) return report(r, KNHK_SEALED, KNHK_ELEMENT_NONE, 0, KNHK_NO_OTHER);
  if (!net->input) return report(r, KNHK_NO_INPUT, KNHK_ELEMENT_NONE, 0, KNHK_NO_OTHER);
  if (!net->output) return report(r, KNHK_NO_OUTPUT, KNHK_ELEMENT_NONE, 0, KNHK_NO_OTHER);
  uint32_t in = knhk_ctz64(net->input), out = knhk_ctz64(net->output);
  if (in == out) return report(r, KNHK_INPUT_IS_OUTPUT, KNHK_ELEMENT_CONDITION, in, KNHK_NO_OTHER);

  for (uint32_t i = 0; i < net->ntasks; i++) {
    const knhk_task_t *t = &net->tasks[i];
    if (t->post & net->input) return report(r, KNHK_INPUT_HAS_INFLOW, KNHK_ELEMENT_TASK, i, in);
    if (t->pre & net->output)
      return report(r, KNHK_OUTPUT_HAS_OUTFLOW, KNHK_ELEMENT_TASK, i, out);
    if (!t->pre) return report(r, KNHK_TASK_NO_INPUT, KNHK_ELEMENT_TASK, i, KNHK_NO_OTHER);
    if (!t->nbranches) return report(r, KNHK_TASK_NO_OUTPUT, KNHK_ELEMENT_TASK, i, KNHK_NO_OTHER);
    if (t->split != KNHK_SPLIT_AND) {
      if (t->ndefaults == 0) return report(r, KNHK_NO_DEFAULT, KNHK_ELEMENT_TASK, i, KNHK_NO_OTHER);
      if (t->ndefaults > 1) return report(r, KNHK_TWO_DEFAULTS, KNHK_ELEMENT_TASK, i, KNHK_NO_OTHER);
    }
  }

  uint64_t all_conds = net->nconditions == 64 ? ~0ull : KNHK_BIT(net->nconditions) - 1;
  uint64_t all_tasks = net->ntasks == 64 ? ~0ull : KNHK_BIT(net->ntasks) - 1;
  if (net->ntasks == 0) all_tasks = 0;

  uint64_t fwd_tasks, bwd_tasks;
  uint64_t fwd = forward_conditions(net, net->input, &fwd_tasks);
  uint64_t bwd = backward_conditions(net, net->output, &bwd_tasks);
  if (fwd_tasks != all_tasks)
    return report(r, KNHK_UNREACHABLE, KNHK_ELEMENT_TASK, knhk_ctz64(all_tasks & ~fwd_tasks),
                  KNHK_NO_OTHER);
  if (fwd != all_conds)
    return report(r, KNHK_UNREACHABLE, KNHK_ELEMENT_CONDITION, knhk_ctz64(all_conds & ~fwd),
                  KNHK_NO_OTHER);
  if (bwd_tasks != all_tasks)
    return report(r, KNHK_CANNOT_COMPLETE, KNHK_ELEMENT_TASK, knhk_ctz64(all_tasks & ~bwd_tasks),
                  KNHK_NO_OTHER);
  if (bwd != all_conds)
    return report(r, KNHK_CANNOT_COMPLETE, KNHK_ELEMENT_CONDITION, knhk_ctz64(all_conds & ~bwd),
                  KNHK_NO_OTHER);

  /* Multi-merge: two branches of one AND/OR split whose regions share a condition can put two
   * tokens on it. The output condition is exempt: its first token ends the case (WCP-43). */
  for (uint32_t s = 0; s < net->ntasks; s++) {
    const knhk_task_t *t = &net->tasks[s];
    if (t->split == KNHK_SPLIT_XOR || t->nbranches < 2) continue;
    uint64_t regions[KNHK_MAX_BRANCHES];
    const knhk_branch_t *br = &net->branches[t->first_branch];
    for (uint32_t k = 0; k < t->nbranches; k++)
      regions[k] = branch_region(net, br[k].conditions, 0, NULL);
    for (uint32_t a = 0; a < t->nbranches; a++)
      for (uint32_t b = a + 1; b < t->nbranches; b++)
        if (regions[a] & regions[b] & ~net->output)
          return report(r, KNHK_MULTI_MERGE, KNHK_ELEMENT_CONDITION,
                        knhk_ctz64(regions[a] & regions[b] & ~net->output), s);
  }

  /* OR-joins: find a structured OR-split whose branches each reach exactly one input of the
   * join and together cover all of them. Record, per split branch, the input it activates.
   * An OR-join without one is general (non-local): decided by the tables orjoin_seal derives. */
  uint64_t expect[KNHK_MAX_FLOWS]; /* per flow of the flow array */
  uint64_t general = 0;
  memset(expect, 0, sizeof expect);
  for (uint32_t j = 0; j < net->ntasks; j++) {
    const knhk_task_t *join = &net->tasks[j];
    if (effective_join(join) != KNHK_JOIN_OR) continue;
    int matched = 0;
    for (uint32_t s = 0; s < net->ntasks && !matched; s++) {
      const knhk_task_t *split = &net->tasks[s];
      if (split->split != KNHK_SPLIT_OR || s == j) continue;
      uint64_t covered = 0, per[KNHK_MAX_BRANCHES];
      int ok = 1;
      for (uint32_t k = 0; k < split->nbranches && ok; k++) {
        uint64_t region =
            branch_region(net, net->branches[split->first_branch + k].conditions, KNHK_BIT(j), NULL);
        per[k] = region & join->pre;
        if (knhk_popcount64(per[k]) != 1 || (covered & per[k])) ok = 0;
        covered |= per[k];
      }
      if (ok && covered == join->pre) {
        for (uint32_t k = 0; k < split->nbranches; k++) expect[split->first_branch + k] |= per[k];
        matched = 1;
      }
    }
    if (!matched) general |= KNHK_BIT(j);
  }
  /* An input condition shared by two structured OR-joins would make or_expect ambiguous. */
  uint64_t or_inputs = 0;
  for (uint32_t j = 0; j < net->ntasks; j++) {
    const knhk_task_t *join = &net->tasks[j];
    if (effective_join(join) != KNHK_JOIN_OR || (general & KNHK_BIT(j))) continue;
    if (or_inputs & join->pre)
      return report(r, KNHK_NONLOCAL_OR_JOIN, KNHK_ELEMENT_TASK, j, KNHK_NO_OTHER);
    or_inputs |= join->pre;
  }

  /* Side state exists in this net only when some task is a structured OR-join or a
   * discriminator (a general OR-join keeps none). */
  int side_state = 0, mi_keep = 0;
  uint8_t joins[KNHK_MAX_TASKS];
  for (uint32_t i = 0; i < net->ntasks; i++) {
    mi_keep |= net->tasks[i].mi.slot != 0 && (net->tasks[i].mi.flags & KNHK_MI_KEEP);
    uint8_t join = effective_join(&net->tasks[i]);
    joins[i] = join;
    side_state |= (join == KNHK_JOIN_OR && !(general & KNHK_BIT(i))) ||
                  join == KNHK_JOIN_DISCRIMINATOR;
  }

  /* General OR-joins: the only part of the net written before the commit is their tables in
   * net->hot (cleared again when the analysis refuses). */
  if (general) {
    knhk_status s = orjoin_seal(net, r, joins, general, expect);
    if (s != KNHK_OK) return s;
  }

  /* Commit: the net does not change above this line, so a failed seal leaves it as it was. */
  net->hot.tables.kinds = 0;
  net->hot.tables.xor_split_reg = KNHK_REGISTERS;
  for (uint32_t i = 0; i < net->ntasks; i++) {
    knhk_task_t *t = &net->tasks[i];
    t->join = effective_join(t);
    t->or_expect_all = 0;
    for (uint32_t k = 0; k < t->nbranches; k++) {
      net->branches[t->first_branch + k].or_expect = expect[t->first_branch + k];
      t->or_expect_all |= expect[t->first_branch + k];
    }
    t->race = 0;
    if (t->split == KNHK_SPLIT_XOR) /* the first 8 flows (the field's width) */
      t->race = (uint8_t)(0xFFu >> (8u - (t->nbranches < 8u ? t->nbranches : 8u)) &
                          ~(t->default_branch < 8u ? 1u << t->default_branch : 0u));
    set_hot(net, i, side_state, mi_keep);
  }
  net->sealed = 1;
  return report(r, KNHK_OK, KNHK_ELEMENT_NONE, 0, KNHK_NO_OTHER);
}
