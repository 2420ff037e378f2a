"""Build the trained simulator's weights (`simulators.trained`) from generated rule neurons.

    python -m explainer.simulators.train_simulator --run runs/demo [--tokens 200000] [--epochs 12]

1. The run's training split (never the validation split the ground-truth suite reads), first
   `--tokens` tokens, is cut into windows of 64 tokens.
2. `rulegen.generate` labels it with every generated rule; `rulegen.disjoint` drops those that
   correlate with a held-out rule of the suite on the same text (printed).
3. Each rule gets its top windows (by maximum, ties at random) and as many random ones, as a real
   node's records do; every (explanation, window) pair is one example, its target the rule's
   activations divided by the rule's maximum.
4. The head is trained with binary cross-entropy on those targets (AdamW, dropout), a tenth of the rules
   (by a hash of their names) held out to watch how it does on rules it has not seen.

Everything is seeded; the frozen features make it deterministic up to float rounding.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import sys
import time

import numpy as np

from ..code_labels import label_stream
from ..ground_truth import HELD_OUT, RULES
from ..records import token_table
from . import rulegen
from .trained import HEAD_SIZE, PARAMS, WEIGHTS, Featurizer, save_weights

WINDOW = 64


def _is_dev(name: str) -> bool:
    return int(hashlib.sha256(name.encode()).hexdigest(), 16) % 10 == 0


def pick_windows(acts: np.ndarray, n_top: int, n_random: int, rng: np.random.Generator) -> np.ndarray:
    """acts (windows, WINDOW): the top windows by maximum (ties at random, as the suite breaks them) and
    random others."""
    tie = rng.random(len(acts))
    order = np.lexsort((tie, -acts.max(1)))
    top = order[:n_top][acts[order[:n_top]].max(1) > 0]
    rest = np.setdiff1d(np.arange(len(acts)), top)
    return np.concatenate([top, rng.choice(rest, min(n_random, len(rest)), replace=False)])


def training_text(run, n_tokens: int) -> tuple[list[str], np.ndarray]:
    """The run's token table and the first n_tokens of its training split, in whole windows."""
    return token_table(run.tokenizer), np.asarray(run.train_tokens()[:n_tokens // WINDOW * WINDOW])


def training_rules(tokens: list[str], held_out: dict[str, np.ndarray]):
    """The generated rules of `tokens` kept for training, and the dropped ones (`rulegen.disjoint`
    against the held-out rules' activations on the same tokens)."""
    return rulegen.disjoint(rulegen.generate(tokens), held_out, [RULES[n].explanation for n in held_out])


def build(run_dir: str, n_tokens: int, n_top: int, n_random: int, seed: int, log=print) -> dict:
    from sparse_model.run import Run

    run = Run(run_dir)
    table, ids = training_text(run, n_tokens)
    tokens = [table[int(t)] for t in ids]
    t0 = time.perf_counter()
    labels = label_stream(table, ids)
    rules, dropped = training_rules(tokens, {n: RULES[n].fn(labels) for n in HELD_OUT})
    log(f"{len(rules)} generated rules kept, {len(dropped)} dropped as too near a held-out rule "
        f"({time.perf_counter() - t0:.0f} s):")
    for name, near, r in dropped:
        log(f"  dropped {name} (r = {r:+.2f} with {near})")
    n_win = len(tokens) // WINDOW
    rng = np.random.default_rng(seed)
    chosen, examples = {}, []
    for ri, r in enumerate(rules):
        acts = r.activations(n_win * WINDOW).reshape(n_win, WINDOW)
        for w in pick_windows(acts, n_top, n_random, rng):
            chosen.setdefault(int(w), len(chosen))
            target = acts[w] / max(float(r.value.max()), 1e-6)
            for k in range(len(r.explanations)):
                examples.append((ri, k, int(w), target))
    windows = [tokens[w * WINDOW:(w + 1) * WINDOW] for w in chosen]
    log(f"{len(examples)} examples on {len(windows)} windows; computing frozen features ...")
    return {"rules": rules, "windows": windows, "slot": chosen, "examples": examples, "dropped": dropped,
            "held_out_filter": list(HELD_OUT),
            "run": run.name, "corpus": run.config["corpus"].get("sha256"), "tokens": len(tokens)}


def featurize(data: dict, log=print) -> dict:
    fz = Featurizer()
    t0 = time.perf_counter()
    feats = []
    for i in range(0, len(data["windows"]), 512):
        feats += fz.windows(data["windows"][i:i + 512])
        log(f"  windows {len(feats)}/{len(data['windows'])} ({time.perf_counter() - t0:.0f} s)")
    texts = sorted({e for r in data["rules"] for e in r.explanations})
    exp = {t: fz.explanation(t) for t in texts}
    scores = {}
    for ri, k, w, _ in data["examples"]:
        text = data["rules"][ri].explanations[k]
        key = (text, w)
        if key not in scores:
            scores[key] = fz.facts_score(text, exp[text][0], [feats[data["slot"][w]]])[0]
    log(f"features: {time.perf_counter() - t0:.0f} s")
    return {"x": np.stack([f.x for f in feats]), "exp": exp, "scores": scores}


def _rule_correlations(pred: np.ndarray, y: np.ndarray, keys: list) -> float:
    """Mean over (rule, explanation) of the correlation of predictions and targets pooled over its windows."""
    groups: dict = {}
    for i, k in enumerate(keys):
        groups.setdefault(tuple(k), []).append(i)
    out = []
    for idx in groups.values():
        p, t = pred[idx].ravel(), y[idx].ravel()
        out.append(float(np.corrcoef(p, t)[0, 1]) if p.std() > 0 and t.std() > 0 else 0.0)
    return float(np.mean(out)) if out else float("nan")


def _head(dropout: float):
    import torch
    from torch import nn

    class Head(nn.Module):
        """The torch twin of `trained.head_logits` (same parameter names and shapes)."""

        def __init__(self, d_in: int = 768, d_exp: int = 384, d: int = HEAD_SIZE, d_mlp: int = 128,
                     dropout: float = 0.0):
            super().__init__()
            self.drop = nn.Dropout(dropout)
            g = torch.Generator().manual_seed(0)

            def w(*shape):
                return nn.Parameter(torch.randn(*shape, generator=g) / shape[0] ** 0.5)
            self.tok_w, self.tok_b = w(d_in, d), nn.Parameter(torch.zeros(d))
            self.exp_w, self.exp_b = w(d_exp, d), nn.Parameter(torch.zeros(d))
            self.key_w, self.val_w = w(d, d_exp), w(d_exp, d)
            self.mlp_w, self.mlp_b = w(2 * d + 1, d_mlp), nn.Parameter(torch.zeros(d_mlp))
            self.out_w, self.out_b = nn.Parameter(torch.zeros(d_mlp)), nn.Parameter(torch.tensor(2.0))
            self.skip = nn.Parameter(torch.tensor(1.0))  # the facts score passes straight through

        def forward(self, x, score, e, pieces, mask):  # (b,n,768) (b,n) (b,384) (b,m,384) (b,m)
            z = torch.tanh(x @ self.tok_w + self.tok_b)
            q = torch.tanh(e @ self.exp_w + self.exp_b)[:, None]
            logits = (z @ self.key_w) @ pieces.transpose(1, 2) / HEAD_SIZE ** 0.5
            att = torch.softmax(logits.masked_fill(~mask[:, None], -1e9), -1)
            a = torch.tanh(att @ pieces @ self.val_w)
            s = torch.log(1e-3 + score)[..., None]
            h = torch.relu(torch.cat([self.drop(z * q), self.drop(z * a), s], -1) @ self.mlp_w + self.mlp_b)
            return h @ self.out_w + self.out_b + self.skip * s[..., 0]
    return Head(dropout=dropout)


def train(data: dict, feats: dict, epochs: int, seed: int, lr: float = 2e-3, batch: int = 128, dropout: float = 0.3,
          weight_decay: float = 0.01, log=print):
    import torch

    torch.manual_seed(seed)
    rules, ex = data["rules"], data["examples"]
    texts = sorted(feats["exp"])
    tix = {t: i for i, t in enumerate(texts)}
    m = max(len(feats["exp"][t][1]) for t in texts)
    e_all = torch.tensor(np.stack([feats["exp"][t][0] for t in texts]))
    p_all = torch.zeros(len(texts), m, 384)
    mask_all = torch.zeros(len(texts), m, dtype=torch.bool)
    for i, t in enumerate(texts):
        h = feats["exp"][t][1]
        p_all[i, :len(h)], mask_all[i, :len(h)] = torch.tensor(h), True
    x_all = torch.tensor(feats["x"])
    text_of = [rules[ri].explanations[k] for ri, k, _, _ in ex]
    ti = torch.tensor([tix[t] for t in text_of])
    wi = torch.tensor([data["slot"][w] for _, _, w, _ in ex])
    y = torch.tensor(np.stack([t for *_, t in ex]))
    s = torch.tensor(np.stack([feats["scores"][(t, w)] for t, (_, _, w, _) in zip(text_of, ex)]))
    dev = torch.tensor([_is_dev(rules[ri].name) for ri, *_ in ex])
    train_idx = torch.nonzero(~dev).ravel()
    head = _head(dropout)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * (len(train_idx) // batch + 1))
    lossf = torch.nn.BCEWithLogitsLoss()
    t0 = time.perf_counter()

    def run(idx):
        return head(x_all[wi[idx]], s[idx], e_all[ti[idx]], p_all[ti[idx]], mask_all[ti[idx]])

    for epoch in range(epochs):
        perm = train_idx[torch.randperm(len(train_idx))]
        total = 0.0
        head.train()
        for i in range(0, len(perm), batch):
            idx = perm[i:i + batch]
            loss = lossf(run(idx), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        head.eval()
        with torch.no_grad():
            d = torch.nonzero(dev).ravel()
            pred = torch.sigmoid(run(d))
            dev_loss = float(lossf(torch.logit(pred.clamp(1e-6, 1 - 1e-6)), y[d])) if len(d) else float("nan")
            corr = _rule_correlations(pred.numpy(), y[d].numpy(), [ex[i][:2] for i in d.tolist()])
            base = _rule_correlations(s[d].numpy(), y[d].numpy(), [ex[i][:2] for i in d.tolist()])
        log(f"epoch {epoch + 1}/{epochs}: train loss {total / len(perm):.4f}, dev-rule loss {dev_loss:.4f}, "
            f"dev-rule correlation {corr:.3f} (facts alone {base:.3f}) ({time.perf_counter() - t0:.0f} s)")
    params = {k: getattr(head, k).detach().numpy() for k in PARAMS}
    return params, time.perf_counter() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a trained run folder (its training split is the text)")
    ap.add_argument("--tokens", type=int, default=200_000)
    ap.add_argument("--top", type=int, default=12, help="top windows per rule (and as many random ones)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--out", default=str(WEIGHTS))
    ap.add_argument("--cache", default=None, help="a pickle of the examples and frozen features: read if present, "
                                                  "else written (for retraining the head with other settings)")
    args = ap.parse_args(argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    if args.cache and os.path.exists(args.cache):
        with open(args.cache, "rb") as f:
            data, feats = pickle.load(f)
    else:
        data = build(args.run, args.tokens, args.top, args.top, args.seed, log)
        feats = featurize(data, log)
        if args.cache:
            with open(args.cache, "wb") as f:
                pickle.dump((data, feats), f)
    params, secs = train(data, feats, args.epochs, args.seed, dropout=args.dropout, weight_decay=args.weight_decay,
                         log=log)
    meta = {"generator": rulegen.GENERATOR_VERSION, "run": data["run"], "corpus_sha256": data["corpus"],
            "tokens": data["tokens"], "rules": len(data["rules"]), "examples": len(data["examples"]),
            "held_out_filter": data.get("held_out_filter"),  # the held-out rules the data was kept away from
            "epochs": args.epochs, "seed": args.seed, "dropout": args.dropout, "weight_decay": args.weight_decay, "train_seconds": round(secs),
            "total_seconds": round(time.perf_counter() - t0)}
    save_weights(args.out, params, meta)
    log(f"wrote {args.out}: {meta}")


if __name__ == "__main__":
    main()
