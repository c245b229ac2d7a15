"""Choosing where the model runs, and saying why."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceInfo:
    """Where inference runs: ``kind`` is "cuda" or "cpu"; ``reason`` is shown in the UI."""

    kind: str
    name: str
    reason: str

    @property
    def label(self) -> str:
        return f"CUDA GPU: {self.name}" if self.kind == "cuda" else f"CPU ({self.name})"


def cpu_name() -> str:
    import os
    import platform

    proc = platform.processor() or platform.machine()
    return f"{proc}, {os.cpu_count() or 1} threads"


def select_device(requested: str = "auto") -> DeviceInfo:
    """Resolve "auto" | "cpu" | "cuda" to a device, with the reason for the choice."""
    import os

    import torch

    requested = (requested or "auto").lower()
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"Unknown device {requested!r}: use auto, cpu or cuda")
    if requested == "cpu":
        return DeviceInfo("cpu", cpu_name(), "CPU requested")
    if os.environ.get("CXR_BUNDLE_VARIANT") == "cpu":
        return DeviceInfo("cpu", cpu_name(), "this is the CPU-only build (install the CUDA build to use a GPU)")
    try:
        ok = torch.cuda.is_available()
    except Exception:  # a broken driver must not stop the app
        ok = False
    if ok:
        return DeviceInfo("cuda", torch.cuda.get_device_name(0), "CUDA available")
    why = "no CUDA GPU or driver found" if torch.version.cuda else "this build of PyTorch has no CUDA support"
    if requested == "cuda":
        return DeviceInfo("cpu", cpu_name(), f"CUDA requested but {why}; using the CPU")
    return DeviceInfo("cpu", cpu_name(), why)
