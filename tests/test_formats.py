"""Every file the tool reads from outside has one written-down format (a pydantic model); a bad
value is one line naming the file and the field, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from explainer.jobs.accounting import load_price
from explainer.prompts import load_prompt
from sparse_model.checkpoint import read_checkpoint_state, read_run_file
from sparse_model.errors import UserError
from sparse_model.tasks import load_task_specs


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_task_file_with_a_bad_field(tmp_path: Path):
    spec = json.loads((Path(__file__).parent.parent / "datasets" / "tasks" / "header_colon.json").read_text())
    spec["random_labels"] = "yes"
    (tmp_path / "header_colon.json").write_text(json.dumps(spec))
    with pytest.raises(UserError) as e:
        load_task_specs(tmp_path)
    msg = _one_line(e)
    assert "header_colon.json (task header_colon): random_labels:" in msg and "boolean" in msg


def test_task_file_with_an_unknown_key(tmp_path: Path):
    spec = json.loads((Path(__file__).parent.parent / "datasets" / "tasks" / "header_colon.json").read_text())
    spec["tempaltes"] = spec["templates"]
    (tmp_path / "header_colon.json").write_text(json.dumps(spec))
    with pytest.raises(UserError) as e:
        load_task_specs(tmp_path)
    assert "tempaltes: Extra inputs are not permitted" in _one_line(e)


def test_task_file_error_in_a_union_field_names_the_field_as_written(tmp_path: Path):
    # A template is a string or an object: the object's own error is shown, not "should be a
    # string", and without pydantic's names of the alternatives ("constrained-str", "TemplateEntry").
    spec = json.loads((Path(__file__).parent.parent / "datasets" / "tasks" / "header_colon.json").read_text())
    spec["templates"] = [{"prefix": "def f():", "answers": [":"]}]
    (tmp_path / "header_colon.json").write_text(json.dumps(spec))
    with pytest.raises(UserError) as e:
        load_task_specs(tmp_path)
    msg = _one_line(e)
    assert "(task header_colon): templates.0.answers.1: Field required" in msg, msg
    assert "sparse_model/tasks.py" in msg  # where the format is described


def test_prompt_file_with_a_misaligned_worked_example(tmp_path: Path):
    (tmp_path / "simulate.json").write_text(json.dumps({
        "system": "s", "scale": 9, "examples": [{"explanation": "x", "record": {"tokens": ["a", "b"], "activations": [1]}}]}))
    with pytest.raises(UserError) as e:
        load_prompt("simulate", str(tmp_path))
    msg = _one_line(e)
    assert f"prompt file {tmp_path / 'simulate.json'}: examples.0.record: 2 tokens but 1 activations" in msg


def test_prompt_file_with_a_scale_out_of_range(tmp_path: Path):
    (tmp_path / "simulate.json").write_text(json.dumps({"system": "s", "scale": 10, "examples": []}))
    with pytest.raises(UserError) as e:
        load_prompt("simulate", str(tmp_path))
    assert "scale: Input should be less than or equal to 9" in _one_line(e)


def test_run_and_checkpoint_files_with_bad_fields(tmp_path: Path):
    (tmp_path / "run.json").write_text(json.dumps({"name": "r", "preset": "demo", "model": {"n_layer": "two"},
                                                   "train": {}, "corpus": {}}))
    with pytest.raises(UserError) as e:
        read_run_file(tmp_path)
    msg = _one_line(e)
    assert "run.json, model: n_layer:" in msg and "delete the run folder and train again" in msg
    (tmp_path / "checkpoint.json").write_text(json.dumps({"step": 10}))
    with pytest.raises(UserError) as e:
        read_checkpoint_state(tmp_path)
    assert "checkpoint.json: model_file: Field required" in _one_line(e)


def test_price_table_with_a_negative_price(tmp_path: Path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"m": {"prompt_per_million": -1, "completion_per_million": 0.6}}))
    with pytest.raises(UserError) as e:
        load_price(path, "m")
    assert f"price table {path}: m.prompt_per_million: Input should be greater than or equal to 0" in _one_line(e)
    path.write_text(json.dumps({"m": {"prompt_per_million": 0.15, "completion_per_million": 0.6}}))
    assert load_price(path, "m").cost(1_000_000, 1_000_000) == pytest.approx(0.75)
