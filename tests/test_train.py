"""Training runs: checkpoints, resume after SIGKILL, the models table, and every bad input."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from explainer.cli import main
from explainer.store import Store
from sparse_model import checkpoint as ckpt
from sparse_model.errors import UserError
from sparse_model.model import ModelConfig, SparseGPT
from sparse_model.sparsity import project_
from sparse_model.train import make_optimizer, preset_configs, train


def run_cli(*args, db: Path):
    result = CliRunner().invoke(main, ["--db", str(db), *args])
    return result.exit_code, result.stdout, result.stderr


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_checkpoint_round_trip_gives_bit_identical_logits(tmp_path):
    mcfg, tcfg = preset_configs("tiny")
    torch.manual_seed(1)
    model = SparseGPT(mcfg)
    project_(model, 0.3)
    ckpt.write_json_atomic(tmp_path / ckpt.RUN_FILE, {"name": "x", "preset": "tiny", "model": mcfg.to_dict(), "train": tcfg.to_dict(), "corpus": {}})
    ckpt.save_checkpoint(tmp_path, model, make_optimizer(model, tcfg), {"step": 7})
    loaded, _, state = ckpt.load_model(tmp_path)
    idx = torch.randint(0, mcfg.vocab_size, (3, mcfg.n_ctx))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(idx), loaded(idx))
    assert state["step"] == 7
    assert not any(p.suffix in (".pt", ".pkl", ".bin") for p in tmp_path.iterdir()), "no pickles"


def test_a_checkpoint_restores_the_optimizer_state_but_keeps_the_optimizers_own_kernel(tmp_path):
    from sparse_model.step import PLAIN_STEP

    mcfg, tcfg = preset_configs("tiny")
    model = SparseGPT(mcfg)
    ckpt.write_json_atomic(tmp_path / ckpt.RUN_FILE, {"name": "x", "preset": "tiny", "model": mcfg.to_dict(), "train": tcfg.to_dict(), "corpus": {}})
    plain = make_optimizer(model, tcfg, PLAIN_STEP)  # written by the plain step's (unfused) AdamW
    idx = torch.randint(0, mcfg.vocab_size, (2, 8))
    model.loss(idx, idx).backward()
    plain.step()
    ckpt.save_checkpoint(tmp_path, model, plain, {"step": 1})
    fast = make_optimizer(model, tcfg)
    ckpt.load_training_state(tmp_path, model, fast)
    assert [g["fused"] for g in fast.param_groups] == [True, True]
    assert len(fast.state) == len(plain.state) and all(torch.equal(fast.state[p]["exp_avg"], plain.state[p]["exp_avg"])
                                                      for p in plain.state)


def test_a_run_trained_by_the_cli_is_recorded_in_the_models_table(tmp_path, small_corpus):
    db = tmp_path / "c.duckdb"
    code, out, err = run_cli("train", "--preset", "tiny", "--out", str(tmp_path / "r1"), "--corpus", str(small_corpus), db=db)
    assert code == 0, err
    assert "train r1: 30/30 steps (100%)" in err and "tok_s" in err and "\r" not in err  # progress lines off a terminal
    with Store.open(db, read_only=True) as store:
        row = store.get_model("r1")
    assert row["steps"] == 30 and row["tokens_seen"] == 30 * 8 * 32
    assert row["corpus_manifest"]["files"] > 0 and len(row["corpus_manifest"]["sha256"]) == 64
    assert row["config"]["train"]["density"] == 0.25
    assert row["density"]["blocks.0.mlp.fc.weight"] == pytest.approx(0.25, abs=0.01)
    assert 0 < row["val_loss"] < 9 and row["n_nonzero"] < row["n_params"]
    assert Path(row["checkpoint_path"]).exists()
    code, out, _ = run_cli("models", "--json", db=db)
    assert code == 0 and json.loads(out)[0]["name"] == "r1"


def test_rerunning_a_finished_run_trains_nothing_more(tiny_run, small_corpus):
    before = ckpt.read_checkpoint_state(tiny_run)
    summary = train(tiny_run, "tiny", corpus_dir=small_corpus, progress=False, log=lambda s: None)
    assert summary["steps"] == before["step"]
    assert ckpt.read_checkpoint_state(tiny_run)["model_sha256"] == before["model_sha256"]


def test_training_killed_mid_run_resumes_to_the_same_weights(tmp_path, small_corpus, tiny_run):
    # A real `circuits train` process SIGKILLed from outside at whatever point it has reached, then resumed;
    # it must end with the weights of the uninterrupted tiny_run (same preset, corpus and thread count).
    killed = tmp_path / "tiny"  # tiny_run's folder name, so the runs match in everything but the kill
    command = [sys.executable, "-m", "explainer", "--db", str(tmp_path / "c.duckdb"), "train", "--preset", "tiny",
               "--checkpoint-every", "4", "--out", str(killed), "--corpus", str(small_corpus)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        state = ckpt.read_checkpoint_state(killed) if (killed / ckpt.CHECKPOINT_FILE).exists() else None
        if state and state["step"] >= 10:  # in the density anneal (steps 1 to 15) or just after
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped_at = ckpt.read_checkpoint_state(killed)["step"]
    clean_steps = ckpt.read_checkpoint_state(tiny_run)["step"]
    assert 10 <= stopped_at < clean_steps, "the kill must land mid-run"

    subprocess.run(command, check=True, capture_output=True)
    a, _, sa = ckpt.load_model(tiny_run)
    b, _, sb = ckpt.load_model(killed)
    assert sb["step"] == sa["step"] and sb["tokens_seen"] == sa["tokens_seen"]
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(pa != 0, pb != 0), f"{name}: same sparsity pattern"
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=name)
    assert sb["val_loss"] == pytest.approx(sa["val_loss"], abs=1e-6)


# ---------------------------------------------------------------------------------------------
# Bad input: one clear line on stderr, non-zero exit, nothing overwritten.


def _assert_one_line_error(code, err, *needles):
    assert code != 0
    lines = [l for l in err.strip().splitlines() if l]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]


def test_missing_corpus_folder(tmp_path):
    code, _, err = run_cli("train", "--preset", "tiny", "--out", str(tmp_path / "r"), "--corpus", str(tmp_path / "nope"), db=tmp_path / "c.duckdb")
    _assert_one_line_error(code, err, "nope")
    assert not (tmp_path / "r").exists()


def test_empty_corpus_folder_and_one_without_python_files(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "notes.txt").write_text("hello")
    for folder in ("empty", "txt"):
        code, _, err = run_cli("train", "--preset", "tiny", "--out", str(tmp_path / "r"), "--corpus", str(tmp_path / folder), db=tmp_path / "c.duckdb")
        _assert_one_line_error(code, err, folder)


def test_unknown_preset(tmp_path, small_corpus):
    code, _, err = run_cli("train", "--preset", "huge", "--out", str(tmp_path / "r"), "--corpus", str(small_corpus), db=tmp_path / "c.duckdb")
    _assert_one_line_error(code, err, "huge", "tiny")


@pytest.mark.parametrize("density", ["0", "-0.5", "1.5", "nan"])
def test_density_outside_zero_one(tmp_path, small_corpus, density):
    code, _, err = run_cli("train", "--preset", "tiny", "--density", density, "--out", str(tmp_path / "r"), "--corpus", str(small_corpus), db=tmp_path / "c.duckdb")
    _assert_one_line_error(code, err, "density")


def test_out_folder_holding_a_different_run_is_left_alone(tmp_path, tiny_run, small_corpus):
    before = _tree_bytes(tiny_run)
    code, _, err = run_cli("train", "--preset", "tiny", "--density", "0.5", "--out", str(tiny_run), "--corpus", str(small_corpus), db=tmp_path / "c.duckdb")
    _assert_one_line_error(code, err, "different config", "density")
    assert _tree_bytes(tiny_run) == before


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_checkpoint_is_refused(tmp_path, tiny_run, small_corpus, damage):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    model_file = run / ckpt.read_checkpoint_state(run)["model_file"]
    data = bytearray(model_file.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    before = _tree_bytes(run)
    with pytest.raises(UserError, match="corrupt"):
        ckpt.load_model(run)
    code, _, err = run_cli("train", "--preset", "tiny", "--out", str(run), "--corpus", str(small_corpus), db=tmp_path / "c.duckdb")
    _assert_one_line_error(code, err, "corrupt")
    assert _tree_bytes(run) == before


def test_database_file_that_is_not_duckdb(tmp_path, small_corpus):
    db = tmp_path / "notes.duckdb"
    db.write_text("these are my notes\n")
    code, _, err = run_cli("train", "--preset", "tiny", "--out", str(tmp_path / "r"), "--corpus", str(small_corpus), db=db)
    _assert_one_line_error(code, err, "not a DuckDB database")
    assert db.read_text() == "these are my notes\n"
    assert not (tmp_path / "r").exists()
