"""A plain (non-editable) install is a working tool: the task files, prompt files, the report's
CSS and JavaScript and the trained simulator's weights ship inside the wheel, and nothing reads the source tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

CHECK = textwrap.dedent("""
    import sys
    import explainer, sparse_model
    from sparse_model.tasks import DEFAULT_TASK_DIR, load_task_specs
    from explainer.prompts import PROMPTS_DIR, load_prompt
    from explainer.report.page import __file__ as page
    from importlib import resources
    home, n_tasks, prompts = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
    # The editable install of the same project is visible through the system site-packages too.
    for f in (explainer.__file__, sparse_model.__file__, str(DEFAULT_TASK_DIR), str(PROMPTS_DIR), page):
        assert f.startswith(home), (f, home)
    assert len(load_task_specs()) == n_tasks, (len(load_task_specs()), n_tasks)
    assert sorted(p.stem for p in PROMPTS_DIR.glob("*.json")) == prompts
    for name in prompts:
        load_prompt(name)
    assert resources.files("explainer.report").joinpath("report.css").read_text()
    assert resources.files("explainer.report").joinpath("report.js").read_text()
    from explainer.simulators.trained import WEIGHTS, load_weights
    assert str(WEIGHTS).startswith(home), WEIGHTS
    load_weights(WEIGHTS)  # the trained simulator's head ships inside the wheel
    from explainer.simulators.rulegen import PARAPHRASES, _paraphrases
    assert str(PARAPHRASES).startswith(home) and _paraphrases()  # and the wording it was trained on
    print("ok", len(load_task_specs()))
""")


@pytest.mark.slow
def test_wheel_installed_elsewhere_finds_its_tasks_prompts_and_report_files(tmp_path):
    # Built from a copy of the tracked files, so nothing stale and no build folder in the checkout.
    src = tmp_path / "src"
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True).stdout.split()
    for name in tracked:
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(src)], check=True, capture_output=True, text=True)
    (wheel,) = wheels.glob("sparse_circuits-*.whl")
    # Installed on its own into a folder that comes first on the path; the heavy dependencies (torch,
    # duckdb, ...) still come from this environment, whatever it is (a .venv included: a venv made
    # from inside a venv would see the base interpreter's packages, not these).
    home = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(home), str(wheel)],
                   check=True, capture_output=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {**os.environ, "PYTHONPATH": str(home)}
    n_tasks = len(list((src / "datasets" / "tasks").glob("*.json")))  # what the wheel was built from
    prompts = ",".join(sorted(p.stem for p in (src / "prompts").glob("*.json")))
    run = subprocess.run([sys.executable, "-c", CHECK, str(home), str(n_tasks), prompts], cwd=outside, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("ok")
    # The console script the install wrote (it imports explainer.cli:main), run with this python.
    script = home / "bin" / "circuits"
    assert "explainer.cli" in script.read_text()
    cli = subprocess.run([sys.executable, str(script), "--help"], cwd=outside, env=env, capture_output=True, text=True)
    assert cli.returncode == 0 and "demo" in cli.stdout, cli.stderr[-2000:]
