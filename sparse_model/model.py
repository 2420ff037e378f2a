"""A GPT-2-style decoder built to be weight-sparse, after Gao et al. (2025);
docs/method.md, "Weight-sparse training".

Read top to bottom: config, activation sparsity, node sites, attention, MLP, block, model.

Differences from GPT-2 that the paper makes on purpose:
- RMSNorm, so zero keeps a privileged meaning in the residual stream;
- small heads (d_head 16, so many heads) and untied embedding / unembedding;
- a dense bigram logit table indexed by the current token, added to the final logits, so the
  sparse weights need not memorise bigram statistics (it is exempt from sparsity and decay);
- AbsTopK activation sparsity at every node location (keep the largest-|x| fraction `afrac`);
- positional embeddings off by default, an optional attention sink.

Node locations. Every place where the circuit method may keep or remove single units has a stable
name, used verbatim by the pruner, the activation capture, the database and the report:

    L{i}.attn.resid_read   residual channels read by attention (after RMSNorm and AbsTopK)
    L{i}.attn.q / .k / .v  query / key / value channels, all heads side by side (head h owns
                           channels h*d_head ... h*d_head + d_head - 1)
    L{i}.attn.resid_write  residual channels written by attention
    L{i}.mlp.resid_read    residual channels read by the MLP
    L{i}.mlp.neuron        MLP neurons (after GELU and AbsTopK)
    L{i}.mlp.resid_write   residual channels written by the MLP
    final.resid_read       residual channels read by the unembedding

A single node is `location[index]`, for example `L1.mlp.neuron[37]`. Later stages act on a
location through `model.hooks` (see `Hooks`) without editing this file.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Callable, Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from .kernels import UnembedCrossEntropy, fused_loss_applies, keep_mask


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 2048
    n_layer: int = 2
    d_model: int = 128
    n_head: int = 8  # attention width is n_head * d_head (need not equal d_model)
    d_head: int = 16
    d_mlp: int = 512  # 4 * d_model in the paper
    n_ctx: int = 128
    afrac: float = 0.25  # AbsTopK: fraction of entries kept at each node location; 1.0 = off
    bigram: bool = True
    learned_positions: bool = False
    attention_sink: bool = False

    @property
    def d_attn(self) -> int:
        return self.n_head * self.d_head

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def node_locations(config: ModelConfig) -> dict[str, int]:
    """Every node location of a model, in forward order, with its number of units."""
    locs: dict[str, int] = {}
    for i in range(config.n_layer):
        locs[f"L{i}.attn.resid_read"] = config.d_model
        locs[f"L{i}.attn.q"] = config.d_attn
        locs[f"L{i}.attn.k"] = config.d_attn
        locs[f"L{i}.attn.v"] = config.d_attn
        locs[f"L{i}.attn.resid_write"] = config.d_model
        locs[f"L{i}.mlp.resid_read"] = config.d_model
        locs[f"L{i}.mlp.neuron"] = config.d_mlp
        locs[f"L{i}.mlp.resid_write"] = config.d_model
    locs["final.resid_read"] = config.d_model
    return locs


def abs_topk(x: torch.Tensor, frac: float) -> torch.Tensor:
    """Keep the ceil(frac * width) largest-magnitude entries of the last dimension, zero the rest."""
    if frac >= 1.0:
        return x
    return x * keep_mask(x, max(1, math.ceil(frac * x.shape[-1])))


class Hooks:
    """Functions run at node locations during the forward pass.

    `hooks.add(location, fn)`: `fn(x)` receives the activations (..., units) and returns a tensor
    to use instead, or None to leave them alone (for recording). Used by mean ablation, node
    masks and activation capture.
    """

    def __init__(self) -> None:
        self._fns: dict[str, list[Callable[[torch.Tensor], torch.Tensor | None]]] = {}

    def add(self, location: str, fn: Callable[[torch.Tensor], torch.Tensor | None]) -> None:
        self._fns.setdefault(location, []).append(fn)

    def clear(self) -> None:
        self._fns.clear()

    def __call__(self, location: str, x: torch.Tensor) -> torch.Tensor:
        for fn in self._fns.get(location, ()):
            y = fn(x)
            if y is not None:
                x = y
        return x


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int, hooks: Hooks):
        super().__init__()
        self.cfg, self.hooks, self.prefix = cfg, hooks, f"L{layer}.attn"
        self.q = nn.Linear(cfg.d_model, cfg.d_attn)
        self.k = nn.Linear(cfg.d_model, cfg.d_attn)
        self.v = nn.Linear(cfg.d_model, cfg.d_attn)
        self.o = nn.Linear(cfg.d_attn, cfg.d_model)
        self.sink = nn.Parameter(torch.zeros(cfg.n_head)) if cfg.attention_sink else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, d_model), already read
        cfg, p = self.cfg, self.prefix
        B, T, _ = x.shape
        q = self.hooks(f"{p}.q", abs_topk(self.q(x), cfg.afrac))
        k = self.hooks(f"{p}.k", abs_topk(self.k(x), cfg.afrac))
        v = self.hooks(f"{p}.v", abs_topk(self.v(x), cfg.afrac))
        q, k, v = (t.view(B, T, cfg.n_head, cfg.d_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, d_head)
        if self.sink is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            # A learned per-head logit for an empty slot whose value is zero: heads may attend to nothing.
            att = (q @ k.transpose(-2, -1)) / math.sqrt(cfg.d_head)  # (B, H, T, T)
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            att = att.masked_fill(~causal, float("-inf"))
            sink = self.sink.view(1, -1, 1, 1).expand(B, -1, T, 1)
            att = torch.cat([att, sink], dim=-1).softmax(dim=-1)[..., :T]
            y = att @ v
        y = y.transpose(1, 2).reshape(B, T, cfg.d_attn)
        return self.hooks(f"{p}.resid_write", abs_topk(self.o(y), cfg.afrac))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int, hooks: Hooks):
        super().__init__()
        self.cfg, self.hooks, self.prefix = cfg, hooks, f"L{layer}.mlp"
        self.fc = nn.Linear(cfg.d_model, cfg.d_mlp)
        self.proj = nn.Linear(cfg.d_mlp, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hooks(f"{self.prefix}.neuron", abs_topk(F.gelu(self.fc(x)), self.cfg.afrac))
        return self.hooks(f"{self.prefix}.resid_write", abs_topk(self.proj(h), self.cfg.afrac))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int, hooks: Hooks):
        super().__init__()
        self.cfg, self.hooks, self.layer = cfg, hooks, layer
        self.ln_attn = RMSNorm(cfg.d_model)
        self.attn = Attention(cfg, layer, hooks)
        self.ln_mlp = RMSNorm(cfg.d_model)
        self.mlp = MLP(cfg, layer, hooks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.cfg.afrac
        x = x + self.attn(self.hooks(f"L{self.layer}.attn.resid_read", abs_topk(self.ln_attn(x), a)))
        x = x + self.mlp(self.hooks(f"L{self.layer}.mlp.resid_read", abs_topk(self.ln_mlp(x), a)))
        return x


class SparseGPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.hooks = Hooks()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.n_ctx, cfg.d_model) if cfg.learned_positions else None
        self.blocks = nn.ModuleList(Block(cfg, i, self.hooks) for i in range(cfg.n_layer))
        self.ln_f = RMSNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=True)
        self.bigram = nn.Parameter(torch.zeros(cfg.vocab_size, cfg.vocab_size)) if cfg.bigram else None
        self._init_weights()

    def _init_weights(self) -> None:
        for name, p in self.named_parameters():
            if name == "bigram":
                continue
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() >= 2:
                std = 0.02
                if name.endswith(("attn.o.weight", "mlp.proj.weight")):
                    std /= math.sqrt(2 * self.cfg.n_layer)  # GPT-2's scaled residual projections
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx: torch.Tensor, last: torch.Tensor | None = None) -> torch.Tensor:
        """idx (B, T) token ids -> logits (B, T, vocab); with `last` (B,) positions, only the logits
        at those positions, (B, vocab), which spares the unembedding for every other position."""
        return self._unembed(*self._read_out(idx, last))

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy of targets (B, T) given idx (B, T)."""
        x, idx = self._read_out(idx, None)
        if fused_loss_applies(x):  # the same loss in one logits buffer (kernels.py)
            return UnembedCrossEntropy.apply(x.reshape(-1, x.shape[-1]), self.lm_head.weight, self.lm_head.bias,
                                             self.bigram, idx.reshape(-1), targets.reshape(-1))
        logits = self._unembed(x, idx)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    def _unembed(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(x)
        if self.bigram is not None:
            logits = logits + F.embedding(idx, self.bigram)  # deterministic backward, unlike indexing
        return logits

    def _read_out(self, idx: torch.Tensor, last: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The residual stream as the unembedding reads it, and the token ids the bigram table reads."""
        B, T = idx.shape
        if T > self.cfg.n_ctx:
            raise ValueError(f"sequence of {T} tokens is longer than the context ({self.cfg.n_ctx})")
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(T, device=idx.device))
        for block in self.blocks:
            x = block(x)
        if last is not None:
            rows = torch.arange(B, device=idx.device)
            x, idx = x[rows, last], idx[rows, last]  # (B, d_model), (B,)
        return self.hooks("final.resid_read", abs_topk(self.ln_f(x), self.cfg.afrac)), idx

    @contextmanager
    def hooked(self, fns: dict[str, Callable[[torch.Tensor], torch.Tensor | None]]) -> Iterator["SparseGPT"]:
        """Run with extra hooks at the given locations; they are removed on exit."""
        unknown = set(fns) - set(node_locations(self.cfg))
        if unknown:
            raise KeyError(f"unknown node locations: {sorted(unknown)}")
        saved = {k: list(v) for k, v in self.hooks._fns.items()}
        try:
            for loc, fn in fns.items():
                self.hooks.add(loc, fn)
            yield self
        finally:
            self.hooks._fns = saved

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
