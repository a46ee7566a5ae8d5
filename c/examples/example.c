/* example.c — build a small net through the C API and run cases.
 *
 *   i -> register (AND split) -> [check_credit, check_stock] -> approve (AND join, XOR split)
 *   approve: amount (register 0) <= 1000 -> ship; otherwise (default) -> review -> ship
 *
 * Build: cc example.c $(pkg-config --cflags --libs knhk) */
#include <knhk.h>
#include <stdio.h>

static knhk_net_t net; /* caller-owned; static because it is ~36 KB */

static int check(knhk_status s, const char *what) {
  if (s != KNHK_OK) {
    fprintf(stderr, "example: %s: %s\n", what, knhk_status_name(s));
    return 1;
  }
  return 0;
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
  return 0;
}
