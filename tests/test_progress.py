"""Progress away from a terminal: whole lines with the count, rate and time left, never carriage returns."""

from __future__ import annotations

import io

from sparse_model.progress import ProgressLines, _duration


def test_lines_carry_count_share_postfix_rate_and_time_left():
    out = io.StringIO()
    bar = ProgressLines(total=10, desc="train demo", unit="step", interval=0.0, file=out)
    bar.update(3)
    bar.set_postfix(loss="3.214", tok_s="8140")
    bar.update(2)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue()
    assert lines[0].startswith("train demo: 3/10 steps (30%)") and "left" in lines[0]
    assert lines[1].startswith("train demo: 5/10 steps (50%), loss 3.214, tok_s 8140") and "steps/s" in lines[1]
    bar.update(5)
    bar.close()
    bar.close()  # the last update already said it all: no line more
    last = out.getvalue().splitlines()
    assert len(last) == 3 and "10/10 steps (100%)" in last[-1] and "done in" in last[-1] and "left" not in last[-1]


def test_lines_are_rate_limited_and_a_disabled_bar_writes_nothing():
    out = io.StringIO()
    bar = ProgressLines(total=1000, desc="x", interval=3600.0, file=out)
    for _ in range(1000):
        bar.update(1)
    assert out.getvalue() == ""  # within the interval: silent until the end
    bar.close()
    bar.close()  # closing twice writes once
    assert out.getvalue().count("\n") == 1
    quiet = io.StringIO()
    bar = ProgressLines(range(5), desc="x", interval=0.0, file=quiet, disable=True)
    assert list(bar) == list(range(5)) and quiet.getvalue() == ""


def test_the_end_is_written_once_even_when_the_last_update_wrote_it():
    out = io.StringIO()
    bar = ProgressLines(total=2, unit="node", interval=0.0, file=out)
    bar.update(1)
    bar.update(1)  # writes "2/2 ... done"
    bar.close()  # nothing new to say
    assert out.getvalue().count("2/2 nodes (100%)") == 1


def test_resumed_work_counts_its_rate_from_where_it_resumed():
    out = io.StringIO()
    bar = ProgressLines(total=100, initial=90, unit="step", interval=0.0, file=out)
    bar.update(5)
    assert out.getvalue().startswith("95/100 steps (95%)")
    assert _duration(42) == "42 s" and _duration(161) == "2 min 41 s" and _duration(7322) == "2 h 2 min"
