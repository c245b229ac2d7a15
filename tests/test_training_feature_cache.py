"""Stage-1 feature cache: cached backbone features are reused only when they fit the head.

The check used to reduce to a row count, so for an MLP head a stale or foreign features file
with the right number of rows was fed to the head. These tests use ``head="mlp"``.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from cxr_desktop.model.architecture import FEATURE_CHANNELS, CxrClassifier
from cxr_desktop.model.modelfile import load_model
from cxr_desktop.training import events as E
from cxr_desktop.training.config import TrainConfig
from cxr_desktop.training.engine import cached_features_fit, train
from cxr_desktop.training.relay import drain
from cxr_desktop.training.synthetic import PATIENT_REGEX, find_sources, write_dataset

SIZE = 64
MLP = {"type": "gap_mlp", "hidden": [32], "dropout": 0.5}


def test_cached_features_must_be_as_wide_as_the_backbone_for_an_mlp_head():
    model = CxrClassifier(num_classes=2, head=MLP)
    good = np.zeros((5, FEATURE_CHANNELS), np.float32)
    assert cached_features_fit(good, 5, model)
    assert not cached_features_fit(np.zeros((5, 7), np.float32), 5, model)  # right rows, wrong width
    assert not cached_features_fit(np.zeros((5, 32), np.float32), 5, model)  # the hidden width is not the input
    assert not cached_features_fit(np.zeros((6, FEATURE_CHANNELS), np.float32), 5, model)
    assert not cached_features_fit(np.zeros(5 * FEATURE_CHANNELS, np.float32), 5, model)
    bad = good.copy()
    bad[2, 3] = np.nan
    assert not cached_features_fit(bad, 5, model)


pytestmark = pytest.mark.usefixtures("training_isolation")


def _cfg(data: Path, out: Path) -> TrainConfig:
    return TrainConfig(data_dir=str(data), out=str(out), input_size=SIZE, weights="none", head="mlp",
                       epochs_frozen=1, epochs_finetune=0, batch_size=8, patient_regex=PATIENT_REGEX,
                       bootstrap=20, seed=0, val_fraction=0.25, test_fraction=0.25, augment="none", threads=1,
                       work_dir=str(out.parent / "run"))


@pytest.mark.slow
def test_an_mlp_run_recomputes_cached_features_that_do_not_fit(cxr_dir, tmp_path):
    data = tmp_path / "data"
    write_dataset(find_sources(cxr_dir, max_side=256)[:8], data, variants=4, size=SIZE, seed=1)
    cancel = threading.Event()

    def stop_after_features(ev):
        if isinstance(ev, E.FeatureProgress) and ev.split == "val" and ev.done == ev.total:
            cancel.set()

    first = drain(train(_cfg(data, tmp_path / "a.safetensors"), cancel), stop_after_features)
    assert first is not None and first.model_path is None
    cached = sorted((tmp_path / "run").glob("features-*.npy"))
    assert {p.name.split("-")[1] for p in cached} == {"train", "val"}
    rows = {p: np.load(p).shape[0] for p in cached}
    for p, n in rows.items():  # same names (same data, backbone, settings), but features no head can take
        np.save(p, np.ones((n, 7), np.float32))

    seen: list[E.FeatureProgress] = []
    out = tmp_path / "b.safetensors"
    result = drain(train(_cfg(data, out), None),
                   lambda ev: seen.append(ev) if isinstance(ev, E.FeatureProgress) else None)
    assert result is not None and result.model_path == str(out) and out.exists()
    assert load_model(out).card.head["type"] == "gap_mlp"
    # recomputed batch by batch, not taken whole from the planted files
    assert any(ev.done < ev.total for ev in seen if ev.split == "train")
    for p in (tmp_path / "run").glob("features-*.npy"):
        assert np.load(p).shape[1] == FEATURE_CHANNELS
