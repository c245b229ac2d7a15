"""What goes into the PyInstaller bundle, per variant; plain Python so tests can check it.

``build.spec`` imports this file (by path: ``packaging/`` is deliberately not a Python
package, because a package of that name would shadow PyPA's ``packaging`` library).

Variants (``CXR_BUNDLE_VARIANT``):

* ``cpu`` (default) - runs on the CPU only. The PyPI torch wheel links the CUDA runtime,
  cuBLAS, cuFFT, cuSPARSE(Lt), cuRAND, NCCL, NVRTC, nvSHMEM and the *stub* ``libcudnn.so.9``
  at import, so those stay; what torch only ``dlopen``s on a GPU run goes: the cuDNN
  engine/sub-libraries, cuSOLVER (via the lazily loaded ``libtorch_cuda_linalg.so``),
  profiling/JIT side libraries, nvSHMEM transports, and triton. A GPU is hidden from this
  build at start-up (runtime hook), so it can never try to load what was left out.
* ``cuda`` - everything torch can use on an NVIDIA GPU.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path, PurePosixPath

VARIANTS = ("cpu", "cuda")
DEFAULT_VARIANT = "cpu"
APP_NAME = "cxr-review"
EXE_NAME = "cxr-desktop"

# Modules the app never imports in either variant (dev/test tools and heavy optional
# imports that torch / matplotlib only try).
EXCLUDED_MODULES = [
    "tkinter",
    "_tkinter",
    "IPython",
    "jupyter_client",
    "notebook",
    "pytest",
    "pytestqt",
    "_pytest",
    "pytorch_grad_cam",
    "ttach",
    "sklearn",
    "scipy",
    "pandas",
    "tensorflow",
    "tensorboard",
    "PyInstaller",
]
EXCLUDED_MODULES_CPU = ["triton"]

# Bundle paths (POSIX, relative to the bundle's _internal dir) left out of the cpu variant.
TRIM_CPU_PATTERNS = [
    # cuDNN: keep only the stub libcudnn.so.9 that libtorch_cuda links; its engines are dlopen'ed.
    "nvidia/cudnn/lib/libcudnn_*",
    # cuSOLVER is only reached through libtorch_cuda_linalg.so, which torch dlopens on GPU linalg.
    "torch/lib/libtorch_cuda_linalg.so",
    "nvidia/cu13/lib/libcusolver*",
    "nvidia/cu1[0-9]/lib/libcusolver*",
    "nvidia/cusolver/*",
    # NVRTC's alternative build and builtins (JIT on a GPU), profiler/perf/checkpoint side libraries.
    "nvidia/*/lib/libnvrtc.alt.so*",
    "nvidia/*/lib/libnvrtc-builtins*",
    "nvidia/*/lib/libnvperf*",
    "nvidia/*/lib/libpcsamplingutil*",
    "nvidia/*/lib/libcheckpoint*",
    "nvidia/*/lib/libnvblas*",
    "nvidia/*/lib/libcufftw*",
    "nvidia/*/lib/libcufile_rdma*",
    "nvidia/*/lib/libnvtx3interop*",
    "nvidia/*/include/*",
    "nvidia/*/bin/*",
    # nvSHMEM: keep libnvshmem_host (linked); transports/bootstraps are plugins for multi-GPU jobs.
    "nvidia/nvshmem/lib/nvshmem_*",
    "nvidia/nvshmem/bin/*",
    "nvidia/nvshmem/share/*",
    # triton (the torch.compile GPU compiler) and its bundled CUDA toolchain.
    "triton/*",
]

# Host desktop-stack libraries that PyInstaller would copy from the build machine. They must
# match the user's X server / fonts / D-Bus, so the bundle uses the host's copies and the .deb
# declares them (build_deb.sh finds the packages with ldd). Matched on the file name only.
HOST_LIBRARY_PATTERNS = [
    "libxcb*.so*",
    "libX11*.so*",
    "libXau.so*",
    "libXdmcp.so*",
    "libxkbcommon*.so*",
    "libfontconfig.so*",
    "libfreetype.so*",
    "libdbus-1.so*",
    "libglib-2.0.so*",
    "libgthread-2.0.so*",
    "libwayland-*.so*",
]

# Files that must be in every bundle (checked after the build by build_bundle.sh, and by the
# tests against the installed wheels): torchvision 0.29's compiled ops are *_stable.so, which
# the stock hooks miss ("operator torchvision::nms does not exist").
TORCHVISION_BINARIES = ["_C_stable.so", "image_stable.so"]

# pydicom finds its JPEG / JPEG-LS / JPEG 2000 / RLE plugins through entry points, so both the
# modules and the distributions' metadata (entry_points.txt) must be bundled.
DICOM_PLUGIN_DISTRIBUTIONS = ["pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle"]
DICOM_PLUGIN_MODULES = ["pylibjpeg", "libjpeg", "openjpeg", "rle", "_libjpeg", "_openjpeg"]

# Modules that only compiled code or a lazy import inside a function brings in, which import tracing
# can miss. imagecodecs' _jpeg8 imports _shared_cython from C: without it the cut 12/16-bit JPEG probe
# (imaging/integrity.py) was quietly skipped in the bundle; the frozen self-test's component check
# (cxr_desktop/runtime_components.py) found it.
LAZY_IMPORTS = ["imagecodecs._jpeg8", "imagecodecs._shared", "imagecodecs._shared_cython", "jpeg_ls", "simplejpeg",
                "dicomanonymizer.dicom_anonymization_databases.dicomfields_2026c"]
# Distributions whose metadata is read at run time (their versions, e.g. in a DICOMweb User-Agent).
RUNTIME_METADATA = ["dicomweb-client", "highdicom", "pynetdicom", "imagecodecs", "pyjpegls", "simplejpeg"]


def variant_from_env(env: dict[str, str] | None = None) -> str:
    """The requested variant; unknown values are an error, not a silent default."""
    env = os.environ if env is None else env
    value = (env.get("CXR_BUNDLE_VARIANT") or DEFAULT_VARIANT).strip().lower()
    if value not in VARIANTS:
        raise ValueError(f"CXR_BUNDLE_VARIANT must be one of {', '.join(VARIANTS)} (got {value!r})")
    return value


def excluded_modules(variant: str) -> list[str]:
    """Modules PyInstaller must not collect for ``variant``."""
    return EXCLUDED_MODULES + (EXCLUDED_MODULES_CPU if variant == "cpu" else [])


def _norm(dest: str) -> str:
    return str(PurePosixPath(dest.replace("\\", "/")))


def is_trimmed(dest: str, variant: str) -> bool:
    """True when the bundle path ``dest`` is left out of ``variant``."""
    if variant != "cpu":
        return False
    d = _norm(dest)
    return any(fnmatch.fnmatchcase(d, pat) for pat in TRIM_CPU_PATTERNS)


def is_host_library(dest: str, source: str = "") -> bool:
    """True for a desktop-stack library taken from the build host's system directories."""
    name = PurePosixPath(_norm(dest)).name
    if not any(fnmatch.fnmatchcase(name, pat) for pat in HOST_LIBRARY_PATTERNS):
        return False
    # Only libraries PyInstaller pulled in from the system; never anything a wheel ships.
    src = _norm(source) if source else ""
    return not src or "site-packages" not in src


def keep_entry(dest: str, source: str, variant: str, *, linux: bool, typecode: str = "BINARY") -> bool:
    """The single filter build.spec applies to Analysis.binaries and .datas.

    For a ``SYMLINK`` entry ``source`` is the link target relative to the link's folder: the
    link goes when its target is trimmed, and never counts as a host library (it points into
    the bundle, e.g. Pillow's private ``libxcb-<hash>.so``).
    """
    if is_trimmed(dest, variant):
        return False
    if typecode == "SYMLINK":
        target = _norm(str(PurePosixPath(_norm(dest)).parent / _norm(source)))
        return not is_trimmed(os.path.normpath(target), variant)
    if linux and is_host_library(dest, source):
        return False
    return True


def resource_datas(root: Path, staged: Path | None) -> list[tuple[str, str]]:
    """(source, dest-dir) pairs for ``resources/``: the repo's icons and models, plus the staged
    sample studies and transfer-syntax set (built by collect_samples.py into the build dir)."""
    out: list[tuple[str, str]] = []
    res = root / "resources"
    for sub in ("icons", "models"):
        d = res / sub
        if not d.is_dir():
            continue  # the demonstration model may not exist yet: the app then says so
        for f in sorted(d.rglob("*")):
            if f.is_file() and not f.name.startswith(".") and not f.name.endswith((".tmp", ".partial")):
                out.append((str(f), str(PurePosixPath("resources") / f.parent.relative_to(res).as_posix())))
    if staged is not None and staged.is_dir():
        for f in sorted(staged.rglob("*")):
            if f.is_file():
                out.append((str(f), str(PurePosixPath("resources") / f.parent.relative_to(staged).as_posix())))
    return out
