"""The trained simulator: a small head, trained on generated rule neurons, that reads an explanation
and predicts a node's activation at every token of a window in one pass (docs/method.md, "The
trained simulator").

Frozen features (nothing here is trained but the head):
- per token of a window (computed once per window and cached, so best-of-k pays once per window):
  the mean all-MiniLM-L6-v2 embedding of the token's facts (`embedding.token_facts`, facts
  version 4), beside the mean of the same for the tokens before and after it (`neighbours`);
- per explanation: its sentence embedding and MiniLM's contextual vectors of its word pieces;
- per (explanation, token): the embedding simulator's prediction (facts v4 with literal tokens),
  as log(1e-3 + prediction), so the head starts from what that simulator knows. It is computed
  from the cached fact ids (`Featurizer.facts_score`), each fact by its own text: the embedding
  simulator also takes the best of a paraphrase for two facts (comments, string text), this does
  not, and the shipped weights were trained on it as it is.

The head (HEAD_SIZE wide): the token's features and the explanation are projected, the token
attends over the explanation's word pieces, a ReLU layer of the products and the log facts
prediction gives one logit per token, plus a learned multiple (`skip`) of the log facts prediction
passed straight through; the prediction is its sigmoid. Its weights (0.5 MB of float16) are package
data, built by `python -m explainer.simulators.train_simulator` from `simulators.rulegen`'s rules on
a run's training split; the file records the generator's and the features' versions, which are part
of the simulator's version. A missing, corrupt or mismatched file is a UserError that names the
simulator to use instead (`load_weights`).

    sim = TrainedSimulator()                       # loads the shipped weights
    preds = sim.predict("the condition of a while loop", [tokens_1, tokens_2])
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from sparse_model.errors import UserError

from .base import TRAINED, Simulation, Simulator
from .embedding import DEFAULT_TAU, EMBEDDING_SIZE, LITERAL_WEIGHT, Embedder, _load_model, token_facts
from .literal import literal_hits, literal_weights

FEATURES_VERSION = 2  # 1: MiniLM's contextual vector of the window's text in place of the neighbours
HEAD_SIZE = 128
WEIGHTS = Path(__file__).resolve().parent / "weights" / "trained.npz"
PARAMS = ("tok_w", "tok_b", "exp_w", "exp_b", "key_w", "val_w", "mlp_w", "mlp_b", "out_w", "out_b", "skip")
_LOCK = threading.Lock()


# ---- frozen features ---------------------------------------------------------------------------


def word_pieces(text: str, max_length: int = 64) -> np.ndarray:
    """MiniLM's contextual vectors of a text's word pieces, (pieces, 384), without [CLS] and [SEP]
    (one zero row for a text with no pieces)."""
    import torch

    model = _load_model()
    with _LOCK, torch.inference_mode():
        enc = model.tokenizer([text], truncation=True, max_length=max_length, return_tensors="pt")
        hidden = model[0].auto_model(**enc).last_hidden_state[0, 1:-1].numpy().astype(np.float32)
    return hidden if len(hidden) else np.zeros((1, EMBEDDING_SIZE), np.float32)


class WindowFeatures:
    """The frozen per-token features of one window: the mean embedding of each token's facts, beside
    the mean of its neighbours' (the tokens before and after it), and the fact ids per token."""

    def __init__(self, tokens: Sequence[str], facts: FactTable):
        self.tokens = list(tokens)
        self.rows = [facts.ids(fs) for fs in token_facts(tokens)]  # fact ids per token (repeats kept)
        own = np.stack([facts.matrix[r].mean(0) for r in self.rows]) if tokens else np.zeros((0, EMBEDDING_SIZE))
        self.x = np.concatenate([neighbours(own), own], 1).astype(np.float32)  # (n, 2 * 384)


def neighbours(own: np.ndarray) -> np.ndarray:
    """The mean of the rows before and after each row (the one there is at either end)."""
    if len(own) < 2:
        return np.array(own, copy=True)
    prev = np.concatenate([own[1:2], own[:-1]])
    nxt = np.concatenate([own[1:], own[-2:-1]])
    return (prev + nxt) / 2


class FactTable:
    """Every fact seen so far, embedded once."""

    def __init__(self, embedder: Embedder):
        self.embed, self.index, self.texts = embedder, {}, []
        self.matrix = np.zeros((0, EMBEDDING_SIZE), np.float32)

    def ids(self, facts: Sequence[str]) -> np.ndarray:
        new = [f for f in dict.fromkeys(facts) if f not in self.index]
        if new:
            for f in new:
                self.index[f] = len(self.texts)
                self.texts.append(f)
            self.matrix = np.concatenate([self.matrix, self.embed(new)])
        return np.array([self.index[f] for f in facts], np.int64)


class Featurizer:
    """Frozen features with caches: windows by their tokens, explanations by their text."""

    def __init__(self, embedder: Embedder | None = None):
        self.embed = embedder or Embedder()
        self.facts = FactTable(self.embed)
        self._windows: dict[tuple[str, ...], WindowFeatures] = {}
        self._explanations: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def windows(self, windows: Sequence[Sequence[str]]) -> list[WindowFeatures]:
        keys = [tuple(w) for w in windows]
        todo = [k for k in dict.fromkeys(keys) if k not in self._windows]
        for k in todo:
            self._windows[k] = WindowFeatures(k, self.facts)
        return [self._windows[k] for k in keys]

    def explanation(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """(sentence embedding (384,), word-piece vectors (pieces, 384))."""
        if text not in self._explanations:
            self._explanations[text] = (self.embed([text])[0], word_pieces(text))
        return self._explanations[text]

    def facts_score(self, explanation: str, e: np.ndarray, windows: Sequence[WindowFeatures]) -> list[np.ndarray]:
        """The embedding simulator's prediction (facts v4, literal tokens) per token of each window,
        from the cached fact ids: sum of exp((cos - 1) / tau) over a token's facts, each by its own
        text (without `embedding.paraphrases`), plus LITERAL_WEIGHT for a named token."""
        weight = np.exp((self.facts.matrix @ e - 1.0) / DEFAULT_TAU)
        names = literal_weights(explanation)
        out = []
        for w in windows:
            hits = literal_hits(w.tokens, names)
            out.append(np.array([weight[r].sum() + (LITERAL_WEIGHT * names[t.strip()] if h else 0.0)
                                 for r, t, h in zip(w.rows, w.tokens, hits)], np.float32))
        return out


# ---- the head ----------------------------------------------------------------------------------


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x - x.max(axis, keepdims=True)
    y = np.exp(x)
    return y / y.sum(axis, keepdims=True)


def head_logits(p: dict[str, np.ndarray], x: np.ndarray, score: np.ndarray, e: np.ndarray,
                pieces: np.ndarray) -> np.ndarray:
    """One window: x (n, 768) token features, score (n,) the facts prediction, e (384,) and pieces
    (m, 384) the explanation -> (n,) logits. The numpy twin of `train_simulator.Head`."""
    z = np.tanh(x @ p["tok_w"] + p["tok_b"])  # (n, d)
    q = np.tanh(e @ p["exp_w"] + p["exp_b"])  # (d,)
    att = _softmax((z @ p["key_w"]) @ pieces.T / np.sqrt(HEAD_SIZE))  # (n, m)
    a = np.tanh(att @ pieces @ p["val_w"])  # (n, d)
    s = np.log(1e-3 + score)[:, None]
    h = np.maximum(np.concatenate([z * q, z * a, s], 1) @ p["mlp_w"] + p["mlp_b"], 0)
    return h @ p["out_w"] + p["out_b"] + p["skip"] * s[:, 0]


# ---- weights -----------------------------------------------------------------------------------


def _bad(path: Path, why: str) -> UserError:
    return UserError(f"the trained simulator's weights {path} {why}; use --simulator embedding, or rebuild them with "
                     f"`python -m explainer.simulators.train_simulator --run RUN`")


@lru_cache(maxsize=4)
def load_weights(path: str | os.PathLike = WEIGHTS) -> tuple[dict[str, np.ndarray], dict]:
    """The head's parameters (float32) and its metadata; a missing, corrupt or mismatched file is a
    UserError naming the simulator to use instead."""
    path = Path(path)
    if not path.exists():
        raise _bad(path, "are missing")
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(bytes(f["meta"]).decode())
            params = {k: f[k].astype(np.float32) for k in PARAMS}
    except Exception as exc:  # zip, key or json errors: all mean the file is not what we wrote
        raise _bad(path, f"cannot be read ({type(exc).__name__})") from None
    if meta.get("features") != FEATURES_VERSION or params["tok_w"].shape != (2 * EMBEDDING_SIZE, HEAD_SIZE):
        raise _bad(path, f"were built for features version {meta.get('features')}, this code reads {FEATURES_VERSION}")
    if not all(np.isfinite(v).all() for v in params.values()):
        raise _bad(path, "contain non-finite numbers")
    return params, meta


def save_weights(path: str | os.PathLike, params: dict[str, np.ndarray], meta: dict) -> None:
    meta = {**meta, "features": FEATURES_VERSION}
    np.savez_compressed(path, meta=np.frombuffer(json.dumps(meta, sort_keys=True).encode(), np.uint8),
                        **{k: np.asarray(params[k], np.float16) for k in PARAMS})


# ---- the simulator -----------------------------------------------------------------------------


class TrainedSimulator(Simulator):
    """A `Simulator` without an LLM, plus a synchronous `predict` over many windows."""

    method = TRAINED

    def __init__(self, weights: str | os.PathLike | None = None, featurizer: Featurizer | None = None):
        weights = WEIGHTS if weights is None else weights  # read at call time: tests point it elsewhere
        self.params, self.meta = load_weights(str(weights))
        digest = hashlib.sha256(Path(weights).read_bytes()).hexdigest()[:10]
        self._version = f"trained-g{self.meta.get('generator')}-f{FEATURES_VERSION}-{digest}"
        self.features = featurizer or Featurizer()

    @property
    def version(self) -> str:
        return self._version

    def predict(self, explanation: str, windows: Sequence[Sequence[str]]) -> list[list[float]]:
        """Predicted activation of every token of every window (0..1)."""
        feats = self.features.windows(windows)
        e, pieces = self.features.explanation(explanation)
        scores = self.features.facts_score(explanation, e, feats)
        out = []
        for w, s in zip(feats, scores):
            logits = head_logits(self.params, w.x, s, e, pieces)
            out.append([float(v) for v in 1.0 / (1.0 + np.exp(-logits))])
        return out

    async def simulate(self, explanation: str, tokens: Sequence[str]) -> Simulation:
        return Simulation(self.predict(explanation, [tokens])[0])

    async def simulate_windows(self, explanation: str, windows: Sequence[Sequence[str]]) -> list[Simulation]:
        return [Simulation(p) for p in self.predict(explanation, windows)]
