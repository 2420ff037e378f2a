"""What the benches that drive an explain job against the fake LLM server share: a trained run
(the given one, or a `tiny` model trained into a temporary folder, ~20 s), the tiny prompt files,
the nodes and the small explain settings."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for p in (ROOT / "tests", ROOT):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


def prepare(run: str | None, prefix: str, n_nodes: int):
    """(temporary folder, run folder, prompts folder, node names, ExplainSettings)."""
    from prompt_files import write_small_prompts

    from explainer.jobs.explain import ExplainSettings

    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    if run is None:
        from sparse_model.train import train
        run = tmp / "tiny"
        print("training a tiny model first ...", flush=True)
        train(run, "tiny", progress=False, log=lambda s: None)
    prompts = write_small_prompts(tmp / "prompts")
    nodes = [f"L0.mlp.neuron[{i}]" for i in range(n_nodes)]
    settings = ExplainSettings(explanations_per_node=1, window=16, explain_windows=2, score_windows=2,
                               calibrate_windows=2)
    return tmp, run, prompts, nodes, settings
