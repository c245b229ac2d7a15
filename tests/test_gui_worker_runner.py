"""WorkerRunner (gui/workers.py): a generator job stopped with ``quit()`` is closed, so its ``finally`` runs."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("pytestqt")


def test_a_generator_stopped_by_quit_is_closed_and_one_that_ends_runs_its_finally_once(qtbot):
    from cxr_desktop.gui.workers import WorkerRunner

    runner = WorkerRunner("test-runner")
    cleaned: list[str] = []

    def job(name: str, n: int):
        try:
            for i in range(n):
                time.sleep(0.01)
                yield i
            return name
        finally:
            cleaned.append(name)  # what a training job does here: end its processes, remove temporary files

    got: list[int] = []
    finished: list[str] = []
    worker = runner.start_generator(job, "stopped", 10**6, yielded=got.append,
                                    finished=lambda: finished.append(list(cleaned)))
    qtbot.waitUntil(lambda: len(got) >= 2, timeout=10_000)
    worker.quit()
    assert runner.shutdown(10_000)
    qtbot.waitUntil(lambda: bool(finished), timeout=10_000)
    assert cleaned == ["stopped"] and finished == [["stopped"]]  # closed before the caller hears "finished"
    assert worker is not None  # still referenced: the generator was closed, not collected

    returned: list[str] = []
    runner.start_generator(job, "ended", 3, returned=returned.append)
    qtbot.waitUntil(lambda: returned == ["ended"], timeout=10_000)
    assert runner.shutdown(10_000)
    qtbot.wait(50)
    assert cleaned == ["stopped", "ended"]
