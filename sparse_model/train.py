"""Training a weight-sparse GPT on Python code: presets, the data, and one flat loop.

Recipe from Gao et al. (2025); docs/method.md, "Weight-sparse training": Adam (0.9, 0.95, eps 0.1), decoupled weight decay
0.1 on the sparse matrices, the global gradient rescaled to RMS 1, the top-k projection after every
step at the annealed density, and the sharkfin learning rate (`sparsity.py`).

Deviations to fit a 2-core CPU, by measurement (README, "Measured"): models of 2-4 layers and
d_model 64-192 instead of 8 layers of 1024; a few million tokens of the standard library instead of
billions; context 128 instead of 256 (demo). Density 1.0 trains the dense baseline with the same code.

Determinism: batch `step` is drawn from a generator seeded with (seed, step), so a run resumed
from its checkpoint sees exactly the data an uninterrupted run would, and ends with the same weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from .corpus import Corpus, load_corpus
from .device import Precision, resolve_device
from .distributed import Replicas
from .errors import UserError
from .failpoints import failpoint
from .model import ModelConfig, SparseGPT
from .progress import progress_bar
from .sparsity import density_at, lr_at, matrix_densities, sparse_matrices
from .step import FAST_STEP, StepSettings, keep_freed_memory, train_step
from .tokenizer import encode_texts, load_tokenizer, save_tokenizer, train_tokenizer


@dataclass(frozen=True)
class TrainConfig:
    density: float = 0.25  # target fraction of nonzero weights in every sparse matrix; 1.0 = dense
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1.28e-2
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 0.1
    seed: int = 0
    eval_interval: int = 100
    eval_batches: int = 8
    val_fraction: float = 0.05

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# Shapes and budgets chosen by measurement on this 2-core machine (README, "Measured").
PRESETS: dict[str, tuple[ModelConfig, TrainConfig]] = {
    # Seconds: for tests. Learns nothing useful.
    "tiny": (
        ModelConfig(n_layer=1, d_model=32, n_head=2, d_head=16, d_mlp=128, n_ctx=32),
        TrainConfig(steps=30, batch_size=8, eval_interval=10, eval_batches=2),
    ),
    # About 5 minutes: the shape the training-speed benches measure. Learns no task to 0.15.
    "small": (
        ModelConfig(n_layer=2, d_model=128, n_head=8, d_head=16, d_mlp=512, n_ctx=128),
        TrainConfig(steps=700, batch_size=32, eval_interval=175),
    ),
    # About 14 minutes (7.0M tokens): the smallest budget measured that learns a task to the paper's
    # 0.15 (single_double_quote 0.117 with the fast step, 0.048 before; see README); `circuits demo` trains it.
    "demo": (
        ModelConfig(n_layer=3, d_model=128, n_head=8, d_head=16, d_mlp=512, n_ctx=128),
        TrainConfig(steps=1700, batch_size=32, eval_interval=500),
    ),
    # At most 30 minutes: the model for the circuit study.
    "standard": (
        ModelConfig(n_layer=3, d_model=128, n_head=8, d_head=16, d_mlp=512, n_ctx=128),
        TrainConfig(steps=3400, batch_size=32, eval_interval=500),
    ),
}


def preset_configs(preset: str, density: float | None = None, afrac: float | None = None,
                   steps: int | None = None, seed: int | None = None) -> tuple[ModelConfig, TrainConfig]:
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    mcfg, tcfg = PRESETS[preset]
    if density is not None:
        if not (0.0 < density <= 1.0) or math.isnan(density):
            raise UserError(f"density {density} is outside (0, 1]; use e.g. 0.25 for sparse or 1 for a dense baseline")
        tcfg = replace(tcfg, density=float(density))
    if afrac is not None:
        if not (0.0 < afrac <= 1.0) or math.isnan(afrac):
            raise UserError(f"afrac {afrac} is outside (0, 1]; use e.g. 0.25, or 1 to turn activation sparsity off")
        mcfg = replace(mcfg, afrac=float(afrac))
    if steps is not None:
        if steps < 1:
            raise UserError(f"steps must be at least 1, got {steps}")
        tcfg = replace(tcfg, steps=int(steps))
    if seed is not None:
        tcfg = replace(tcfg, seed=int(seed))
    return mcfg, tcfg


# ---------------------------------------------------------------------------------------------
# Data


def prepare_data(run_dir: Path, corpus: Corpus, vocab_size: int, log: Callable[[str], None]) -> tuple[np.ndarray, np.ndarray]:
    """Tokenizer and encoded splits of the run, trained and encoded once, then read from the folder."""
    tok_path = run_dir / ckpt.TOKENIZER_FILE
    if tok_path.exists():
        tok = load_tokenizer(tok_path)
    else:
        log(f"training tokenizer on {len(corpus.train)} files ...")
        tok = train_tokenizer((text for _, text in corpus.train), vocab_size=vocab_size)
        save_tokenizer(tok, tok_path)
    splits = []
    for split, files in (("train", corpus.train), ("val", corpus.val)):
        path = run_dir / (ckpt.TRAIN_TOKENS_FILE if split == "train" else ckpt.VAL_TOKENS_FILE)
        if path.exists():
            try:
                splits.append(np.load(path, mmap_mode="r"))
                continue
            except (ValueError, OSError):
                path.unlink()  # a cache cut short by a kill: rebuild it
        log(f"encoding {split} split ({len(files)} files) ...")
        arr = encode_texts(tok, [text for _, text in files])
        tmp = path.with_name(path.name + ".tmp.npy")
        np.save(tmp, arr)
        tmp.replace(path)
        splits.append(np.load(path, mmap_mode="r"))
    return splits[0], splits[1]


def get_batch(tokens: np.ndarray, batch_size: int, n_ctx: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    n = len(tokens) - n_ctx - 1
    if n <= 0:
        raise UserError(f"corpus split has only {len(tokens)} tokens, fewer than one context of {n_ctx + 1}; use a larger corpus")
    starts = rng.integers(0, n, size=batch_size)
    window = torch.from_numpy(np.asarray(tokens[starts[:, None] + np.arange(n_ctx + 1)], dtype=np.int64))
    return window[:, :-1], window[:, 1:]


@torch.no_grad()
def evaluate(model: SparseGPT, tokens: np.ndarray, tcfg: TrainConfig) -> float:
    """Mean loss on a fixed set of validation batches (the same batches at every evaluation)."""
    rng = np.random.default_rng([tcfg.seed, 1_000_003])
    model.eval()
    device = next(model.parameters()).device
    losses = [float(model.loss(*(t.to(device) for t in get_batch(tokens, tcfg.batch_size, model.cfg.n_ctx, rng))))
              for _ in range(tcfg.eval_batches)]
    model.train()
    return float(np.mean(losses))


# ---------------------------------------------------------------------------------------------
# The loop


def make_optimizer(model: SparseGPT, tcfg: TrainConfig, settings: StepSettings = FAST_STEP) -> torch.optim.AdamW:
    sparse = {id(p) for p, _ in sparse_matrices(model).values()}
    decay = [p for p in model.parameters() if id(p) in sparse]
    rest = [p for p in model.parameters() if id(p) not in sparse]  # bigram, biases, norms: no decay
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": tcfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=tcfg.lr, betas=(tcfg.beta1, tcfg.beta2), eps=tcfg.eps, fused=True if settings.fused_adam else None,
    )


def _check_run_dir(run_dir: Path, run: dict) -> None:
    """Refuse an out folder that holds a different run; an identical one is resumed. (`train` has
    already refused an --out that is a file.)"""
    if not run_dir.exists():
        return
    run_file = run_dir / ckpt.RUN_FILE
    if not run_file.exists():
        if any(run_dir.iterdir()):
            raise UserError(f"--out {run_dir} is a non-empty folder that is not a run; choose another --out")
        return
    old = ckpt.read_json(run_file, "run file")
    for key in ("model", "train"):
        if old.get(key) != run[key]:
            diff = sorted(k for k in set(old.get(key, {})) | set(run[key]) if old.get(key, {}).get(k) != run[key].get(k))
            shown = ", ".join(f"{k} {old.get(key, {}).get(k)} vs {run[key].get(k)}" for k in diff)
            raise UserError(f"--out {run_dir} holds a run with a different config ({shown}); choose another --out or delete the folder")
    if old.get("corpus", {}).get("sha256") != run["corpus"]["sha256"]:
        raise UserError(f"--out {run_dir} holds a run trained on a different corpus ({old.get('corpus', {}).get('root')}); choose another --out")


def train(
    out: Path | str,
    preset: str = "demo",
    *,
    density: float | None = None,
    afrac: float | None = None,
    steps: int | None = None,
    seed: int | None = None,
    corpus_dir: Path | str | None = None,
    checkpoint_every: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] = lambda s: tqdm.write(s),
    step_settings: StepSettings = FAST_STEP,
    device: str | None = "auto",
) -> dict | None:
    """Train (or resume, or just return) the run in folder `out`; returns its summary (`run_summary`).

    Started by torchrun, every process calls this; rank 0 writes and returns the summary, the
    others return None (`distributed.py`)."""
    mcfg, tcfg = preset_configs(preset, density, afrac, steps, seed)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder; choose another --out")
    precision = Precision.for_device(resolve_device(device))
    corpus = load_corpus(corpus_dir, val_fraction=tcfg.val_fraction)
    run = {"name": out.resolve().name, "preset": preset, "model": mcfg.to_dict(), "train": tcfg.to_dict(), "corpus": corpus.manifest}
    _check_run_dir(out, run)
    replicas = Replicas.from_env(precision.device)
    try:
        replicas.local_batch_size(tcfg.batch_size)
        if replicas.is_main:
            out.mkdir(parents=True, exist_ok=True)
            if not (out / ckpt.RUN_FILE).exists():
                ckpt.write_json_atomic(out / ckpt.RUN_FILE, run)
            train_tokens, val_tokens = prepare_data(out, corpus, mcfg.vocab_size, log)
            replicas.barrier()  # now the others may read what was prepared
        else:
            replicas.barrier()
            train_tokens, val_tokens = prepare_data(out, corpus, mcfg.vocab_size, log)
        every = checkpoint_every or max(1, tcfg.steps // 20)
        _loop(out, run, mcfg, tcfg, train_tokens, val_tokens, every, step_settings, precision, replicas,
              progress and replicas.is_main, log if replicas.is_main else (lambda s: None))
        replicas.barrier()  # rank 0's last checkpoint is written
    finally:
        replicas.close()
    return run_summary(out) if replicas.is_main else None


def _loop(out: Path, run: dict, mcfg: ModelConfig, tcfg: TrainConfig, train_tokens: np.ndarray, val_tokens: np.ndarray,
          every: int, step_settings: StepSettings, precision: Precision, replicas: Replicas, progress: bool,
          log: Callable[[str], None]) -> None:
    if step_settings.keep_freed_memory:
        keep_freed_memory()
    device = precision.device
    torch.manual_seed(tcfg.seed)
    model = SparseGPT(mcfg).to(device)
    model.train()
    opt = make_optimizer(model, tcfg, step_settings)
    state = ckpt.read_checkpoint_state(out)
    if state is not None:
        state = ckpt.load_training_state(out, model, opt)
        if state["step"] < tcfg.steps:
            log(f"resuming {out} from step {state['step']} of {tcfg.steps}")
    else:
        state = {"step": 0, "tokens_seen": 0, "train_loss": None, "val_loss": None, "history": [], "seconds": 0.0}
    runtime = dict(precision.describe(), processes=replicas.world_size)
    if state.get("runtime") not in (None, runtime):
        log(f"continuing on {runtime} (earlier steps ran on {state['runtime']})")
    state["runtime"] = runtime

    params = list(model.parameters())
    loss_fn, no_sync = replicas.wrap(model, model.loss)
    tokens_per_step = tcfg.batch_size * mcfg.n_ctx
    bar = progress_bar(enabled=progress, total=tcfg.steps, initial=state["step"], desc=f"train {run['name']}",
               unit="step", dynamic_ncols=True, leave=True)
    ema = state["train_loss"]
    t_last = time.perf_counter()
    try:
        while state["step"] < tcfg.steps:
            step = state["step"]
            x, y = get_batch(train_tokens, tcfg.batch_size, mcfg.n_ctx, np.random.default_rng([tcfg.seed, step]))
            x, y = replicas.shard(x, y)
            loss = train_step(model, opt, params, x.to(device), y.to(device), lr_at(step, tcfg.steps, tcfg.lr, tcfg.density),
                              density_at(step, tcfg.steps, tcfg.density), step_settings, loss_fn, no_sync, precision.autocast)
            loss = replicas.mean(loss)
            replicas.check_identical(model, step + 1)

            now = time.perf_counter()
            state["seconds"] += now - t_last
            t_last = now
            state["step"] = step + 1
            state["tokens_seen"] += tokens_per_step
            ema = loss if ema is None else 0.95 * ema + 0.05 * loss
            state["train_loss"] = ema
            if replicas.is_main and (state["step"] % tcfg.eval_interval == 0 or state["step"] == tcfg.steps):
                state["val_loss"] = evaluate(model, val_tokens, tcfg)
                state["history"].append({"step": state["step"], "train_loss": ema, "val_loss": state["val_loss"]})
                log(f"step {state['step']}: train loss {ema:.3f}, val loss {state['val_loss']:.3f}")
            if replicas.is_main and (state["step"] % every == 0 or state["step"] == tcfg.steps):
                ckpt.save_checkpoint(out, model, opt, state)
                t_last = time.perf_counter()  # checkpoint writes are not training time
            failpoint("train.step")
            bar.update(1)
            bar.set_postfix(loss=f"{ema:.3f}", tok_s=f"{state['tokens_seen'] / max(state['seconds'], 1e-9):.0f}",
                            density=f"{density_at(step, tcfg.steps, tcfg.density):.3f}")
    except KeyboardInterrupt:
        if replicas.is_main:
            ckpt.save_checkpoint(out, model, opt, state)
        bar.close()
        raise UserError(f"interrupted at step {state['step']} of {tcfg.steps}; checkpoint saved, run the same command again to resume") from None
    bar.close()


def run_summary(run_dir: Path | str) -> dict:
    """The run as a `models` row: configs, corpus manifest, sizes, densities, losses, checkpoint."""
    run_dir = Path(run_dir)
    model, run, state = ckpt.load_model(run_dir)
    n_nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    return {
        "name": run["name"],
        "config": {"preset": run["preset"], "model": run["model"], "train": run["train"]},
        "corpus_manifest": run["corpus"],
        "n_params": model.n_params(),
        "n_nonzero": n_nonzero,
        "density": matrix_densities(model),
        "train_loss": state.get("train_loss"),
        "val_loss": state.get("val_loss"),
        "tokens_seen": state.get("tokens_seen"),
        "steps": state.get("step"),
        "checkpoint_path": str((run_dir / state["model_file"]).resolve()),
        "run_dir": str(run_dir.resolve()),
    }
