"""--device: auto picks what torch sees, a device that is not there is one line before any work,
and the run records where it trained. (This machine has no GPU: CUDA and MPS are only checked to
fail cleanly here.)"""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from explainer.cli import main
from sparse_model import checkpoint as ckpt
from sparse_model.device import Precision, resolve_device
from sparse_model.errors import UserError
from sparse_model.run import Run


def test_auto_is_cuda_when_torch_sees_one_else_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected
    assert resolve_device("CPU") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_missing_cuda_device_is_one_line():
    with pytest.raises(UserError, match="--device cuda: torch sees no CUDA device.*use --device cpu or auto"):
        resolve_device("cuda")


def test_an_unknown_device_is_one_line():
    with pytest.raises(UserError, match="unknown device 'tpu'; choose one of auto, cpu, cuda, mps"):
        resolve_device("tpu")


def test_autocast_is_off_on_cpu_and_recorded():
    p = Precision.for_device(torch.device("cpu"))
    assert p.autocast_dtype is None and p.describe() == {"device": "cpu", "autocast": None}


def test_a_run_records_where_it_trained_and_loads_on_the_device_asked(tiny_run):
    state = ckpt.read_checkpoint_state(tiny_run)
    assert state["runtime"] == {"device": "cpu", "autocast": None, "processes": 1}
    run = Run(tiny_run, device="cpu")
    assert next(run.model.parameters()).device == torch.device("cpu")
    assert {m.device for m in run.means.values()} == {torch.device("cpu")}
    # checkpoints hold CPU tensors whatever device wrote them
    tensors = ckpt._load_tensors(tiny_run / state["model_file"], state["model_sha256"])
    assert {t.device.type for t in tensors.values()} == {"cpu"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("command", ["tasks", "prune", "explain"])
def test_every_torch_stage_refuses_a_missing_device_in_one_line(tiny_run, tmp_path, command):
    extra = ["--task", "single_double_quote"] if command == "prune" else []
    result = CliRunner().invoke(main, ["--db", str(tmp_path / "c.duckdb"), command, str(tiny_run), *extra, "--device", "cuda"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("Error: --device cuda: torch sees no CUDA device")
    assert "Traceback" not in result.output
