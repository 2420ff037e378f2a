"""The settings of the explain job and the demo, without torch or an LLM client: the CLI reads their
defaults at start-up, so `circuits --help` and every command's `--help` start at once
(docs/architecture.md, "Start-up").
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sparse_model.errors import UserError
from sparse_model.prune_settings import PruneSettings, SearchSettings


@dataclass(frozen=True)
class ExplainSettings:
    """Everything that changes a job's results (besides the LLM and the prompts)."""

    explanations_per_node: int | None = None  # best-of-k; None: by simulator (pipeline.best_of_k_sizes)
    simulator: str = "auto"
    window: int | None = None  # tokens per activation record; default 64, or the model's context if shorter
    explain_windows: int = 5  # top windows shown to the explainer
    score_windows: int = 5  # top windows and as many random ones, on the score split
    calibrate_windows: int | None = None  # top and as many random windows, calibrate split; None: by simulator
    seed: int = 0
    shuffled: bool = True
    llm_only: bool = False  # True: best-of-k pools only the LLM's candidates, no other writer's
    scorers: tuple[str, ...] = ()  # scorers beside simulation for the selected explanation: detection, fuzzing

    def check(self) -> None:
        if self.explanations_per_node is not None and self.explanations_per_node < 1:
            raise UserError(f"--explanations-per-node must be at least 1, got {self.explanations_per_node}")
        for name in ("explain_windows", "score_windows", "calibrate_windows"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        from ..excerpt_scorers import SCORERS

        unknown = [x for x in self.scorers if x not in SCORERS]
        if unknown:
            raise UserError(f"unknown scorer {unknown[0]!r}; choose from simulation, {', '.join(SCORERS)}")
        if self.window is not None and self.window < 2:
            raise UserError(f"--window must be at least 2 tokens, got {self.window}")

    def resolved(self, simulator_method: str) -> "ExplainSettings":
        """These settings with best-of-k's unset sizes filled in for the simulator in use."""
        from ..pipeline import best_of_k_sizes

        k, calibrate = best_of_k_sizes(simulator_method, self.explanations_per_node, self.calibrate_windows)
        return replace(self, explanations_per_node=k, calibrate_windows=calibrate)


DEMO_TARGET_LOSS = 0.15  # the paper's
FALLBACK_TARGET_LOSS = 0.5
# The demo's pruning search: the grid's first 3 points, no time limit (so every machine prunes the
# same way and a rerun reproduces the circuit), sets of at most 256 nodes shrunk greedily. About 50 s
# for single_double_quote and 70 s for indent_after_header on 2 cores; a full search (`circuits
# prune`, 150 s per task) also shrinks sets of up to 512 nodes (README, "Pruning").
DEMO_SEARCH = SearchSettings(PruneSettings(target_loss=DEMO_TARGET_LOSS), budget_s=None, points=3, shrink_max=256)


@dataclass(frozen=True)
class DemoSettings:
    out: str = "runs/demo"
    report: str = "report.html"
    preset: str = "demo"
    corpus: str | None = None  # default: this Python's standard library
    llm: str | None = None  # embedded LLM: a short name or a GGUF file (default: the local backend's)
    device: str = "auto"  # where torch runs (`sparse_model.device`); the embedded LLM is llama.cpp's own
    tasks: tuple[str, ...] | None = None  # None: every task the model learned (random-label control excluded)
    target_loss: float = DEMO_TARGET_LOSS
    fallback_target_loss: float | None = FALLBACK_TARGET_LOSS  # when no task reaches target_loss; None: stop there
    # The demo model's circuits have hundreds of nodes and the embedded LLM needs seconds per node,
    # so the demo explains each circuit's highest-ranked nodes (None: all of them). Fewer nodes with
    # more candidates and windows (README, "What the demo's explanations are worth"): 6 LLM
    # candidates plus the other writers', all picked on 10 + 10 calibrate windows and scored on
    # 10 + 10, from 10 explain windows (which also make the token lists and token lookup surer).
    max_nodes_per_task: int | None = 15
    # Each learned task's pruning tries the search grid's first 3 points (README, "Pruning").
    prune: SearchSettings = field(default_factory=lambda: DEMO_SEARCH)
    explain: ExplainSettings = field(default_factory=lambda: ExplainSettings(
        explanations_per_node=6, window=32, explain_windows=10, score_windows=10, calibrate_windows=10))
