"""Training in two processes with torchrun (gloo on CPU): one model, the same weights as one process
with the same global batch, identical on every rank, and a killed run resumes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sparse_model import checkpoint as ckpt
from sparse_model.distributed import Replicas
from sparse_model.errors import UserError

BIN = Path(sys.executable).parent


def _torchrun(args: list[str], env: dict, timeout: int = 240) -> subprocess.CompletedProcess:
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", "2", str(BIN / "circuits"), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_model(run_dir)[0].state_dict()


def test_two_processes_train_the_one_process_model_and_a_killed_run_resumes(tmp_path, small_corpus, tiny_run):
    out = tmp_path / "tiny"  # the same folder name as tiny_run's, so run.json can match
    env = dict(os.environ, CIRCUITS_DB=str(tmp_path / "c.duckdb"), CIRCUITS_KILL_AT="train.step:15")
    args = ["train", "--preset", "tiny", "--corpus", str(small_corpus), "--out", str(out)]
    killed = _torchrun(args, env)
    assert killed.returncode != 0
    assert "SIGKILL" in killed.stderr or "Signal 9" in killed.stderr
    step = ckpt.read_checkpoint_state(out)["step"]
    assert 0 < step < 30

    env.pop("CIRCUITS_KILL_AT")
    done = _torchrun(args, env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resuming {out} from step {step} of 30" in done.stdout + done.stderr
    summary = [line for line in done.stdout.splitlines() if line.startswith("model tiny:")]
    assert len(summary) == 1  # process 0 reports, process 1 is silent
    state = ckpt.read_checkpoint_state(out)
    assert state["step"] == 30 and state["runtime"] == {"device": "cpu", "autocast": None, "processes": 2}

    one, two = _weights(tiny_run), _weights(out)
    assert one.keys() == two.keys()
    for name in one:
        assert torch.equal(one[name] != 0, two[name] != 0), f"{name}: different nonzero pattern"
        assert torch.allclose(one[name], two[name], atol=1e-5, rtol=0), name

    from explainer.store import Store
    with Store.open(tmp_path / "c.duckdb", read_only=True) as store:
        assert [m["name"] for m in store.list_models()] == ["tiny"]


def _diverge(rank: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.fill_(1.0 + rank * 1e-6)  # rank 1 is off by one float step
    replicas = Replicas(rank=rank, world_size=2)
    try:
        replicas.check_identical(model, step=7)
        results[rank] = "no error"
    except UserError as e:
        results[rank] = str(e)
    dist.destroy_process_group()


def test_the_weight_check_catches_ranks_that_diverge(tmp_path):
    results = mp.Manager().dict()
    mp.start_processes(_diverge, args=(str(tmp_path / "init"), results), nprocs=2, start_method="fork")
    assert results[0] == results[1] == "after step 7 the weights of process 1 differ from process 0's; " \
                                       "the processes diverged (report this as a bug)"


def test_a_batch_that_does_not_split_over_the_processes_is_one_line():
    with pytest.raises(UserError, match="batch of 8 sequences does not split evenly over 3 processes"):
        Replicas(rank=0, world_size=3).local_batch_size(8)
    assert Replicas(rank=1, world_size=2).local_batch_size(8) == 4
