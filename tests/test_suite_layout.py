"""The suite's layout: the ``slow`` marker really splits it into a quick subset (``-m "not slow"``) and
the long tests, and CI still runs both (README's test command selects no marker)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # collects the whole suite in a child pytest (imports every test module)
def test_slow_marker_splits_the_suite_into_a_quick_subset_and_the_long_tests(request):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          "-m", "slow", "tests"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    slow_ids = [line for line in out.stdout.splitlines() if "::" in line]
    counts = re.search(r"(\d+)/(\d+) tests collected \((\d+) deselected\)", out.stdout)
    assert counts is not None, out.stdout[-2000:]
    slow, total, quick = (int(g) for g in counts.groups())
    assert slow == len(slow_ids) and slow + quick == total
    # the marked ones are collected: a decorated test, a test of a module marked as a whole, and this one
    assert "tests/test_gui_screening.py::test_gui_stays_responsive_during_a_run" in slow_ids
    assert any(i.startswith("tests/test_node_end_to_end.py::") for i in slow_ids)
    assert request.node.nodeid in slow_ids
    # the quick subset (what -m "not slow" collects) is most of the suite, not a token handful
    assert slow >= 20 and quick >= 400 and quick >= 0.6 * total, (slow, quick, total)


def test_ci_runs_the_slow_tests_too():
    """README's test command (which .ci/run runs verbatim) deselects nothing; the marker is registered."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    command = next(line for line in readme.splitlines() if "python -m pytest" in line)
    pytest_args = command.split("python -m pytest", 1)[1].split()
    assert "-m" not in pytest_args and not any("slow" in a for a in pytest_args), pytest_args
    assert command in (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert 'slow: ' in (REPO / "pyproject.toml").read_text(encoding="utf-8")
