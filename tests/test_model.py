"""The sparse GPT: node locations, hooks, AbsTopK, bigram table."""

from __future__ import annotations

import pytest
import torch

from sparse_model.model import ModelConfig, SparseGPT, abs_topk, node_locations
from sparse_model.nodes import Node

CFG = ModelConfig(vocab_size=64, n_layer=2, d_model=32, n_head=2, d_head=16, d_mlp=64, n_ctx=16)


def test_node_locations_cover_every_site_the_forward_pass_visits():
    model = SparseGPT(CFG)
    visited = {}

    def recorder(loc):
        return lambda x: visited.__setitem__(loc, x.shape[-1])

    with model.hooked({loc: recorder(loc) for loc in node_locations(CFG)}):
        model(torch.randint(0, 64, (2, 8)))
    assert visited == node_locations(CFG)
    assert list(visited) == list(node_locations(CFG)), "locations are listed in forward order"


def test_location_names_follow_the_scheme():
    locs = node_locations(CFG)
    assert "L0.mlp.neuron" in locs and "L1.attn.q" in locs and "L1.attn.resid_read" in locs
    assert locs["L0.attn.v"] == CFG.n_head * CFG.d_head
    assert locs["L1.mlp.neuron"] == CFG.d_mlp
    assert Node.parse(Node("L1.mlp.neuron", 37).name) == ("L1.mlp.neuron", 37)
    with pytest.raises(ValueError):
        Node.parse("L1.mlp.neuron")


def test_unknown_location_is_refused():
    with pytest.raises(KeyError):
        with SparseGPT(CFG).hooked({"L9.mlp.neuron": lambda x: None}):
            pass


def test_hook_replacing_a_location_changes_the_output_and_is_removed_after():
    torch.manual_seed(0)
    model = SparseGPT(CFG)
    idx = torch.randint(0, 64, (2, 8))
    before = model(idx)
    with model.hooked({"L0.mlp.neuron": torch.zeros_like}):
        ablated = model(idx)
    assert not torch.allclose(before, ablated)
    assert torch.equal(model(idx), before)


def test_abs_topk_keeps_the_largest_magnitudes():
    x = torch.tensor([[0.1, -5.0, 2.0, 0.3, -0.2, 4.0, 0.0, 1.0]])
    assert torch.equal(abs_topk(x, 0.25), torch.tensor([[0.0, -5.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0]]))
    assert torch.equal(abs_topk(x, 1.0), x)


def test_activation_sparsity_holds_at_node_locations():
    model = SparseGPT(CFG)
    seen = {}
    with model.hooked({"L0.mlp.neuron": lambda x: seen.setdefault("n", x.detach())}):
        model(torch.randint(0, 64, (2, 8)))
    nonzero_per_token = (seen["n"] != 0).sum(-1)
    assert int(nonzero_per_token.max()) <= CFG.d_mlp // 4


def test_bigram_table_adds_a_logit_row_of_the_current_token():
    torch.manual_seed(0)
    model = SparseGPT(CFG)
    idx = torch.tensor([[3, 5]])
    with torch.no_grad():
        base = model(idx)
        model.bigram[5, 7] = 10.0
        out = model(idx)
    assert float(out[0, 1, 7] - base[0, 1, 7]) == pytest.approx(10.0)
    assert torch.equal(out[0, 0], base[0, 0])
