/* example.c — build a small net through the C API and run cases.
 *
 *   i -> register (AND split) -> [check_credit, check_stock] -> approve (AND join, XOR split)
 *   approve: amount (register 0) <= 1000 -> ship; otherwise (default) -> review -> ship
 *
 * Then a general (non-local) OR-join, WCP-37 (or_join_demo):
 *
 *   i -> order (OR split: register 0 bit 1 -> pack, bit 2 -> invoice; default invoice)
 *   pack (XOR split): register 1 == 1 -> notify; otherwise (default) -> gift_wrap -> notify
 *   invoice -> notify;  notify: OR-join of its three inputs -> o
 *
 * No OR-split matches notify (pack's branch can mark either of two of its inputs), so seal
 * derives the YAWL engine's decision for it: notify fires when an input is marked and no token
 * or busy task upstream can still mark another one.
 *
 * Then a multiple-instance task, WCP-14 and WCP-35 (mi_demo):
 *
 *   i -> review (MI: count from register 0, threshold 2) -> decide -> o
 *
 * Starting review creates regs[0] instances; each starts and completes on its own; the second
 * completion completes review and withdraws the instances still open (YAWL's threshold).
 *
 * Build: cc example.c $(pkg-config --cflags --libs knhk) */
#include <knhk.h>
#include <stdio.h>

static knhk_net_t net;   /* caller-owned; static because it is ~57 KB */
static knhk_net_t ornet; /* the OR-join demo's net */
static knhk_net_t minet; /* the multiple-instance demo's net */

static int check(knhk_status s, const char *what) {
  if (s != KNHK_OK) {
    fprintf(stderr, "example: %s: %s\n", what, knhk_status_name(s));
    return 1;
  }
  return 0;
}

/* The MI demo: three reviewers, two must answer. Returns 0 when it behaves. */
static int mi_demo(void) {
  uint32_t i, c, o, review, decide;
  int bad = 0;
  knhk_net_init(&minet);
  bad |= check(knhk_net_add_condition(&minet, &i), "condition");
  bad |= check(knhk_net_add_condition(&minet, &c), "condition");
  bad |= check(knhk_net_add_condition(&minet, &o), "condition");
  bad |= check(knhk_net_add_task(&minet, KNHK_JOIN_XOR, KNHK_SPLIT_AND, &review), "task");
  bad |= check(knhk_net_add_task(&minet, KNHK_JOIN_XOR, KNHK_SPLIT_AND, &decide), "task");
  knhk_net_set_input(&minet, i);
  knhk_net_set_output(&minet, o);
  knhk_net_add_input_flow(&minet, i, review);
  knhk_net_add_output_flow(&minet, review, c, NULL, 0);
  knhk_net_add_input_flow(&minet, c, decide);
  knhk_net_add_output_flow(&minet, decide, o, NULL, 0);
  /* minimum 1, maximum 10, threshold 2, static creation, count from register 0 */
  knhk_mi_spec_t spec = {1, 10, 2, 0, 0, 0, 0};
  bad |= check(knhk_net_set_mi(&minet, review, &spec), "set_mi");
  if (check(knhk_net_seal(&minet, NULL), "seal") || bad) return 1;
  knhk_case_t k;
  knhk_case_init(&minet, &k);
  k.regs[0] = 3;
  if (check(knhk_start(&minet, &k, review), "start review")) return 1;
  printf("review: %u instances\n", knhk_instance_slot(&minet, &k, review)->created);
  for (uint32_t n = 0; n < 3; n++) bad |= check(knhk_instance_start(&minet, &k, review, n), "start");
  bad |= check(knhk_instance_complete(&minet, &k, review, 2), "complete 2");
  bad |= check(knhk_instance_complete(&minet, &k, review, 0), "complete 0");
  /* the threshold: review completed, instance 1 withdrawn */
  printf("review after two answers: %s, instance 1 %s\n",
         (k.busy >> review) & 1u ? "busy" : "completed",
         knhk_instance_state_of(&minet, &k, review, 1) == KNHK_INSTANCE_NONE ? "withdrawn" : "open");
  if (k.busy || knhk_instance_complete(&minet, &k, review, 1) != KNHK_NOT_STARTED) return 1;
  bad |= check(knhk_fire(&minet, &k, decide), "decide");
  return bad || knhk_case_state(&minet, &k) != KNHK_STATE_COMPLETE;
}

/* The OR-join demo: prints what notify does at each point; returns 0 when it behaves. */
static int or_join_demo(void) {
  uint32_t i, c_pack, c_inv, p_direct, p_wrap, w_out, inv_out, o;
  uint32_t order, pack, wrap, invoice, notify;
  int bad = 0;
  knhk_net_init(&ornet);
  uint32_t *conds[] = {&i, &c_pack, &c_inv, &p_direct, &p_wrap, &w_out, &inv_out, &o};
  for (unsigned k = 0; k < sizeof conds / sizeof conds[0]; k++)
    bad |= check(knhk_net_add_condition(&ornet, conds[k]), "condition");
  bad |= check(knhk_net_add_task(&ornet, KNHK_JOIN_XOR, KNHK_SPLIT_OR, &order), "task");
  bad |= check(knhk_net_add_task(&ornet, KNHK_JOIN_XOR, KNHK_SPLIT_XOR, &pack), "task");
  bad |= check(knhk_net_add_task(&ornet, KNHK_JOIN_XOR, KNHK_SPLIT_AND, &wrap), "task");
  bad |= check(knhk_net_add_task(&ornet, KNHK_JOIN_XOR, KNHK_SPLIT_AND, &invoice), "task");
  bad |= check(knhk_net_add_task(&ornet, KNHK_JOIN_OR, KNHK_SPLIT_AND, &notify), "task");
  knhk_net_set_input(&ornet, i);
  knhk_net_set_output(&ornet, o);
  knhk_guard_t g;
  knhk_net_add_input_flow(&ornet, i, order);
  knhk_guard_const(&g, KNHK_GUARD_BIT, 0, 1);
  knhk_net_add_output_flow(&ornet, order, c_pack, &g, 0);
  knhk_guard_const(&g, KNHK_GUARD_BIT, 0, 2);
  knhk_net_add_output_flow(&ornet, order, c_inv, &g, 1);
  knhk_net_add_input_flow(&ornet, c_pack, pack);
  knhk_guard_const(&g, KNHK_GUARD_EQ, 1, 1);
  knhk_net_add_output_flow(&ornet, pack, p_direct, &g, 0);
  knhk_net_add_output_flow(&ornet, pack, p_wrap, NULL, 1);
  knhk_net_add_input_flow(&ornet, p_wrap, wrap);
  knhk_net_add_output_flow(&ornet, wrap, w_out, NULL, 0);
  knhk_net_add_input_flow(&ornet, c_inv, invoice);
  knhk_net_add_output_flow(&ornet, invoice, inv_out, NULL, 0);
  knhk_net_add_input_flow(&ornet, p_direct, notify);
  knhk_net_add_input_flow(&ornet, w_out, notify);
  knhk_net_add_input_flow(&ornet, inv_out, notify);
  knhk_net_add_output_flow(&ornet, notify, o, NULL, 0);
  knhk_seal_report_t report;
  if (check(knhk_net_seal(&ornet, &report), "seal (OR-join)") || bad) return 1;
  if (!(knhk_net_general_or_joins(&ornet) >> notify & 1)) return 1;

  knhk_case_t c;
  knhk_case_init(&ornet, &c);
  c.regs[0] = 3; /* both branches */
  c.regs[1] = 0; /* gift wrap */
  bad |= check(knhk_fire(&ornet, &c, order), "order");
  bad |= check(knhk_fire(&ornet, &c, invoice), "invoice");
  int waits_pack = knhk_fire(&ornet, &c, notify) == KNHK_NOT_ENABLED;
  bad |= check(knhk_fire(&ornet, &c, pack), "pack");
  int waits_wrap = knhk_fire(&ornet, &c, notify) == KNHK_NOT_ENABLED;
  bad |= check(knhk_start(&ornet, &c, wrap), "start gift_wrap");
  int waits_busy = knhk_fire(&ornet, &c, notify) == KNHK_NOT_ENABLED;
  bad |= check(knhk_complete(&ornet, &c, wrap), "complete gift_wrap");
  bad |= check(knhk_fire(&ornet, &c, notify), "notify");
  int done = knhk_case_state(&ornet, &c) == KNHK_STATE_COMPLETE;
  printf("or-join: notify waits for pack %s, for gift_wrap %s (busy: %s), then fires: %s\n",
         waits_pack ? "yes" : "no", waits_wrap ? "yes" : "no", waits_busy ? "yes" : "no",
         done ? "complete" : "not complete");
  /* invoice only: nothing upstream can reach the other inputs, notify does not wait */
  knhk_case_init(&ornet, &c);
  c.regs[0] = 2;
  bad |= check(knhk_fire(&ornet, &c, order), "order");
  bad |= check(knhk_fire(&ornet, &c, invoice), "invoice");
  bad |= check(knhk_fire(&ornet, &c, notify), "notify (invoice only)");
  done &= knhk_case_state(&ornet, &c) == KNHK_STATE_COMPLETE;
  return bad || !(waits_pack && waits_wrap && waits_busy && done);
}

int main(void) {
  if (knhk_abi_version() != KNHK_ABI_VERSION) {
    fprintf(stderr, "example: header ABI %u, library ABI %u\n", KNHK_ABI_VERSION, knhk_abi_version());
    return 1;
  }
  uint32_t i, c1, c2, c3, c4, c5, c6, o;
  uint32_t reg, credit, stock, approve, review, ship;
  int bad = 0;
  knhk_net_init(&net);
  bad |= check(knhk_net_add_condition(&net, &i), "condition");
  bad |= check(knhk_net_add_condition(&net, &c1), "condition");
  bad |= check(knhk_net_add_condition(&net, &c2), "condition");
  bad |= check(knhk_net_add_condition(&net, &c3), "condition");
  bad |= check(knhk_net_add_condition(&net, &c4), "condition");
  bad |= check(knhk_net_add_condition(&net, &c5), "condition");
  bad |= check(knhk_net_add_condition(&net, &c6), "condition");
  bad |= check(knhk_net_add_condition(&net, &o), "condition");
  bad |= check(knhk_net_add_task(&net, KNHK_JOIN_XOR, KNHK_SPLIT_AND, &reg), "task");
  bad |= check(knhk_net_add_task(&net, KNHK_JOIN_XOR, KNHK_SPLIT_AND, &credit), "task");
  bad |= check(knhk_net_add_task(&net, KNHK_JOIN_XOR, KNHK_SPLIT_AND, &stock), "task");
  bad |= check(knhk_net_add_task(&net, KNHK_JOIN_AND, KNHK_SPLIT_XOR, &approve), "task");
  bad |= check(knhk_net_add_task(&net, KNHK_JOIN_XOR, KNHK_SPLIT_AND, &review), "task");
  bad |= check(knhk_net_add_task(&net, KNHK_JOIN_XOR, KNHK_SPLIT_AND, &ship), "task");
  knhk_net_set_input(&net, i);
  knhk_net_set_output(&net, o);
  knhk_net_add_input_flow(&net, i, reg);
  knhk_net_add_output_flow(&net, reg, c1, NULL, 0);
  knhk_net_add_output_flow(&net, reg, c2, NULL, 0);
  knhk_net_add_input_flow(&net, c1, credit);
  knhk_net_add_output_flow(&net, credit, c3, NULL, 0);
  knhk_net_add_input_flow(&net, c2, stock);
  knhk_net_add_output_flow(&net, stock, c4, NULL, 0);
  knhk_net_add_input_flow(&net, c3, approve);
  knhk_net_add_input_flow(&net, c4, approve);
  knhk_guard_t small;
  knhk_guard_const(&small, KNHK_GUARD_LE, 0, 1000);
  knhk_net_add_output_flow(&net, approve, c6, &small, 0);
  knhk_net_add_output_flow(&net, approve, c5, NULL, 1);
  knhk_net_add_input_flow(&net, c5, review);
  knhk_net_add_output_flow(&net, review, c6, NULL, 0);
  knhk_net_add_input_flow(&net, c6, ship);
  knhk_net_add_output_flow(&net, ship, o, NULL, 0);
  knhk_seal_report_t report;
  if (check(knhk_net_seal(&net, &report), "seal") || bad) return 1;

  const int64_t amounts[2] = {250, 5000};
  const uint32_t expect_steps[2] = {5, 6};
  for (int n = 0; n < 2; n++) {
    knhk_case_t c;
    knhk_case_init(&net, &c);
    c.regs[0] = amounts[n];
    uint32_t steps = 0;
    /* run the case: fire the lowest enabled task until it completes */
    while (knhk_case_state(&net, &c) == KNHK_STATE_RUNNING) {
      uint64_t en = knhk_enabled(&net, &c);
      uint32_t t = (uint32_t)__builtin_ctzll(en);
      if (check(knhk_fire(&net, &c, t), "fire")) return 1;
      steps++;
    }
    printf("case amount=%lld: %s after %u steps\n", (long long)amounts[n],
           knhk_case_state(&net, &c) == KNHK_STATE_COMPLETE ? "complete" : "not complete", steps);
    if (knhk_case_state(&net, &c) != KNHK_STATE_COMPLETE || steps != expect_steps[n]) return 1;
  }
  return or_join_demo() || mi_demo();
}
