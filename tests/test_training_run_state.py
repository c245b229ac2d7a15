"""RunState: the typed run progress reads checkpoints written as the engine's old string-keyed dict."""

from __future__ import annotations

import torch

from cxr_desktop.training import checkpoint as ckpt
from cxr_desktop.training.run_state import RunState

# The JSON part exactly as the engine wrote it before RunState (a stage-1 epoch 2 checkpoint).
OLD_STATE = {
    "config": {"input_size": 64, "head": "mlp", "seed": 0}, "data": "ab12cd34", "started": "2026-01-02T03:04:05Z",
    "initial_card": {"warnings": ["w"], "provenance": {"initial_weights": {"source": "random"}}},
    "stage": 1, "epoch": 2, "number": 2,
    "history": [{"stage": 1, "epoch": 1, "train_loss": 0.7, "val_loss": 0.69, "val_auc": 0.5, "seconds": 1.0,
                 "lr": 0.001, "val_accuracy": 0.5, "improved": True}],
    "best": {"score": 0.5, "stage": 1, "epoch": 1, "val_auc": 0.5, "val_loss": 0.69, "monitor": "auc"},
    "best_file": "best-0001.safetensors", "bad_epochs": 1, "stage1_done": False, "stage2_done": False,
    "scheduler": {"last_epoch": 2, "_step_count": 3},
}


def test_an_old_format_checkpoint_resumes_into_a_run_state(tmp_path):
    model = torch.nn.Linear(3, 2)
    ckpt.save_best(tmp_path, 1, model)
    ckpt.save_checkpoint(tmp_path, 2, model, None, dict(OLD_STATE))
    loaded = ckpt.load_latest(tmp_path)
    assert loaded is not None
    st = RunState.from_dict(loaded.state)
    assert (st.stage, st.epoch, st.number, st.bad_epochs) == (1, 2, 2, 1)
    assert st.best_file == "best-0001.safetensors" and st.best["epoch"] == 1
    assert st.config == OLD_STATE["config"] and st.data == "ab12cd34"
    assert st.scheduler == {"last_epoch": 2, "_step_count": 3}
    assert st.history[0]["val_auc"] == 0.5 and st.initial_card["warnings"] == ["w"]
    assert st.to_dict() == OLD_STATE  # written back with the same keys and values


def test_keys_an_older_checkpoint_lacks_take_the_old_defaults():
    old = {k: v for k, v in OLD_STATE.items() if k not in ("started", "bad_epochs")}
    st = RunState.from_dict({**old, "optimizer": None})
    assert st.bad_epochs == 0 and st.started == ""
    assert "optimizer" not in st.to_dict()
