"""ImageNet initial weights, found offline only, and new (untrained) models.

Nothing here downloads: the app runs on hospital machines without internet.
Weights are looked for in ``$CXR_WEIGHTS_DIR`` (an administrator's folder; several
folders may be joined with ``os.pathsep``), then in the user data folder's
``weights/`` (where ``cxr-model weights --download`` / ``--import`` and the wizard's
buttons put them, see :mod:`cxr_desktop.model.weights_download`), and then in the
torch hub cache (``torch.hub.get_dir()/checkpoints``, which honours ``TORCH_HOME``),
under torchvision's file names.

Checksums: torchvision names its files ``resnet50-<first 8 hex of sha256>.pth``;
that prefix is checked, or the full sha256 when one is given. A file whose name
carries no checksum and for which none is given is loaded but recorded as
*unverified* (with a warning on the card): initial weights only set the starting
point of training, and the finished model file records its own sha256, so
refusing would only block administrators with their own copies. A checksum that
is present and wrong is always refused.

A CXR Review model file can be the starting point too (fine-tuning a model): its
body is loaded and the new card records the lineage (parent, ancestors,
demonstration flag, warnings; :mod:`cxr_desktop.model.lineage`).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from cxr_desktop.errors import ModelFileError
from cxr_desktop.model.architecture import CxrClassifier, build_classifier
from cxr_desktop.model.card import ModelCard, new_card, software_versions, utc_now_iso
from cxr_desktop.model.checkpoint_convert import extract_state_dict
from cxr_desktop.model.modelfile import (
    CARD_KEY,
    file_sha256,
    load_model,
    nonfinite_keys,
    read_card,
    resolve_head,
    sniff_format,
)

WEIGHTS_DIR_ENV = "CXR_WEIGHTS_DIR"
IMAGENET_FILES: dict[str, str] = {  # preferred first
    "IMAGENET1K_V2": "resnet50-11ad3fa6.pth",
    "IMAGENET1K_V1": "resnet50-0676ba61.pth",
}
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.")  # torchvision's convention
_TORCHVISION_NAME = re.compile(r"^resnet50-[a-f0-9]{8,64}\.pth$")
_IGNORED_PREFIXES = ("fc.", "head.", "extra.")


@dataclass(frozen=True)
class InitialWeights:
    """Where a new model's weights came from (stored in the card's provenance)."""

    source: str  # "imagenet" (torchvision-named file), "file" (other file, also a model file) or "random"
    file_name: str | None = None
    sha256: str | None = None
    verified: bool = False
    variant: str | None = None  # "IMAGENET1K_V2" etc. for torchvision files
    warning: str | None = None
    ignored_keys: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ignored_keys"] = list(self.ignored_keys)
        return d


def user_weights_dir() -> Path:
    """The user data folder's ``weights/``: where downloaded or imported weights go."""
    from cxr_desktop.paths import data_dir

    return data_dir() / "weights"


def search_dirs() -> list[Path]:
    """Folders searched for ImageNet weights, in order: ``$CXR_WEIGHTS_DIR``, user data, torch hub cache."""
    dirs = [Path(d).expanduser() for d in os.environ.get(WEIGHTS_DIR_ENV, "").split(os.pathsep) if d]
    dirs.append(user_weights_dir())
    dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    return dirs


def find_imagenet_weights() -> Path | None:
    """The first torchvision ResNet50 weight file in :func:`search_dirs`, or None.

    In each folder the known files (:data:`IMAGENET_FILES`, V2 first) come first,
    then any other ``resnet50-<sha256 prefix>.pth`` (torchvision's naming, so the
    checksum can still be verified).
    """
    for d in search_dirs():
        for file_name in IMAGENET_FILES.values():
            if (d / file_name).is_file():
                return d / file_name
        try:
            others = sorted(f for f in d.iterdir() if _TORCHVISION_NAME.match(f.name) and f.is_file())
        except OSError:  # folder absent or unreadable
            continue
        if others:
            return others[0]
    return None


@dataclass(frozen=True)
class FoundWeights:
    """A torchvision-named ResNet50 weight file in one of :func:`search_dirs` (for status displays)."""

    path: Path
    size: int
    checksum_ok: bool
    variant: str | None


def list_weights(verify: bool = True) -> list[tuple[Path, list[FoundWeights], list[Path]]]:
    """Per search folder: the weight files there (checksum-checked when ``verify``) and partial downloads."""
    out = []
    for d in search_dirs():
        try:
            entries = sorted(d.iterdir())
        except OSError:
            out.append((d, [], []))
            continue
        files = []
        for f in entries:
            if not (_TORCHVISION_NAME.match(f.name) and f.is_file()):
                continue
            prefix = _HASH_IN_NAME.search(f.name).group(1)  # type: ignore[union-attr]  # the name pattern has it
            ok = file_sha256(f).startswith(prefix) if verify else True
            variant = next((v for v, n in IMAGENET_FILES.items() if n == f.name), None)
            files.append(FoundWeights(f, f.stat().st_size, ok, variant))
        parts = [f for f in entries if f.name.endswith(".part") and f.is_file()]
        out.append((d, files, parts))
    return out


def _not_found_text() -> str:
    looked = ", ".join(str(d) for d in search_dirs())
    return (
        f"ImageNet weights were not found offline (looked in {looked} for "
        f"{' or '.join(IMAGENET_FILES.values())})"
    )


def _verify(p: Path, digest: str, expected_sha256: str | None) -> tuple[bool, str | None]:
    if expected_sha256:
        want = expected_sha256.strip().lower()
        if digest != want:
            raise ModelFileError(
                f"The weights file's sha256 ({digest[:16]}...) does not match the expected one "
                f"({want[:16]}...). The file is damaged or not the intended one; copy it again.",
                p,
            )
        return True, None
    m = _HASH_IN_NAME.search(p.name)
    if m:
        if not digest.startswith(m.group(1)):
            raise ModelFileError(
                f"The file name says its sha256 starts with {m.group(1)}, but the content's starts "
                f"with {digest[:len(m.group(1))]}: the file is damaged, incomplete or renamed. Delete "
                "it and copy the original torchvision file again. (If that part of the name is not "
                "a checksum, rename the file or give its expected sha256.)",
                p,
            )
        return True, None
    return False, (
        f"The initial weights file {p.name} carries no checksum in its name and none was given, so "
        f"it was loaded unverified (sha256 {digest}). Give its expected sha256 to verify it."
    )


def model_file_card(p: Path) -> ModelCard | None:
    """The card of a CXR Review model file, None for other weight files.

    A file that carries a card which cannot be read is refused: training from it
    would lose its lineage and warnings.
    """
    try:
        with open(p, "rb") as fh:
            if sniff_format(fh.read(9)) != "safetensors":
                return None
        from safetensors import safe_open

        with safe_open(str(p), "pt") as f:
            meta = f.metadata() or {}
    except Exception:  # unreadable or not safetensors after all: _read_weights says why
        return None
    if CARD_KEY not in meta:
        return None
    return read_card(p)


def _read_weights(p: Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors or ``torch.load(weights_only=True)``; never unrestricted pickle."""
    with open(p, "rb") as fh:
        kind = sniff_format(fh.read(9))
    try:
        if kind == "safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(p))
        else:
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelFileError(
            f"The weights file could not be read safely ({exc.__class__.__name__}): it is damaged, or "
            "it holds objects other than tensors (refused, since pickle can execute code).",
            p,
        ) from None
    sd = extract_state_dict(obj, p)
    if all(k.startswith(("body.", "head.", "extra.")) for k in sd):  # a CXR Review model file
        sd = {k[len("body."):] if k.startswith("body.") else k: v for k, v in sd.items()}
    return sd


def load_imagenet_into(
    model: CxrClassifier, path: str | os.PathLike[str] | None = None, *, expected_sha256: str | None = None
) -> InitialWeights:
    """Load ResNet50 body weights (``fc.*`` ignored) into ``model.body``, checksum first.

    ``path=None`` searches offline (:func:`find_imagenet_weights`). Raises
    :class:`ModelFileError` when no file is found, the checksum is wrong, or the
    tensors do not fit a ResNet50 body (missing/unexpected keys, shapes, NaN).
    """
    if path is None:
        found = find_imagenet_weights()
        if found is None:
            raise ModelFileError(
                _not_found_text() + ". Run 'cxr-model weights --download' (or '--import FILE'), or place the "
                f"torchvision file in ${WEIGHTS_DIR_ENV}."
            )
        path = found
    p = Path(path)
    if not p.is_file():
        raise ModelFileError("The initial weights file does not exist. Check the path.", p)
    parent = model_file_card(p)
    if parent is not None and not expected_sha256:
        # a CXR Review model file: fully verified by load_model (which hashes it once); the lineage records its sha256
        verified, warning = False, None
        loaded = load_model(p)
        digest = loaded.sha256
        sd = {k[len("body."):]: v for k, v in loaded.model.state_dict().items() if k.startswith("body.")}
    else:
        digest = file_sha256(p)
        verified, warning = _verify(p, digest, expected_sha256)
        sd = _read_weights(p)
    ignored = tuple(sorted(k for k in sd if k.startswith(_IGNORED_PREFIXES)))
    sd = {k: v for k, v in sd.items() if not k.startswith(_IGNORED_PREFIXES)}
    expected = model.body.state_dict()
    missing = [k for k in expected if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in expected]
    if missing or unexpected:
        raise ModelFileError(
            f"The weights file is not a torchvision ResNet50 state dict: {len(missing)} tensors missing "
            f"({', '.join(missing[:3])}), {len(unexpected)} unexpected ({', '.join(unexpected[:3])}).",
            p,
        )
    wrong = [k for k in sd if tuple(sd[k].shape) != tuple(expected[k].shape)]
    if wrong:
        raise ModelFileError(
            f"{len(wrong)} tensors in the weights file have the wrong shape for ResNet50 "
            f"(e.g. {wrong[0]}: {list(sd[wrong[0]].shape)}).",
            p,
        )
    if nonfinite_keys(sd):
        raise ModelFileError("The weights file contains NaN or infinite values; it cannot be used.", p)
    model.body.load_state_dict(
        {k: (v.to(expected[k].dtype) if v.is_floating_point() else v) for k, v in sd.items()}, strict=False
    )
    variant = next((v for v, n in IMAGENET_FILES.items() if n == p.name), None)
    return InitialWeights(
        source="imagenet" if _TORCHVISION_NAME.match(p.name) else "file",
        file_name=p.name,
        sha256=digest,
        verified=verified,
        variant=variant,
        warning=warning,
        ignored_keys=ignored,
    )


def init_model(
    *,
    classes: Sequence[str],
    positive_class: str | None = None,
    weights: str | os.PathLike[str] = "imagenet",
    input_size: int = 224,
    head: str | Mapping[str, Any] | None = None,
    name: str = "untrained",
    seed: int | None = None,
    expected_sha256: str | None = None,
) -> tuple[CxrClassifier, ModelCard]:
    """A new, untrained classifier and its card.

    ``weights``: ``"imagenet"`` (offline search; random with a card warning if absent),
    ``"none"`` (random, with a warning), or a path to a weights file (checksum as in
    :func:`load_imagenet_into`). A weights file that is present but wrong is refused.
    A CXR Review model file passes on its lineage (:mod:`cxr_desktop.model.lineage`).
    """
    classes = list(classes)
    spec = resolve_head(head)
    # bad classes / sizes fail here (ValueError), before any work
    card = new_card(name=name, classes=classes, positive_class=positive_class, head=spec, input_size=input_size)
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        model = build_classifier(num_classes=len(classes), head=spec)
    warnings = [
        "Untrained: this model has not been trained on chest X-rays; its outputs are meaningless "
        "until it is trained with cxr-train."
    ]
    w = str(weights)
    parent: ModelCard | None = None
    if w == "imagenet":
        if find_imagenet_weights() is None:
            record = InitialWeights(
                source="random",
                warning=_not_found_text() + "; the model starts from random weights — training will need "
                f"much more data and time. Run 'cxr-model weights --download' (or '--import FILE' with a copy "
                f"of {IMAGENET_FILES['IMAGENET1K_V2']}), or ask an administrator to place it in ${WEIGHTS_DIR_ENV}.",
            )
        else:
            record = load_imagenet_into(model)
    elif w == "none":
        record = InitialWeights(
            source="random",
            warning="No ImageNet initialisation was requested; the model starts from random weights — "
            "training will need much more data and time.",
        )
    else:
        record = load_imagenet_into(model, Path(weights), expected_sha256=expected_sha256)
        parent = model_file_card(Path(weights))
    if record.warning:
        warnings.append(record.warning)
    card.warnings = warnings
    card.provenance = {
        "source": "initialised",
        "initial_weights": record.to_dict(),
        "created": utc_now_iso(),
        "software": software_versions(),
        "seed": seed,
    }
    if parent is not None and record.sha256:
        from cxr_desktop.model.lineage import apply, inherit_from

        apply(card, inherit_from(parent, record.sha256))
    return model.eval(), card
