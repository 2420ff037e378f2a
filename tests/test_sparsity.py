"""Weight sparsity: exact density, the per-unit floor, the schedules, gradient normalisation."""

from __future__ import annotations

import math

import pytest
import torch

from sparse_model.model import ModelConfig, SparseGPT
from sparse_model.sparsity import (MIN_PER_UNIT, density_at, lr_at, matrix_densities, n_keep, normalize_grad_rms_,
                                   project_, sparse_matrices, topk_mask)
from sparse_model.train import TrainConfig, make_optimizer

CFG = ModelConfig(vocab_size=256, n_layer=2, d_model=64, n_head=4, d_head=16, d_mlp=256, n_ctx=16)


def _one_step(model, density):
    opt = make_optimizer(model, TrainConfig())
    idx = torch.randint(0, CFG.vocab_size, (4, 16))
    model.loss(idx[:, :-1], idx[:, 1:]).backward()
    normalize_grad_rms_(list(model.parameters()))
    opt.step()
    project_(model, density)


@pytest.mark.parametrize("density", [0.5, 0.1, 1 / 64])
def test_every_matrix_has_exactly_the_scheduled_number_of_nonzeros_after_a_step(density):
    torch.manual_seed(0)
    model = SparseGPT(CFG)
    _one_step(model, density)
    for name, (p, axis) in sparse_matrices(model).items():
        want = n_keep(p.numel(), density)
        if axis is not None:
            want = max(want, MIN_PER_UNIT * p.shape[axis])
        assert int((p != 0).sum()) == want, name


def test_sparse_matrices_are_embeddings_unembedding_attention_and_mlp():
    names = set(sparse_matrices(SparseGPT(CFG)))
    assert {"wte.weight", "lm_head.weight", "blocks.0.attn.q.weight", "blocks.1.attn.o.weight",
            "blocks.0.mlp.fc.weight", "blocks.1.mlp.proj.weight"} <= names
    assert "bigram" not in names and not any(n.endswith("bias") for n in names)


def test_every_neuron_and_channel_keeps_at_least_four_weights_even_when_density_is_tiny():
    torch.manual_seed(0)
    model = SparseGPT(CFG)
    project_(model, 1e-4)
    for name, (p, axis) in sparse_matrices(model).items():
        if axis is None:
            continue
        per_unit = (p != 0).sum(dim=1 - axis)
        assert int(per_unit.min()) >= MIN_PER_UNIT, name
    fc = model.blocks[0].mlp.fc.weight
    assert int((fc != 0).sum()) == MIN_PER_UNIT * CFG.d_mlp  # the floor, and nothing more


def test_floor_keeps_each_units_largest_weights():
    w = torch.tensor([[9.0, 8.0, 7.0, 6.0, 0.5], [0.1, 0.2, 0.3, 0.4, 0.05]])
    mask = topk_mask(w, density=0.1, unit_axis=0, min_per_unit=4)
    assert mask[1].tolist() == [True, True, True, True, False]
    assert mask[0].tolist() == [True, True, True, True, False]


def test_density_schedule_at_start_one_percent_half_and_end():
    T, target = 1000, 0.1
    assert density_at(0, T, target) == 1.0
    assert density_at(10, T, target) == 1.0  # 1%: annealing starts here
    assert density_at(255, T, target) == pytest.approx(1.0 + (target - 1.0) * 245 / 490)
    assert density_at(500, T, target) == pytest.approx(target)  # 50%: target reached
    assert density_at(999, T, target) == target
    assert density_at(500, T, 1.0) == 1.0


def test_learning_rate_warms_up_decays_and_carries_the_sharkfin_factor():
    T, lr, target = 1000, 0.01, 0.25
    assert lr_at(0, T, lr, target) == pytest.approx(lr / 10 * math.sqrt(target))  # warm-up 1/10, dense
    assert lr_at(9, T, lr, target) == pytest.approx(lr * math.sqrt(target))
    assert lr_at(500, T, lr, target) == pytest.approx(lr * 500 / 990)  # at target density: factor 1
    d = density_at(250, T, target)
    assert lr_at(250, T, lr, target) == pytest.approx(lr * 750 / 990 * math.sqrt(target / d))
    assert lr_at(999, T, lr, target) == pytest.approx(lr * 1 / 990)
    assert lr_at(300, T, lr, 1.0) == pytest.approx(lr * 700 / 990)  # dense: no factor


def test_global_gradient_is_rescaled_to_rms_one():
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 2))
    a.grad, b.grad = torch.tensor([3.0, 0.0, 4.0]), torch.full((2, 2), 2.0)
    old = normalize_grad_rms_([a, b])
    assert old == pytest.approx(math.sqrt((9 + 16 + 16) / 7))
    total = torch.cat([a.grad.flatten(), b.grad.flatten()])
    assert float(total.pow(2).mean().sqrt()) == pytest.approx(1.0)


def test_dense_density_leaves_weights_untouched():
    torch.manual_seed(0)
    model = SparseGPT(CFG)
    project_(model, 1.0)
    assert all(d == 1.0 for d in matrix_densities(model).values())
