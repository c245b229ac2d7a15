"""Backbone runners: torch (CUDA or CPU) and ONNX Runtime (fastest on the CPU).

A backend turns a normalised batch (N, 3, S, S) into last-block activations
(N, 2048, S/32, S/32); the small head always runs in torch (fp32), so
prediction and Grad-CAM share one backbone pass whatever the backend.

The ONNX graph is exported once per (model hash, input size) and cached; once the
engine has checked a cached graph against torch, a marker beside it records that
file's identity (size, modification time, inode: the graph is only ever replaced
atomically), so later starts (a resumed screening run, the next app start) load the
cached session without exporting or checking again.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from cxr_desktop.model.architecture import CxrClassifier, FeatureExtractor

log = logging.getLogger(__name__)


class FeatureBackend(Protocol):
    name: str

    def features(self, batch: np.ndarray) -> torch.Tensor:
        """Activations (N, 2048, h, w) as a float32 CPU tensor."""


class TorchBackend:
    """torch eager; on CUDA with channels_last and autocast (bf16 where supported, else fp16)."""

    def __init__(self, model: CxrClassifier, device: str = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.autocast_dtype: torch.dtype | None = None
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
            self.autocast_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.name = f"torch-{self.device.type}"

    def features(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        with torch.inference_mode():
            if self.device.type == "cuda":
                x = x.pin_memory().to(self.device, non_blocking=True).contiguous(
                    memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=self.autocast_dtype):
                    out = self.model.features(x)
                return out.float().cpu()
            return self.model.features(x)


class OnnxBackend:
    """ONNX Runtime on the CPU, with the exported graph cached per model file hash."""

    def __init__(self, model: CxrClassifier, *, input_size: int, model_sha256: str,
                 cache_dir: Path, threads: int | None = None):
        import onnxruntime as ort

        self.path = export_features_onnx(model, input_size=input_size, cache_dir=cache_dir,
                                         key=model_sha256)
        st = self.path.stat()
        self._identity = f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
        #: True when this exact cached graph was checked against torch before (see mark_verified).
        self.verified = _read_marker(self.path) == self._marker()
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only: no optimizer chatter on the user's terminal
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads or max(1, _physical_cores())
        opts.inter_op_num_threads = 1
        # No busy-waiting between runs: the head and Grad-CAM run in torch, and decode workers
        # share the cores; spinning ORT threads would starve them (measured in bench_engine).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        self.name = "onnxruntime-cpu"

    def _marker(self) -> dict[str, str]:
        import onnxruntime as ort

        return {"graph": self._identity, "onnxruntime": ort.__version__}

    def mark_verified(self) -> None:
        """Record that this cached graph agrees with torch (atomic; a failure only costs a re-check)."""
        if self.verified:
            return
        try:
            from cxr_desktop.atomic import write_text_atomic

            write_text_atomic(_marker_path(self.path), json.dumps(self._marker()))
            self.verified = True
        except OSError:
            log.info("could not record the ONNX check for %s", self.path.name)

    def features(self, batch: np.ndarray) -> torch.Tensor:
        x = np.ascontiguousarray(batch, dtype=np.float32)
        (out,) = self.session.run(None, {"input": x})
        return torch.from_numpy(out)


def _marker_path(graph: Path) -> Path:
    return graph.with_name(graph.name + ".verified.json")


def _read_marker(graph: Path) -> dict[str, str] | None:
    try:
        data = json.loads(_marker_path(graph).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _physical_cores() -> int:
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except Exception:
        return os.cpu_count() or 1


def export_features_onnx(model: CxrClassifier, *, input_size: int, cache_dir: Path, key: str) -> Path:
    """Export the backbone to ONNX once per (model hash, input size); atomic write."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / f"features-{key[:24]}-{input_size}-torch{torch.__version__.split('+')[0]}.onnx"
    if target.exists() and target.stat().st_size > 0:
        return target
    fe = FeatureExtractor(model).eval().cpu()
    dummy = torch.zeros(1, 3, input_size, input_size)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".onnx.tmp")
    os.close(fd)
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                fe, (dummy,), tmp, input_names=["input"], output_names=["features"],
                dynamic_axes={"input": {0: "n"}, "features": {0: "n"}},
                opset_version=17, dynamo=False,
            )
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("exported backbone to ONNX: %s", target.name)
    return target
