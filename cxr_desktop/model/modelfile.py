"""The model file: one safetensors file holding the weights and the model card.

Why safetensors: it is plain data (a JSON header plus raw tensor bytes), so
opening a model file can never execute code. PyTorch pickle checkpoints
(``.pt``/``.pth``/``.ckpt``) can, so they are never opened as model files;
:func:`cxr_desktop.model.checkpoint_convert.convert_checkpoint` turns a plain
state dict into a model file once, through ``torch.load(weights_only=True)``,
which refuses anything but tensors.

Layout: the model's ``state_dict`` tensors under their own names, optional
extra tensors (e.g. training-feature statistics) under ``extra.<name>``, and
metadata ``{"format": "cxr-review-model", "cxr_card": <card JSON>}``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Literal, Mapping, Sequence, TypeVar

import torch

from cxr_desktop.errors import ModelFileError
from cxr_desktop.model.bounded_json import loads_bounded
from cxr_desktop.model.architecture import DEFAULT_HEAD, HEAD_TYPES, CxrClassifier, build_classifier
from cxr_desktop.model.card import MAX_CARD_BYTES, MAX_CARD_DEPTH, ModelCard

FORMAT_KEY = "format"
FORMAT_NAME = "cxr-review-model"
CARD_KEY = "cxr_card"
EXTRA_PREFIX = "extra."
MAX_HEADER_BYTES = 8 * 1024 * 1024  # a ResNet50 file's header is ~40 kB (card included)
MAX_HEADER_DEPTH = 8  # a safetensors header is 3 levels deep (the card is a string inside it)
MAX_FILE_BYTES = 4 * 1024**3  # a ResNet50 file is ~100 MB; refuse to read gigabytes by mistake
HEAD_PRESETS: dict[str, dict[str, Any]] = {
    "linear": dict(DEFAULT_HEAD),
    "mlp": {"type": "gap_mlp", "hidden": [256], "dropout": 0.5},
}

_CHUNK = 16 * 1024 * 1024
_DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
_INT_DTYPES = {"I64", "I32", "I16", "I8", "U8", "U16", "U32", "U64"}
_REEXPORT = "Re-export the model with 'cxr-train' or 'cxr-model', or copy the file again from its source."
WEIGHTS_VERIFIED = "verified"
WEIGHTS_NO_CHECKSUM = "not verified (no checksum stored)"

FileKind = Literal["safetensors", "zip", "pickle", "empty", "unknown"]
_T = TypeVar("_T")


@dataclass
class LoadedModel:
    """A verified model: ``model`` is fp32 in eval mode; ``sha256`` is of the exact bytes loaded."""

    model: CxrClassifier
    card: ModelCard
    sha256: str
    path: str
    extra_tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    # WEIGHTS_VERIFIED when the tensors match card.tensors_sha256, WEIGHTS_NO_CHECKSUM for older
    # files without one (a mismatch is refused, so there is no third state)
    weights_status: str = WEIGHTS_NO_CHECKSUM

    @property
    def weights_verified(self) -> bool:
        return self.weights_status == WEIGHTS_VERIFIED


@dataclass(frozen=True)
class SafetensorsHeader:
    """A checked safetensors header: tensor entries, text metadata, where the data begins."""

    entries: dict[str, dict[str, Any]]
    metadata: dict[str, str]
    data_start: int


# --------------------------------------------------------------------------- helpers


def resolve_head(head: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """A head spec from a preset name (``"linear"``, ``"mlp"``), a spec dict, or None (linear)."""
    if head is None:
        return dict(DEFAULT_HEAD)
    if isinstance(head, str):
        if head not in HEAD_PRESETS:
            raise ValueError(f"Unknown head {head!r}; choose one of {', '.join(HEAD_PRESETS)}.")
        return json.loads(json.dumps(HEAD_PRESETS[head]))
    spec = dict(head)
    if spec.get("type") not in HEAD_TYPES:
        raise ValueError(f"Unknown head type {spec.get('type')!r}; expected one of {HEAD_TYPES}.")
    return spec


def sniff_format(prefix: bytes) -> FileKind:
    """Recognise a file from its first bytes (at least 9 are needed for safetensors)."""
    if not prefix:
        return "empty"
    if len(prefix) >= 9 and prefix[8:9] == b"{":
        return "safetensors"
    if prefix.startswith(b"PK\x03\x04"):
        return "zip"
    if prefix[0] == 0x80:
        return "pickle"
    return "unknown"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 hex of a regular file, read in chunks up to the size it declares
    (:class:`ModelFileError` for a FIFO, a device or a folder)."""
    digest = hashlib.sha256()
    with _open_regular(Path(path)) as (fh, size):
        left = size
        while left > 0:
            chunk = fh.read(min(_CHUNK, left))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def _not_regular(mode: int) -> str | None:
    """What a file that is not a regular file is ("a named pipe (FIFO)", ...); None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode):
        return "a character device (like /dev/zero)"
    if stat.S_ISBLK(mode):
        return "a block device (a disk)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _refuse_kind(kind: str, p: Path) -> ModelFileError:
    if kind == "a folder":
        return ModelFileError("This is a folder, not a model file. Choose the .safetensors file inside it.", p)
    return ModelFileError(
        f"This is {kind}, not a model file. Only regular files are opened as models (reading from it "
        "might never end). Choose the .safetensors file itself.",
        p,
    )


def check_path(path: str | os.PathLike[str]) -> Path:
    """The path, if it names an existing regular file (links followed); else a ModelFileError."""
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise ModelFileError("The model file does not exist. Check the path, or choose the file again.", p) from None
    except OSError as exc:
        raise _unreadable(p, exc) from None
    kind = _not_regular(st.st_mode)
    if kind:
        raise _refuse_kind(kind, p)
    return p


@contextlib.contextmanager
def _open_regular(p: Path) -> Iterator[tuple[BinaryIO, int]]:
    """``(file, size)`` for a regular file, checked on the open descriptor.

    Opened non-blocking, so a FIFO swapped in after :func:`check_path` cannot stall the
    open itself; ``fstat`` then refuses anything but a regular file. Reads must stay within
    ``size`` (the size the file declares), so a file that grows is never read without end.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(p, flags)
    try:
        st = os.fstat(fd)
        kind = _not_regular(st.st_mode)
        if kind:
            raise _refuse_kind(kind, p)
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fh:
        if st.st_size > MAX_FILE_BYTES:
            raise ModelFileError(
                f"The file is {st.st_size / 1024**3:.1f} GiB, far larger than a ResNet50 model file; "
                "it is not a CXR Review model.",
                p,
            )
        yield fh, st.st_size


def _read_exactly(fh: BinaryIO, size: int, p: Path) -> bytes:
    data = fh.read(size)
    if len(data) != size:
        raise ModelFileError(f"The file changed while it was being read (it became shorter). {_REEXPORT}", p)
    return data


def read_regular(p: Path, read: Callable[[BinaryIO, int, Path], _T]) -> _T:
    """``read(file, size, p)`` on ``p`` opened as a regular file (see :func:`_open_regular`);
    an OS error (permissions, I/O) becomes a :class:`ModelFileError` saying the file cannot be read."""
    try:
        with _open_regular(p) as (fh, size):
            return read(fh, size, p)
    except OSError as exc:
        raise _unreadable(p, exc) from None


def _unreadable(p: Path, exc: OSError) -> ModelFileError:
    why = exc.strerror or exc.__class__.__name__
    return ModelFileError(
        f"The model file cannot be read ({why}). Check that it exists and that you may read it.", p
    )


def _pickle_refusal(kind: FileKind, p: Path) -> ModelFileError:
    style = "ZIP-packed pickle" if kind == "zip" else "pickle"
    return ModelFileError(
        f"This is a PyTorch checkpoint ({style} format, as written by torch.save), not a CXR Review "
        "model file. Pickle files can execute code when opened, so CXR Review never opens them as "
        "models. If it holds a plain state dict from the research scripts, convert it once with "
        f"'cxr-model convert {p.name} --classes A,B --out model.safetensors'.",
        p,
    )


def kind_refusal(kind: FileKind, p: Path, size: int) -> ModelFileError:
    """Why a file of this kind (see :func:`sniff_format`) is not a model file, and what to do."""
    if kind == "empty":
        return ModelFileError(f"The model file is empty (0 bytes). {_REEXPORT}", p)
    if size < 9:
        return ModelFileError(
            f"The file is only {size} bytes long: it is truncated or not a model file. {_REEXPORT}", p
        )
    if kind in ("zip", "pickle"):
        return _pickle_refusal(kind, p)
    return ModelFileError(
        "This is not a CXR Review model file (it does not start like a safetensors file); it may be "
        f"damaged or another kind of file. Model files end in .safetensors. {_REEXPORT}",
        p,
    )


def read_header(fh: BinaryIO, size: int, p: Path) -> SafetensorsHeader:
    """Parse and check a safetensors header; every offset must lie inside the file."""
    first = fh.read(9)
    kind = sniff_format(first)
    if kind != "safetensors":
        raise kind_refusal(kind, p, size)
    (n,) = struct.unpack("<Q", first[:8])
    if n > MAX_HEADER_BYTES:
        raise ModelFileError(
            f"The file is corrupt or not a CXR Review model: its header claims {n:,} bytes, more than "
            f"the {MAX_HEADER_BYTES:,} a model file's header can have. {_REEXPORT}",
            p,
        )
    if n < 2 or 8 + n > size:
        raise ModelFileError(
            f"The file is truncated or corrupt: its header claims {n} bytes but the file has only "
            f"{size} bytes. {_REEXPORT}",
            p,
        )
    raw = first[8:] + fh.read(n - 1)
    if len(raw) != n:
        raise ModelFileError(f"The file ended while its header was being read (truncated). {_REEXPORT}", p)
    try:
        header = loads_bounded(raw, what="the file's header", max_bytes=MAX_HEADER_BYTES,
                               max_depth=MAX_HEADER_DEPTH)
    except ModelFileError as exc:
        raise ModelFileError(f"{exc.message.replace('is not valid JSON', 'is corrupt (not valid JSON)')} "
                             f"{_REEXPORT}", p) from None
    if not isinstance(header, dict):
        raise ModelFileError(f"The file's header is corrupt (not a JSON object). {_REEXPORT}", p)
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ModelFileError(f"The file's metadata is corrupt (not text entries). {_REEXPORT}", p)
    data_len = size - 8 - n
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        try:
            dtype, shape, (begin, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            if not all(isinstance(d, int) and d >= 0 for d in shape) or not (
                isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end
            ):
                raise ValueError
        except (TypeError, KeyError, ValueError):
            raise ModelFileError(f"The header entry for {name!r} is corrupt. {_REEXPORT}", p) from None
        if dtype not in _DTYPE_SIZES:
            raise ModelFileError(f"Tensor {name!r} has an unsupported data type {dtype!r}. {_REEXPORT}", p)
        if end > data_len:
            raise ModelFileError(
                f"The file is truncated or corrupt: tensor {name!r} lies beyond the end of the file "
                f"(data out of range). {_REEXPORT}",
                p,
            )
        if end - begin != math.prod(shape) * _DTYPE_SIZES[dtype]:
            raise ModelFileError(
                f"The file is corrupt: tensor {name!r} has {end - begin} bytes but its shape needs "
                f"{math.prod(shape) * _DTYPE_SIZES[dtype]}. {_REEXPORT}",
                p,
            )
        spans.append((begin, end, name))
    spans.sort()
    for (_, end_a, a), (begin_b, _, b) in zip(spans, spans[1:]):
        if begin_b < end_a:
            raise ModelFileError(f"The file is corrupt: tensors {a!r} and {b!r} overlap. {_REEXPORT}", p)
    return SafetensorsHeader(entries=header, metadata=meta, data_start=8 + n)


def _card_from_metadata(meta: Mapping[str, str], p: Path) -> ModelCard:
    fmt = meta.get(FORMAT_KEY)
    if CARD_KEY not in meta:
        if fmt == FORMAT_NAME:
            raise ModelFileError(f"The model file has lost its model card (no 'cxr_card' metadata). {_REEXPORT}", p)
        raise ModelFileError(
            "This safetensors file is not a CXR Review model: it has no model card ('cxr_card' "
            "metadata). If it holds ResNet50 weights, make a model file from it with "
            f"'cxr-model convert {p.name} --classes A,B --out model.safetensors'.",
            p,
        )
    if fmt is not None and fmt != FORMAT_NAME:
        raise ModelFileError(
            f"The file declares format {fmt!r}, not {FORMAT_NAME!r}; this app cannot use it.", p
        )
    try:
        return ModelCard.from_json(meta[CARD_KEY])
    except ModelFileError as exc:
        raise ModelFileError(exc.message, p) from None


def tensors_digest(items: Iterable[tuple[str, str, Sequence[int], bytes | memoryview]]) -> str:
    """sha256 over ``(name, safetensors dtype, shape, raw bytes)`` of every tensor, in name order.

    Stored on the card as ``tensors_sha256`` when a model is saved and checked when it is
    loaded: one flipped bit in any weight, or a changed name, type or shape, is a mismatch.
    """
    digest = hashlib.sha256()
    for name, dtype, shape, data in sorted(items, key=lambda item: item[0]):
        digest.update(json.dumps([name, dtype, [int(d) for d in shape]], separators=(",", ":")).encode() + b"\n")
        digest.update(data)
    return digest.hexdigest()


def _file_tensors_digest(header: SafetensorsHeader, data: bytes) -> str:
    view = memoryview(data)
    start = header.data_start
    return tensors_digest(
        (name, e["dtype"], e["shape"], view[start + e["data_offsets"][0]:start + e["data_offsets"][1]])
        for name, e in header.entries.items()
    )


def _check_tensors_digest(card: ModelCard, header: SafetensorsHeader, data: bytes, p: Path) -> str:
    """The weights status; a stored digest that does not match refuses the file."""
    stored = card.tensors_sha256
    if stored is None:
        return WEIGHTS_NO_CHECKSUM
    actual = _file_tensors_digest(header, data)
    if actual != stored:
        raise ModelFileError(
            f"Weights damaged: checksum mismatch. The tensors in this file do not match the sha256 stored on "
            f"its model card (stored {stored[:12]}..., found {actual[:12]}...): the file was changed or "
            "damaged after it was saved, and its scores cannot be trusted. Copy the file again from its "
            "source, or re-export it with 'cxr-train' or 'cxr-model'.",
            p,
        )
    return WEIGHTS_VERIFIED


def _torch_tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    return tensors_digest(
        (name, _TORCH_TO_ST[t.dtype], list(t.shape), _raw_bytes(t)) for name, t in tensors.items()
    )


def _raw_bytes(t: torch.Tensor) -> memoryview:
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()) if flat.numel() else memoryview(b"")


def nonfinite_keys(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of floating tensors holding NaN or infinity."""
    return [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def name_examples(names: Sequence[str], n: int = 3) -> str:
    """The first ``n`` names, for a message ("a, b, c, ...")."""
    shown = ", ".join(list(names)[:n])
    return shown + (", ..." if len(names) > n else "")


def is_batch_counter(key: str) -> bool:
    """A BatchNorm ``num_batches_tracked`` counter (not a weight; older files may lack it)."""
    return key.endswith("num_batches_tracked")


def _build_for_card(card: ModelCard, p: Path | None) -> CxrClassifier:
    try:
        return build_classifier(num_classes=len(card.classes), head=card.head, output_stride=card.output_stride)
    except (ValueError, TypeError) as exc:
        raise ModelFileError(f"The model card describes a classifier this app cannot build ({exc}).", p) from None


def final_head_key(expected: Mapping[str, Any]) -> str:
    """The weight of the head's last layer (the one with one output per class) in a state dict."""
    return [k for k in expected if k.startswith("head.") and k.endswith(".weight")][-1]


def _check_against_architecture(
    shapes: Mapping[str, tuple[int, ...]], dtypes: Mapping[str, str], model: CxrClassifier,
    card: ModelCard, p: Path,
) -> None:
    """Compare the file's tensor names/shapes with the architecture the card describes."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    last = final_head_key(expected)
    got = shapes.get(last)
    if got is not None and len(got) == 2 and got[1] == expected[last][1] and got[0] != expected[last][0]:
        raise ModelFileError(
            f"The model card lists {len(card.classes)} classes ({', '.join(card.classes)}) but the "
            f"classifier head has {got[0]} outputs: the card and the weights do not belong together. "
            f"{_REEXPORT}",
            p,
        )
    missing = [k for k in expected if k not in shapes and not is_batch_counter(k)]
    unexpected = [k for k in shapes if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({name_examples(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({name_examples(unexpected)})")
        raise ModelFileError(
            f"The weights do not match a ResNet50 with a {card.head.get('type')} head: "
            f"{' and '.join(parts)} tensors. {_REEXPORT}",
            p,
        )
    wrong = [k for k in shapes if shapes[k] != expected[k]]
    if wrong:
        k = wrong[0]
        raise ModelFileError(
            f"{len(wrong)} tensors have the wrong shape for the architecture on the model card "
            f"(e.g. {k} is {list(shapes[k])}, expected {list(expected[k])}). {_REEXPORT}",
            p,
        )
    for k, dt in dtypes.items():
        allowed = _INT_DTYPES if is_batch_counter(k) else _FLOAT_DTYPES
        if dt not in allowed:
            raise ModelFileError(f"Tensor {k!r} has data type {dt}, which a weight cannot have. {_REEXPORT}", p)


# --------------------------------------------------------------------------- public API


def read_card(path: str | os.PathLike[str]) -> ModelCard:
    """The card of a model file from its header alone (fast; weights are not checked)."""
    p = check_path(path)
    return _card_from_metadata(read_regular(p, read_header).metadata, p)


def load_model(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> LoadedModel:
    """Load and fully verify a model file; never executes code from the file.

    Raises :class:`ModelFileError` saying what is wrong and what to do.
    """
    p = check_path(path)
    data = read_regular(p, _read_exactly)
    sha = hashlib.sha256(data).hexdigest()
    header = read_header(io.BytesIO(data), len(data), p)
    card = _card_from_metadata(header.metadata, p)
    weights_status = _check_tensors_digest(card, header, data, p)
    model = _build_for_card(card, p)
    model_keys = [k for k in header.entries if not k.startswith(EXTRA_PREFIX)]
    _check_against_architecture(
        {k: tuple(header.entries[k]["shape"]) for k in model_keys},
        {k: header.entries[k]["dtype"] for k in model_keys},
        model, card, p,
    )
    from safetensors.torch import load as st_load

    try:
        tensors = st_load(data)
    except Exception as exc:  # SafetensorError and friends: the header passed our checks, the data did not
        raise ModelFileError(f"The file is corrupt ({exc}). {_REEXPORT}", p) from None
    del data
    state = {k: t for k, t in tensors.items() if not k.startswith(EXTRA_PREFIX)}
    bad = nonfinite_keys(state)
    if bad:
        raise ModelFileError(
            f"The weights contain invalid numbers (NaN or infinity) in {len(bad)} tensors "
            f"(e.g. {name_examples(bad)}). The training run that produced this file diverged; use an "
            "earlier model file or train again.",
            p,
        )
    state = {k: (t.float() if t.is_floating_point() else t) for k, t in state.items()}
    model.load_state_dict(state, strict=False)  # keys were checked above; num_batches_tracked may be absent
    model.to(device).eval()
    extras = {k[len(EXTRA_PREFIX):]: t for k, t in tensors.items() if k.startswith(EXTRA_PREFIX)}
    return LoadedModel(model=model, card=card, sha256=sha, path=str(p), extra_tensors=extras,
                       weights_status=weights_status)


def save_model(
    path: str | os.PathLike[str],
    model: CxrClassifier,
    card: ModelCard,
    *,
    half: bool = False,
    extra_tensors: Mapping[str, torch.Tensor] | None = None,
) -> str:
    """Write ``model`` and ``card`` to one safetensors file atomically; returns its sha256 hex.

    ``half`` stores floating tensors as fp16 (half the size; loaded back as fp32).
    ``extra_tensors`` are stored as ``extra.<name>`` unchanged (never halved).
    The card is stored with ``tensors_sha256`` set (``card`` itself is not changed).
    Raises ``ValueError`` for a model the loader would refuse (mismatched card, NaN weights).
    """
    card.validate()
    num_classes = getattr(model, "num_classes", None)
    if num_classes != len(card.classes):
        raise ValueError(f"The card lists {len(card.classes)} classes but the model has {num_classes} outputs.")
    head_spec = getattr(model, "head_spec", None)
    if json.dumps(head_spec, sort_keys=True) != json.dumps(card.head, sort_keys=True):
        raise ValueError(f"card.head {card.head} differs from the model's head {head_spec}.")
    if getattr(model, "output_stride", 32) != card.output_stride:
        raise ValueError(f"card.output_stride {card.output_stride} differs from the model's "
                         f"{getattr(model, 'output_stride', 32)}.")
    tensors: dict[str, torch.Tensor] = {}
    for k, t in model.state_dict().items():
        t = t.detach().to("cpu")
        if half and t.is_floating_point():
            t = t.half()
        tensors[k] = t.contiguous()
    bad = nonfinite_keys(tensors)
    if bad:
        raise ValueError(f"Refusing to save weights with NaN/inf values (e.g. {name_examples(bad)}).")
    for name, t in (extra_tensors or {}).items():
        if not isinstance(name, str) or not name or not isinstance(t, torch.Tensor):
            raise ValueError(f"extra_tensors must map non-empty names to tensors (got {name!r}).")
        tensors[EXTRA_PREFIX + name] = t.detach().to("cpu").contiguous()
    for name, t in tensors.items():
        if t.dtype not in _TORCH_TO_ST:
            raise ValueError(f"Tensor {name!r} has type {t.dtype}, which a model file cannot store.")
    card = dataclasses.replace(card, tensors_sha256=_torch_tensors_digest(tensors))
    return _atomic_write(Path(path), _serialize(tensors, {FORMAT_KEY: FORMAT_NAME, CARD_KEY: card.to_json()}))


_TORCH_TO_ST = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}


def _serialize(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]) -> Iterator[bytes | memoryview]:
    """Safetensors bytes, deterministically laid out (the library orders metadata at random,
    which would change the sha256 of identical models).

    Order: metadata first, then tensors by decreasing element size and name, so every
    tensor is aligned to its element size; the header is space-padded to 8 bytes.
    """
    for name, t in tensors.items():
        if t.dtype not in _TORCH_TO_ST:
            raise ValueError(f"Tensor {name!r} has type {t.dtype}, which a model file cannot store.")
    order = sorted(tensors, key=lambda k: (-tensors[k].element_size(), k))
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for name in order:
        t = tensors[name]
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": _TORCH_TO_ST[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return _chunks(struct.pack("<Q", len(raw)) + raw, [tensors[k] for k in order])


def _chunks(head: bytes, tensors: Sequence[torch.Tensor]) -> Iterator[bytes | memoryview]:
    yield head
    for t in tensors:
        flat = t.contiguous().reshape(-1)
        if flat.numel():
            data = memoryview(flat.view(torch.uint8).numpy())  # little-endian host assumed (x86, ARM)
            for start in range(0, len(data), _CHUNK):
                yield data[start:start + _CHUNK]


def _write_chunks(fh: BinaryIO, chunks: Iterable[bytes | memoryview]) -> str:
    """Write chunks; returns the sha256 of what was written."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
        fh.write(chunk)
    return digest.hexdigest()


def _atomic_write(path: Path, chunks: Iterable[bytes | memoryview]) -> str:
    """Write ``chunks`` atomically (readers see the old file or the new one, never half);
    returns the sha256 of the bytes written."""
    from cxr_desktop.atomic import write_stream_atomic

    return write_stream_atomic(path, lambda fh: _write_chunks(fh, chunks))


# --------------------------------------------------------------------------- checksum for older files


@dataclass(frozen=True)
class ChecksumResult:
    """What :func:`add_tensors_checksum` wrote."""

    path: str
    sha256: str  # of the new file
    tensors_sha256: str
    already: bool  # the source already carried this checksum (the file was written anyway)


def add_tensors_checksum(src: str | os.PathLike[str], dst: str | os.PathLike[str] | None = None) -> ChecksumResult:
    """Re-save a model file with ``tensors_sha256`` on its card; every tensor is copied byte for byte.

    For files saved before the checksum existed (they load as "not verified"). The source is
    fully verified first (a damaged file, or one whose stored checksum does not match, is
    refused); the card keeps every other field, unknown ones included. ``dst`` None rewrites
    ``src`` in place (atomically). The written file is loaded again and must verify.
    """
    loaded = load_model(src)
    p = Path(loaded.path)
    data = read_regular(p, _read_exactly)
    if hashlib.sha256(data).hexdigest() != loaded.sha256:
        raise ModelFileError("The file changed while it was being read; try again.", p)
    header = read_header(io.BytesIO(data), len(data), p)
    card = loads_bounded(header.metadata[CARD_KEY], what="the model card", max_bytes=MAX_CARD_BYTES,
                         max_depth=MAX_CARD_DEPTH)
    digest = _file_tensors_digest(header, data)
    already = card.get("tensors_sha256") == digest
    card["tensors_sha256"] = digest
    metadata = dict(header.metadata)
    metadata[CARD_KEY] = json.dumps(card, sort_keys=True)
    from safetensors.torch import load as st_load

    tensors = st_load(data)  # exact dtypes (fp16 stays fp16)
    del data
    out = Path(dst) if dst is not None else p
    sha = _atomic_write(out, _serialize(tensors, metadata))
    again = load_model(out)
    if not again.weights_verified or again.card.tensors_sha256 != digest:
        raise ModelFileError("The re-saved file did not verify; it should not be used.", out)
    return ChecksumResult(path=str(out), sha256=sha, tensors_sha256=digest, already=already)
