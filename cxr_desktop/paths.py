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


SAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".tif", ".tiff")


def shared_data_dir() -> Path:
    """The developers' shared test data: ``CXR_SHARED_DATA`` or ``../shared/data`` beside the repository."""
    env = os.environ.get("CXR_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def sample_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder`` (by suffix; no decoding), sorted; [] if it is not a folder."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SAMPLE_SUFFIXES)


def sample_studies_dir() -> Path:
    """Where the sample studies are: ``resources/samples`` (in the repository and in a packaged build).

    Falls back to the shared data's ``cxr/`` folder only when there is no bundled folder at all
    (e.g. an install without resources); when neither exists, the bundled path is returned and
    callers say that no samples were found (see :func:`sample_files`).
    """
    bundled = resources_dir() / "samples"
    if bundled.is_dir():
        return bundled
    shared = shared_data_dir() / "cxr"
    if sample_files(shared):
        return shared
    return bundled


def path_inside(out_dir: str | os.PathLike[str], relpath: str, folder_name: str) -> Path:
    """``relpath`` resolved inside ``out_dir``; ValueError when it leads outside (``..``, absolute, links).

    Outputs mirror the input's relative path, so a crafted path must not write elsewhere.
    """
    base = Path(out_dir).resolve()
    target = (base / relpath).resolve()
    if base != target and base not in target.parents:
        raise ValueError(f"{relpath!r} leads outside the {folder_name}")
    return target
