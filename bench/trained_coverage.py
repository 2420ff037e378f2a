"""How near did the trained simulator's training data come to each held-out rule? For every
held-out rule of the ground-truth suite, the generated rule (`simulators.rulegen`, as the training
script keeps them) whose activations correlate most with it on the same training text.

    python bench/trained_coverage.py --run runs/demo [--tokens 300000]

The training script drops every generated rule at 0.5 or more with a held-out rule that existed when
it ran (recorded in the weights; the shipped weights predate round 5), so those numbers are below
0.5; how far below says how much the held-out rule is new to the simulator (README, "The trained
simulator"). Rules written after the weights were built can come out at any value.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from explainer.code_labels import label_stream  # noqa: E402
from explainer.ground_truth import HELD_OUT, HELD_OUT_ROUND_4, HELD_OUT_ROUND_5, RULES  # noqa: E402
from explainer.simulators import rulegen  # noqa: E402
from explainer.simulators.train_simulator import training_rules, training_text  # noqa: E402
from explainer.simulators.trained import WEIGHTS, load_weights  # noqa: E402
from sparse_model.run import Run  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--tokens", type=int, default=300_000, help="as the training script's --tokens")
    ap.add_argument("--weights", default=str(WEIGHTS), help="the weights whose training data is measured")
    args = ap.parse_args()
    table, ids = training_text(Run(args.run), args.tokens)
    labels = label_stream(table, ids)
    held = {n: RULES[n].fn(labels) for n in HELD_OUT}
    # the training data was kept away from the held-out rules that existed when the weights were built
    _, meta = load_weights(args.weights)
    kept_from = meta.get("held_out_filter") or [n for n in HELD_OUT if n not in HELD_OUT_ROUND_5]
    rules, _ = training_rules([table[int(t)] for t in ids], {n: held[n] for n in kept_from})
    corr = rulegen.correlations(rules, held)
    print(f"{'held-out rule':18} {'family':13} {'round':6} {'nearest generated rule':34} {'r':>6}")
    by_round: dict[str, list[float]] = {}
    for j, name in enumerate(held):
        i = int(np.argmax(np.abs(corr[:, j])))
        family = RULES[name].family
        rnd = "5" if name in HELD_OUT_ROUND_5 else "4" if name in HELD_OUT_ROUND_4 else \
            "3" if family == "meaning" else "-"
        by_round.setdefault(f"{family}, round {rnd}", []).append(float(corr[i, j]))
        print(f"{name:18} {family:13} {rnd:6} {rules[i].name:34} {corr[i, j]:+6.2f}")
    print()
    for group, values in by_round.items():
        print(f"{group}: mean nearest r {np.mean(values):.2f}, at 0.37 or more: {sum(v >= 0.37 for v in values)} "
              f"of {len(values)}")


if __name__ == "__main__":
    main()
