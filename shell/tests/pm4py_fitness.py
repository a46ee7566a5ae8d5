"""Replays XES logs exported by knhk on their PNML models with pm4py's token-based replay.

Usage: python3 pm4py_fitness.py MODEL.pnml LOG.xes [MODEL.pnml LOG.xes ...]
Prints one line per pair and exits 0 only when every log replays with fitness 1.0.

pm4py (AGPL) is an outside test tool here, never a dependency of knhk: the Rust test that calls
this script skips the check when pm4py is not installed.
"""
import sys

import pm4py
from pm4py.objects.petri_net.utils import final_marking, initial_marking


def main(argv):
    pairs = list(zip(argv[0::2], argv[1::2]))
    ok = True
    for model, log_path in pairs:
        net, im, fm = pm4py.read_pnml(model)
        # PNML has no final marking, and WoPeD files no initial one: take the source and sink
        # places, as knhk's importer does (a token on each source, on each sink at the end).
        if not im:
            im = initial_marking.discover_initial_marking(net)
        if not fm:
            fm = final_marking.discover_final_marking(net)
        log = pm4py.read_xes(log_path)
        n_all = len(log)
        # The standard lifecycle: replay the completions (a task's occurrence).
        log = log[log["lifecycle:transition"] == "complete"]
        fit = pm4py.fitness_token_based_replay(log, net, im, fm)
        traces = log["case:concept:name"].nunique()
        line = (
            f"{log_path}: {traces} traces, {len(log)} complete events of {n_all}; "
            f"log_fitness={fit['log_fitness']} perc_fit_traces={fit['perc_fit_traces']}"
        )
        print(line)
        if fit["log_fitness"] != 1.0 or fit["perc_fit_traces"] != 100.0:
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
