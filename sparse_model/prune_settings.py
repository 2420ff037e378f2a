"""The pruner's settings, without torch: the CLI reads their defaults at start-up, and a command
that only lists or queries circuits never imports torch (docs/architecture.md, "Start-up").

`PruneSettings`: one run of the pruner (`prune.prune`). `SearchSettings`: a search over
SEARCH_GRID's points (`prune_search.search`; docs/method.md, "Pruning search").
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field

from .errors import UserError

LN2 = math.log(2)
SHRINK_MAX = 512  # greedy shrinking tries one removal per kept node: only for sets up to this size


def _digest(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def check_target_loss(target: float) -> None:
    if not (0.0 < target < LN2):
        raise UserError(f"target loss {target} is outside (0, ln 2 = {LN2:.3f}); a circuit must beat chance, e.g. 0.15")


@dataclass(frozen=True)
class PruneSettings:
    target_loss: float = 0.15
    k_coef: float = 1e-4
    steps: int = 200
    lr: float = 3e-3
    weight_decay: float = 1e-3
    beta2: float = 0.95
    grad_clip: float = 1.0
    batch_pairs: int = 32
    init_mean: float = 0.1
    init_std: float = 0.01
    seed: int = 0
    selection_margin: float = 0.1  # bisect to target x (1 - margin) on the selection pairs
    max_growth: float = 1.0  # grow by at most this fraction of the selected size to meet held-out

    def __post_init__(self) -> None:
        check_target_loss(self.target_loss)
        if self.steps < 1 or self.batch_pairs < 1 or self.k_coef < 0:
            raise UserError("pruning steps and batch size must be at least 1 and k_coef non-negative")
        if not 0 <= self.selection_margin < 1 or self.max_growth < 0:
            raise UserError("the selection margin must be in [0, 1) and the growth bound non-negative")

    def to_dict(self) -> dict:
        return asdict(self)

    def digest(self) -> str:
        return _digest(self.to_dict())


# The points, in the order they are tried: the single-run defaults first (so a search is never worse
# than `circuits prune --no-search`), then a faster learning rate, another initialisation, a smaller
# penalty, a longer run with a larger one. Chosen on the demo model's single_double_quote task
# (docs/method.md, "Pruning search", has the table).
SEARCH_GRID: tuple[dict, ...] = (
    {},
    {"lr": 1e-2},
    {"lr": 1e-2, "init_mean": 0.5},
    {"lr": 1e-2, "seed": 2},
    {"lr": 1e-2, "k_coef": 3e-5},
    {"steps": 600, "lr": 1e-2, "k_coef": 3e-4},
    {"steps": 600},
    {"lr": 3e-2},
)
GRID_VERSION = 1  # part of a search's settings digest: a new grid never replaces an older search's circuit


@dataclass(frozen=True)
class SearchSettings:
    """A search: the base settings every point overrides (target loss, seed, ...), how many of
    SEARCH_GRID's points it may try, and the seconds it may take (None: no time limit, so the same
    points run on every machine and the result is reproducible, as the demo needs)."""

    base: PruneSettings = field(default_factory=PruneSettings)
    budget_s: float | None = 150.0
    points: int = len(SEARCH_GRID)
    shrink_max: int = SHRINK_MAX  # sets larger than this are not shrunk (a try per node: about 0.2 s each on indent)

    def __post_init__(self) -> None:
        if self.budget_s is not None and not self.budget_s > 0:
            raise UserError(f"the search budget must be a positive number of seconds, got {self.budget_s}")
        if not 1 <= self.points <= len(SEARCH_GRID):
            raise UserError(f"a search tries 1 to {len(SEARCH_GRID)} points, not {self.points}")

    def to_dict(self) -> dict:
        return {**self.base.to_dict(),
                "search": {"budget_s": self.budget_s, "points": self.points, "shrink_max": self.shrink_max,
                           "grid": GRID_VERSION}}

    def digest(self) -> str:
        return _digest(self.to_dict())
