"""Run folders and checkpoints: safetensors for tensors, JSON for everything else, no pickles.

A run folder holds:

    run.json                 what the run is: name, preset, model and training configs, corpus manifest
    tokenizer.json           the BPE trained on the run's corpus
    tokens_{train,val}.npy   the encoded corpus (a cache; rebuilt when missing)
    checkpoint.json          the current checkpoint: step, losses, file names and their sha256
    model-{step}.safetensors, optimizer-{step}.safetensors

`checkpoint.json` is replaced atomically after its files are fully written, so a process killed at
any moment leaves the previous checkpoint intact; files of older checkpoints are removed only after.
Loading never executes code, and a file whose sha256 does not match is refused as corrupt.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, TypeAdapter
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import UserError
from .formats import checked
from .model import ModelConfig, SparseGPT

from .run_files import (CHECKPOINT_FILE, RUN_FILE, TOKENIZER_FILE, TRAIN_TOKENS_FILE,  # noqa: F401 (spelled there)
                        VAL_TOKENS_FILE)

_RETRAIN = "delete the run folder and train again"


class RunFile(BaseModel):
    """run.json: what a run is. Written once by `train`; its model and train sections are the
    configs' `to_dict()` (checked field by field when the run is loaded)."""

    model_config = ConfigDict(extra="allow")

    name: str
    preset: str
    model: dict[str, Any]
    train: dict[str, Any]
    corpus: dict[str, Any]


class CheckpointFile(BaseModel):
    """checkpoint.json: the current checkpoint of a run."""

    model_config = ConfigDict(extra="allow")

    step: int
    model_file: str
    model_sha256: str | None = None
    optimizer_file: str | None = None
    optimizer_sha256: str | None = None
    optimizer_meta: dict[str, Any] | None = None
    train_loss: float | None = None
    val_loss: float | None = None
    tokens_seen: int | None = None


def read_run_file(run_dir: Path) -> dict:
    path = Path(run_dir) / RUN_FILE
    data = read_json(path, "run file")
    checked(RunFile, data, f"run file {path}", _RETRAIN)
    checked(TypeAdapter(ModelConfig), data["model"], f"run file {path}, model", _RETRAIN)
    return data


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{what} {path} is missing; is this a run folder made by `circuits train`?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{what} {path} is corrupt ({e.__class__.__name__}); delete the run folder and train again") from None


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> str:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))  # any device -> CPU
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return sha256_file(path)


def _load_tensors(path: Path, sha256: str | None) -> dict[str, torch.Tensor]:
    if not path.exists():
        raise UserError(f"checkpoint file {path} is missing; the run folder is incomplete, train again")
    if sha256 is not None and sha256_file(path) != sha256:
        raise UserError(f"checkpoint file {path} is corrupt (sha256 mismatch); delete the run folder and train again")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"checkpoint file {path} is corrupt ({e}); delete the run folder and train again") from None


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Flatten an optimizer state dict into named tensors plus a JSON-able remainder."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for pid, st in sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"{pid}.{key}"] = val
            else:
                scalars.setdefault(str(pid), {})[key] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


_KERNEL_KEYS = ("fused", "foreach", "capturable", "differentiable")


def load_optimizer_tensors(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, t in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = t
    for pid, st in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(st)
    # A checkpoint holds what the optimizer computes, not which kernel computed it: keep this one's.
    kernels = [{k: g[k] for k in _KERNEL_KEYS if k in g} for g in opt.param_groups]
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    for group, kernel in zip(opt.param_groups, kernels):
        group.update(kernel)


def save_checkpoint(run_dir: Path, model: SparseGPT, opt: torch.optim.Optimizer | None, state: dict) -> None:
    """Write model (and optimizer) tensors for `state["step"]`, then point checkpoint.json at them."""
    run_dir = Path(run_dir)
    step = int(state["step"])
    model_file = f"model-{step:07d}.safetensors"
    entry = dict(state, model_file=model_file, model_sha256=_save_tensors(model.state_dict(), run_dir / model_file))
    if opt is not None:
        tensors, meta = optimizer_tensors(opt)
        opt_file = f"optimizer-{step:07d}.safetensors"
        entry.update(optimizer_file=opt_file, optimizer_sha256=_save_tensors(tensors, run_dir / opt_file), optimizer_meta=meta)
    write_json_atomic(run_dir / CHECKPOINT_FILE, entry)
    keep = {model_file, entry.get("optimizer_file")}
    for old in list(run_dir.glob("model-*.safetensors")) + list(run_dir.glob("optimizer-*.safetensors")):
        if old.name not in keep:
            old.unlink(missing_ok=True)


def read_checkpoint_state(run_dir: Path) -> dict | None:
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.exists():
        return None
    data = read_json(path, "checkpoint")
    checked(CheckpointFile, data, f"checkpoint {path}", _RETRAIN)
    return data


def load_model(run_dir: Path | str) -> tuple[SparseGPT, dict, dict]:
    """The trained model of a run folder, in eval mode, with its run.json and checkpoint.json."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder {run_dir} does not exist; train one with `circuits train --out {run_dir}`")
    run = read_run_file(run_dir)
    state = read_checkpoint_state(run_dir)
    if state is None:
        raise UserError(f"run {run_dir} has no checkpoint yet; finish it with `circuits train --out {run_dir}`")
    model = SparseGPT(ModelConfig.from_dict(run["model"]))
    tensors = _load_tensors(run_dir / state["model_file"], state.get("model_sha256"))
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise UserError(f"checkpoint {run_dir / state['model_file']} does not match run.json ({first}); train again") from None
    model.eval()
    return model, run, state


def load_training_state(run_dir: Path, model: SparseGPT, opt: torch.optim.Optimizer) -> dict:
    """Restore model and optimizer in place from the run's checkpoint; returns checkpoint.json."""
    state = read_checkpoint_state(run_dir)
    assert state is not None
    model.load_state_dict(_load_tensors(run_dir / state["model_file"], state.get("model_sha256")))
    if "optimizer_file" in state:
        load_optimizer_tensors(opt, _load_tensors(run_dir / state["optimizer_file"], state.get("optimizer_sha256")), state["optimizer_meta"])
    return state
