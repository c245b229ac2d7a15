"""Checkpoints: one safetensors file per completed epoch, written atomically; no pickle anywhere.

A checkpoint holds the model weights, the optimizer's tensors (``optim.<param>.<name>``)
and, as JSON in the safetensors metadata, everything else: stage, epoch, optimizer
hyper-parameters, scheduler state, history, best epoch, patience counter and the
run's settings. The best weights so far live in their own file named in the
checkpoint, so a run killed at any instant resumes from a consistent pair:
files are only ever replaced whole (temp file + fsync + ``os.replace``), and
older files are deleted only after the newer checkpoint is in place.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cxr_desktop.atomic import write_bytes_atomic

CKPT_PATTERN = re.compile(r"^ckpt-(\d{4,})\.safetensors$")
BEST_PATTERN = re.compile(r"^best-(\d{4,})\.safetensors$")
META_KEY = "cxr_checkpoint"


@dataclass
class Checkpoint:
    """A loaded checkpoint: ``state`` is the JSON part; tensors are split by owner."""

    path: Path
    number: int
    state: dict[str, Any]
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None


def _tensors_of_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors and a JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{name}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[name] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, t in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = t
    for pid, vals in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(vals)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def _save(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    from safetensors.torch import save

    write_bytes_atomic(path, save(tensors, metadata=meta))


def _model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def best_name(number: int) -> str:
    """The file name :func:`save_best` gives the weights of best epoch ``number``."""
    return f"best-{number:04d}.safetensors"


def save_best(work_dir: Path, number: int, model: torch.nn.Module) -> Path:
    """The weights of a new best epoch, as ``best-<number>.safetensors``."""
    path = work_dir / best_name(number)
    _save(path, _model_tensors(model), {"format": "cxr-best-weights"})
    return path


def load_best(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k[len("model."):]: v for k, v in load_file(str(path)).items() if k.startswith("model.")}


def save_checkpoint(work_dir: Path, number: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None, state: dict[str, Any]) -> Path:
    """Write ``ckpt-<number>.safetensors`` atomically, then delete older checkpoints and unused best files."""
    work_dir.mkdir(parents=True, exist_ok=True)
    tensors = _model_tensors(model)
    full = dict(state)
    if optimizer is not None:
        opt_tensors, opt_meta = _tensors_of_optimizer(optimizer.state_dict())
        tensors.update(opt_tensors)
        full["optimizer"] = opt_meta
    else:
        full["optimizer"] = None
    path = work_dir / f"ckpt-{number:04d}.safetensors"
    _save(path, tensors, {META_KEY: json.dumps(full)})
    _cleanup(work_dir, keep_ckpt=path.name, keep_best=state.get("best_file"))
    return path


def _cleanup(work_dir: Path, *, keep_ckpt: str, keep_best: str | None) -> None:
    for f in work_dir.iterdir():
        if (CKPT_PATTERN.match(f.name) and f.name != keep_ckpt) or (BEST_PATTERN.match(f.name) and f.name != keep_best):
            with contextlib.suppress(OSError):
                f.unlink()


def _newest_first(work_dir: Path) -> list[tuple[int, Path]]:
    """(number, path) of the checkpoints in ``work_dir``, newest first."""
    if not work_dir.is_dir():
        return []
    return sorted(((int(m.group(1)), f) for f in work_dir.iterdir() if (m := CKPT_PATTERN.match(f.name))),
                  reverse=True)


def load_latest(work_dir: Path) -> Checkpoint | None:
    """The newest readable checkpoint in ``work_dir``, or None."""
    from safetensors import safe_open

    for number, f in _newest_first(work_dir):
        try:
            with safe_open(str(f), framework="pt") as fh:
                meta = fh.metadata() or {}
                state = json.loads(meta[META_KEY])
                tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        except Exception:  # noqa: BLE001 - an unreadable checkpoint is skipped, an older one may do
            continue
        model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        opt_meta = state.pop("optimizer", None)
        opt = None
        if opt_meta is not None:
            opt = _optimizer_from({k: v for k, v in tensors.items() if k.startswith("optim.")}, opt_meta)
        best = state.get("best_file")
        if best and not (work_dir / best).is_file():
            continue  # its best weights are gone: not resumable from here
        return Checkpoint(path=f, number=number, state=state, model=model, optimizer=opt)
    return None


def peek_latest(work_dir: Path) -> dict[str, Any] | None:
    """The JSON state of the checkpoint :func:`load_latest` would load (no tensors are read), or None."""
    from safetensors import safe_open

    for _number, f in _newest_first(work_dir):
        try:
            with safe_open(str(f), framework="pt") as fh:
                state = json.loads((fh.metadata() or {})[META_KEY])
        except Exception:  # noqa: BLE001 - unreadable: an older one may do
            continue
        best = state.get("best_file")
        if best and not (work_dir / best).is_file():
            continue  # as load_latest: not resumable from here
        return state
    return None


def clear(work_dir: Path) -> None:
    """Remove the checkpoints and best-weight files of an earlier run (a fresh start)."""
    if work_dir.is_dir():
        for f in work_dir.iterdir():
            if CKPT_PATTERN.match(f.name) or BEST_PATTERN.match(f.name):
                with contextlib.suppress(OSError):
                    f.unlink()

