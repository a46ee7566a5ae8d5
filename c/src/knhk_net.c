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
  if (out_index) *out_index = net->ntasks;
  net->ntasks++;
  return KNHK_OK;
}

static knhk_status check_builder(const knhk_net_t *net) {
  if (!net) return KNHK_BAD_ARGUMENT;
  if (net->sealed) return KNHK_SEALED;
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
  if (t->nbranches >= KNHK_MAX_BRANCHES) return KNHK_CAPACITY_BRANCHES;
  if (guard && !guard_valid(guard)) return KNHK_BAD_GUARD;
  knhk_branch_t *b = &net->branches[task][t->nbranches];
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

/* The short-path tables of task i (knhk_hot_t; fire_hot in knhk_case.c): kind 0 unless the
 * task's firing touches only the marking: AND or XOR join, AND split or two-way XOR split with
 * a range guard, no cancellation set, and no side state anywhere in the net (no OR-join or
 * discriminator could absorb or expect what the task produces). Called on a net that passed
 * every check; t->join is effective. */
static void set_hot(knhk_net_t *net, uint32_t i, int side_state) {
  const knhk_task_t *t = &net->tasks[i];
  knhk_hot_t *h = KNHK_HOT_TABLES(net);
  h->pre[i] = t->pre;
  h->out_on[i] = t->post;
  h->out_flip[i] = 0;
  h->lo[i] = 0;
  h->span[i] = ~0ull;
  h->meta[i] = (knhk_hot_meta_t){0};
  if (side_state || t->cancel_conditions || t->cancel_tasks) return;
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
    const knhk_guard_t *g = &net->branches[i][k].guard;
    const knhk_term_t *term = &g->term[0];
    uint64_t lo, span;
    if (g->combine != KNHK_COMBINE_AND || g->term[1].op != KNHK_GUARD_TRUE) return;
    if (term->rhs_is_reg || !guard_range(term, &lo, &span)) return;
    kind |= KNHK_HOT_XOR_SPLIT;
    h->out_on[i] = net->branches[i][k].conditions;
    h->out_flip[i] = h->out_on[i] ^ net->branches[i][def].conditions;
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
    for (uint32_t k = 0; k < t->nbranches; k++)
      regions[k] = branch_region(net, net->branches[s][k].conditions, 0, NULL);
    for (uint32_t a = 0; a < t->nbranches; a++)
      for (uint32_t b = a + 1; b < t->nbranches; b++)
        if (regions[a] & regions[b] & ~net->output)
          return report(r, KNHK_MULTI_MERGE, KNHK_ELEMENT_CONDITION,
                        knhk_ctz64(regions[a] & regions[b] & ~net->output), s);
  }

  /* OR-joins: find a structured OR-split whose branches each reach exactly one input of the
   * join and together cover all of them. Record, per split branch, the input it activates. */
  uint64_t expect[KNHK_MAX_TASKS][KNHK_MAX_BRANCHES];
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
        uint64_t region = branch_region(net, net->branches[s][k].conditions, KNHK_BIT(j), NULL);
        per[k] = region & join->pre;
        if (knhk_popcount64(per[k]) != 1 || (covered & per[k])) ok = 0;
        covered |= per[k];
      }
      if (ok && covered == join->pre) {
        for (uint32_t k = 0; k < split->nbranches; k++) expect[s][k] |= per[k];
        matched = 1;
      }
    }
    if (!matched) return report(r, KNHK_NONLOCAL_OR_JOIN, KNHK_ELEMENT_TASK, j, KNHK_NO_OTHER);
  }
  /* An input condition shared by two OR-joins would make or_expect ambiguous. */
  uint64_t or_inputs = 0;
  for (uint32_t j = 0; j < net->ntasks; j++) {
    const knhk_task_t *join = &net->tasks[j];
    if (effective_join(join) != KNHK_JOIN_OR) continue;
    if (or_inputs & join->pre)
      return report(r, KNHK_NONLOCAL_OR_JOIN, KNHK_ELEMENT_TASK, j, KNHK_NO_OTHER);
    or_inputs |= join->pre;
  }

  /* Side state exists in this net only when some task is an OR-join or a discriminator. */
  int side_state = 0;
  for (uint32_t i = 0; i < net->ntasks; i++) {
    uint8_t join = effective_join(&net->tasks[i]);
    side_state |= join == KNHK_JOIN_OR || join == KNHK_JOIN_DISCRIMINATOR;
  }

  /* Commit: the net does not change above this line, so a failed seal leaves it as it was. */
  net->hot.tables.kinds = 0;
  net->hot.tables.xor_split_reg = KNHK_REGISTERS;
  for (uint32_t i = 0; i < net->ntasks; i++) {
    knhk_task_t *t = &net->tasks[i];
    t->join = effective_join(t);
    t->or_expect_all = 0;
    for (uint32_t k = 0; k < t->nbranches; k++) {
      net->branches[i][k].or_expect = expect[i][k];
      t->or_expect_all |= expect[i][k];
    }
    t->race = 0;
    if (t->split == KNHK_SPLIT_XOR)
      t->race = (uint8_t)(((1u << t->nbranches) - 1u) & ~(1u << t->default_branch));
    set_hot(net, i, side_state);
  }
  net->sealed = 1;
  return report(r, KNHK_OK, KNHK_ELEMENT_NONE, 0, KNHK_NO_OTHER);
}
