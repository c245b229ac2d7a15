"""Where the app keeps user data, caches and bundled resources."""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "cxr-review"


def cache_dir() -> Path:
    """User cache (exported ONNX graphs, thumbnails); ``CXR_CACHE_DIR`` overrides."""
    env = os.environ.get("CXR_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir(APP_NAME, appauthor=False))


def data_dir() -> Path:
    """User data (models the user trained or imported, screening results); ``CXR_DATA_DIR`` overrides."""
    env = os.environ.get("CXR_DATA_DIR")
    if env:
        return Path(env)
    from platformdirs import user_data_dir

    return Path(user_data_dir(APP_NAME, appauthor=False))


def resources_dir() -> Path:
    """The bundled ``resources/`` folder (repo checkout or PyInstaller bundle)."""
    env = os.environ.get("CXR_RESOURCES_DIR")
    if env:
        return Path(env)
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        return Path(frozen) / "resources"
    return Path(__file__).resolve().parent.parent / "resources"


def default_model_path() -> Path:
    """The bundled demonstration model."""
    return resources_dir() / "models" / "demo-cxr.safetensors"


def sample_studies_dir() -> Path:
    """Sample studies: bundled copies in a packaged build, else ../shared/data/cxr beside the repo."""
    bundled = resources_dir() / "samples"
    if bundled.is_dir():
        return bundled
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cxr"
