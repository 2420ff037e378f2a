"""A run: one trained model's folder and everything in it, as one object.

    run = Run("runs/demo")
    run.name, run.config          # from run.json (no tensors loaded)
    run.model, run.tokenizer      # loaded on first use (the model on Run(..., device=...))
    run.train_tokens(), run.val_tokens(), run.means

Every file name of a run folder is spelled in `checkpoint` (RUN_FILE, TOKENIZER_FILE, ...) and read
here; nothing else opens a run folder's files by name.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from . import run_files
from .device import device_name
from .errors import UserError

if TYPE_CHECKING:  # the heavy parts are imported where they are used: a Run that is only named costs nothing
    import numpy as np
    import torch

    from .model import SparseGPT
    from .tasks import Task


def is_run_folder(path: Path | str) -> bool:
    return (Path(path) / run_files.RUN_FILE).exists()


class Run:
    """A run folder (made by `circuits train`); every part is read once, when first used."""

    def __init__(self, run_dir: Path | str | None, name: str | None = None, device: str | None = "auto"):
        # None: a model the store knows without a run folder (only its name is usable).
        self.run_dir = Path(run_dir) if run_dir else None
        self._device_name = device_name(device)  # a misspelt device fails here, before any work
        if name is not None:
            self.__dict__["name"] = name  # known from the store: run.json is not read for it

    def folder(self) -> Path:
        """The run folder; a UserError if there is none or it is gone."""
        if self.run_dir is None:
            raise UserError(f"model {self.__dict__.get('name')!r} has no run folder on record; pass its run folder")
        if not self.run_dir.is_dir():
            raise UserError(f"run folder {self.run_dir} does not exist; train one with "
                            f"`circuits train --out {self.run_dir}`")
        return self.run_dir

    @cached_property
    def device(self) -> torch.device:
        """The torch device (`device.resolve_device`): one line if it is not there."""
        from .device import resolve_device

        return resolve_device(self._device_name)

    @cached_property
    def config(self) -> dict:
        """run.json: name, preset, model and train configs, corpus manifest."""
        from . import checkpoint as ckpt

        return ckpt.read_run_file(self.folder())

    @cached_property
    def name(self) -> str:
        return self.config["name"]

    @cached_property
    def _loaded(self) -> tuple[SparseGPT, dict]:
        from . import checkpoint as ckpt

        model, _run, state = ckpt.load_model(self.folder())
        return model.to(self.device), state

    @property
    def model(self) -> SparseGPT:
        return self._loaded[0]

    @property
    def checkpoint(self) -> dict:
        """checkpoint.json of the current checkpoint: step, losses, file names."""
        return self._loaded[1]

    @cached_property
    def tokenizer(self):
        from .tokenizer import load_tokenizer

        path = self.folder() / run_files.TOKENIZER_FILE
        if not path.exists():
            raise UserError(f"{self.run_dir} has no {run_files.TOKENIZER_FILE}; pass a trained run folder "
                            f"(circuits train ... --out DIR)")
        return load_tokenizer(path)

    def val_tokens(self) -> np.ndarray:
        """The held-out token split: activation records and the ground-truth suite read it."""
        import numpy as np

        path = self.folder() / run_files.VAL_TOKENS_FILE
        if not path.exists():
            raise UserError(f"{self.run_dir} has no {run_files.VAL_TOKENS_FILE}; pass a trained run folder "
                            f"(circuits train ... --out DIR)")
        return np.load(path, mmap_mode="r")

    def train_tokens(self) -> np.ndarray:
        """The training token split; rebuilt from the corpus if its cache was deleted."""
        import numpy as np

        from .corpus import load_corpus
        from .train import prepare_data

        path = self.folder() / run_files.TRAIN_TOKENS_FILE
        if path.exists():
            return np.load(path, mmap_mode="r")
        corpus = load_corpus(self.config["corpus"]["root"], val_fraction=self.config["train"]["val_fraction"])
        if corpus.manifest["sha256"] != self.config["corpus"]["sha256"]:
            raise UserError(f"the corpus of run {self.name} ({self.config['corpus']['root']}) has changed since "
                            f"training; restore it or retrain")
        return prepare_data(self.folder(), corpus, self.model.cfg.vocab_size, log=lambda s: None)[0]

    @cached_property
    def means(self):
        """Each node location's mean activation (the value a pruned node is frozen at)."""
        from .prune import load_or_compute_means

        means = load_or_compute_means(self.folder(), self.model, self.train_tokens)
        return {loc: m.to(self.device) for loc, m in means.items()}

    def tasks(self, names: Sequence[str] | None = None) -> list[Task]:
        from .tasks import load_tasks

        return load_tasks(self.tokenizer, names)
