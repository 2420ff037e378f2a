"""Small prompt files for jobs against servers, shared by the tests (the `small_prompts` fixture)
and `bench/llm_throughput.py`."""

from __future__ import annotations

import json
from pathlib import Path


def write_small_prompts(folder: Path) -> Path:
    """Prompt files with one tiny worked example each: llama_cpp.server scores echoed prompts at about
    60 ms per token, so the package's full few-shot prompts would make a job take minutes. The explain
    prompt has no worked example (SmolLM2 would copy it, which is refused as a failure)."""
    folder.mkdir(parents=True, exist_ok=True)
    ex = {"tokens": [" x", " =", " return", " x"], "activations": [0, 0, 9, 0]}
    common = {"system": "Predict how strongly a neuron fires on each token, 0 to 9.", "scale": 9, "unknown_fraction": 0.5,
              "examples": [{"explanation": "the keyword return.", "record": ex}]}
    (folder / "simulate.json").write_text(json.dumps(common))
    (folder / "simulate_text.json").write_text(json.dumps(common))
    (folder / "explain.json").write_text(json.dumps({
        "system": "Say what the neuron fires on.", "prefix": "the main thing this neuron does is find", "max_tokens": 20,
        "examples": []}))
    return folder
