"""Type and range checks for every model-card field.

A card comes from an untrusted file. A value of the wrong kind (std 0, means as
text, an input size of 100000, ``format_version: null``) would otherwise pass the
loader and fail later as "pixel values are not finite" on every image, or as a
traceback from ONNX Runtime. Each check here refuses with a :class:`ModelFileError`
naming the field, what is expected and what was found. Unknown keys inside open
sections (provenance, metrics, extra) are accepted; their size and depth are
bounded where the card's JSON is parsed (:mod:`cxr_desktop.model.bounded_json`).

No torch here: the light preprocessing code imports the card.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Mapping, NoReturn

from cxr_desktop.errors import ModelFileError

MIN_INPUT_SIZE = 64
MAX_INPUT_SIZE = 1024
INPUT_SIZE_STEP = 32  # ResNet50 downsamples by 32: the Grad-CAM grid is input_size / 32
MAX_CLASSES = 100
MAX_NAME_CHARS = 200
STD_RANGE = (1e-3, 100.0)  # inputs are [0, 1] grey; a std outside this makes every input meaningless
MEAN_RANGE = (-10.0, 10.0)
HEAD_TYPES = ("gap_dropout_linear", "gap_mlp")  # = architecture.HEAD_TYPES (which imports torch)
OUTPUT_STRIDES = (32, 16)  # = architecture.OUTPUT_STRIDES
MAX_HIDDEN_LAYERS = 4
MAX_HIDDEN_WIDTH = 8192
MAX_LINEAGE = 100
_SHA256 = re.compile(r"[0-9a-f]{64}")
REMEDY = ("The model file is damaged or was written by an incompatible tool; re-export it with "
          "'cxr-train' or 'cxr-model'.")


def _show(value: Any) -> str:
    """A found value for a message, short (cards never hold patient data)."""
    try:
        text = json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class CardFieldError(ModelFileError):
    """A card field of the wrong type or out of range (the message names the field)."""


def fail(field: str, expected: str, found: Any) -> NoReturn:
    """Refuse the card: field ``field`` should be ``expected`` but is ``found``."""
    label = f"{field.replace('_', ' ')} (field '{field}')" if "_" in field else f"field '{field}'"
    raise CardFieldError(f"The model card's {label} is invalid: expected {expected}, found {_show(found)}.")


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return is_int(v) or (isinstance(v, float) and math.isfinite(v))


def _text(field: str, v: Any, *, blank: bool = False, max_chars: int = MAX_NAME_CHARS) -> None:
    if not isinstance(v, str) or (not blank and not v.strip()) or len(v) > max_chars:
        what = "text" if blank else "non-empty text"
        fail(field, f"{what} of at most {max_chars} characters", v)


def _dict(field: str, v: Any) -> Mapping[str, Any]:
    if not isinstance(v, dict):
        fail(field, "a JSON object", v)
    return v


def _numbers(field: str, v: Any, n: int, lo: float, hi: float, lo_open: bool = False) -> None:
    ok = isinstance(v, list) and len(v) == n and all(
        is_number(x) and (lo < x if lo_open else lo <= x) and x <= hi for x in v
    )
    if not ok:
        bound = f"> {lo:g}" if lo_open else f">= {lo:g}"
        fail(field, f"a list of {n} finite numbers, each {bound} and <= {hi:g}", v)


def check_format_version(v: Any, supported: int) -> None:
    if not is_int(v) or v < 1:
        fail("format_version", f"a whole number from 1 to {supported}" if supported > 1 else "the number 1", v)
    if v > supported:
        raise ModelFileError(
            f"The model file uses card format {v}, newer than this app understands ({supported}). "
            "Update CXR Review."
        )


def check_input_size(field: str, v: Any) -> None:
    if not (is_int(v) and MIN_INPUT_SIZE <= v <= MAX_INPUT_SIZE and v % INPUT_SIZE_STEP == 0):
        fail(field, f"a whole number of pixels from {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE}, a multiple of "
                    f"{INPUT_SIZE_STEP}", v)


def check_sha256(field: str, v: Any, *, optional: bool = True) -> None:
    if v is None and optional:
        return
    if not (isinstance(v, str) and _SHA256.fullmatch(v)):
        fail(field, "a sha256 digest (64 lower-case hexadecimal characters)", v)


def check_head(head: Any) -> None:
    head = _dict("head", head)
    if head.get("type") not in HEAD_TYPES:
        fail("head.type", f"one of {', '.join(HEAD_TYPES)}", head.get("type"))
    if "dropout" in head and not (is_number(head["dropout"]) and 0 <= head["dropout"] < 1):
        fail("head.dropout", "a number from 0 to below 1", head["dropout"])
    if head["type"] == "gap_mlp" and "hidden" in head:
        hidden = head["hidden"]
        if not (isinstance(hidden, list) and 1 <= len(hidden) <= MAX_HIDDEN_LAYERS
                and all(is_int(h) and 1 <= h <= MAX_HIDDEN_WIDTH for h in hidden)):
            fail("head.hidden", f"a list of 1 to {MAX_HIDDEN_LAYERS} layer widths, each 1 to {MAX_HIDDEN_WIDTH}",
                 hidden)


def check_classes(classes: Any, positive: Any) -> None:
    if not (isinstance(classes, list) and 2 <= len(classes) <= MAX_CLASSES):
        fail("classes", f"a list of 2 to {MAX_CLASSES} class names", classes)
    for i, c in enumerate(classes):
        if not (isinstance(c, str) and c.strip() and len(c) <= MAX_NAME_CHARS):
            fail(f"classes[{i}]", f"a class name (non-empty text of at most {MAX_NAME_CHARS} characters)", c)
    if len(set(classes)) != len(classes):
        fail("classes", "every class name once (a class is listed twice)", classes)
    if positive is not None and (not isinstance(positive, str) or positive not in classes):
        fail("positive_class", f"null or one of the classes {', '.join(classes)}", positive)


def check_preprocessing(pre: Any, input_size: int, known_id: str, max_version: int) -> None:
    pre = _dict("preprocessing", pre)
    if pre.get("id") != known_id:
        fail("preprocessing.id", f"{known_id!r} (the preprocessing this app implements)", pre.get("id"))
    version = pre.get("version", 1)
    if not (is_int(version) and version >= 1):
        fail("preprocessing.version", f"a whole number from 1 to {max_version}", version)
    if version > max_version:
        raise ModelFileError("The model needs a newer preprocessing version; update CXR Review.")
    if "input_size" not in pre or pre["input_size"] != input_size or not is_int(pre["input_size"]):
        fail("preprocessing.input_size", f"the card's input size ({input_size})", pre.get("input_size"))
    _numbers("preprocessing.mean", pre.get("mean"), 3, *MEAN_RANGE)
    _numbers("preprocessing.std", pre.get("std"), 3, *STD_RANGE)
    if "channels" in pre and pre["channels"] != 3:
        fail("preprocessing.channels", "3", pre["channels"])
    for key in ("resize", "intensity"):
        if key in pre:
            _text(f"preprocessing.{key}", pre[key], max_chars=1000)


def _check_model_ref(field: str, ref: Any, *, need_name: bool) -> None:
    """A reference to another model file: {name, version, sha256 of the file, ...}."""
    ref = _dict(field, ref)
    _text(f"{field}.name", ref.get("name"), blank=not need_name)
    version = ref.get("version", "")
    if not (is_int(version) or (isinstance(version, str) and len(version) <= MAX_NAME_CHARS)):
        fail(f"{field}.version", "a version (text or whole number)", version)
    if ref.get("sha256") not in (None, ""):
        check_sha256(f"{field}.sha256", ref["sha256"])
    if "demonstration" in ref and not isinstance(ref["demonstration"], bool):
        fail(f"{field}.demonstration", "true or false", ref["demonstration"])


def check_lineage(card: Any) -> None:
    """``parent`` (None or {name, version, sha256}) and ``provenance.lineage`` (a list of those)."""
    parent = getattr(card, "parent", None)
    if parent is not None:
        _check_model_ref("parent", parent, need_name=False)
    lineage = card.provenance.get("lineage") if isinstance(card.provenance, dict) else None
    if lineage is not None:
        if not (isinstance(lineage, list) and len(lineage) <= MAX_LINEAGE):
            fail("provenance.lineage", f"a list of at most {MAX_LINEAGE} earlier models", lineage)
        for i, ref in enumerate(lineage):
            _check_model_ref(f"provenance.lineage[{i}]", ref, need_name=False)


def check_extra(extra: Any) -> None:
    """``extra`` is open (unknown keys pass). Of the learned scope check's ``ood`` entry only the
    types are checked: a value out of range turns that check off with a visible reason
    (:mod:`cxr_desktop.scope.learned`) rather than refusing the whole model."""
    extra = _dict("extra", extra)
    ood = extra.get("ood")
    if ood is None:
        return
    ood = _dict("extra.ood", ood)
    if "method" in ood:
        _text("extra.ood.method", ood["method"])
    for key in ("threshold", "percentile", "residual_scale", "shrinkage"):
        if key in ood and not (is_int(ood[key]) or isinstance(ood[key], float)):
            fail(f"extra.ood.{key}", "a number", ood[key])
    if "k" in ood and not (is_int(ood["k"]) and 1 <= ood["k"] <= 2048):
        fail("extra.ood.k", "a whole number from 1 to 2048", ood["k"])
    if "tensors" in ood and not (isinstance(ood["tensors"], list) and all(isinstance(t, str) for t in ood["tensors"])):
        fail("extra.ood.tensors", "a list of tensor names", ood["tensors"])
    if "calibration" in ood:
        _dict("extra.ood.calibration", ood["calibration"])


def check_card(card: Any, *, format_version: int, architectures: tuple[str, ...], preprocessing_id: str,
               preprocessing_version: int) -> None:
    """Check every field of a :class:`~cxr_desktop.model.card.ModelCard`; raises :class:`ModelFileError`."""
    check_format_version(card.format_version, format_version)
    _text("name", card.name)
    if not (is_int(card.version) or (isinstance(card.version, str) and len(card.version) <= MAX_NAME_CHARS)):
        fail("version", f"text of at most {MAX_NAME_CHARS} characters", card.version)
    if card.architecture not in architectures:
        fail("architecture", f"one of {', '.join(architectures)}", card.architecture)
    stride = getattr(card, "output_stride", 32)
    if not (is_int(stride) and stride in OUTPUT_STRIDES):
        fail("output_stride", f"one of {', '.join(map(str, OUTPUT_STRIDES))}", stride)
    check_head(card.head)
    check_classes(card.classes, card.positive_class)
    check_input_size("input_size", card.input_size)
    check_preprocessing(card.preprocessing, card.input_size, preprocessing_id, preprocessing_version)
    t = card.decision_threshold
    if not (is_number(t) and 0 <= t <= 1):
        fail("decision_threshold", "a number from 0 to 1", t)
    for key in ("provenance", "metrics"):
        _dict(key, getattr(card, key))
    if not (isinstance(card.warnings, list) and all(isinstance(w, str) for w in card.warnings)):
        fail("warnings", "a list of texts", card.warnings)
    if not isinstance(card.demonstration, bool):
        fail("demonstration", "true or false", card.demonstration)
    _text("intended_use", card.intended_use, blank=True, max_chars=10_000)
    check_extra(card.extra)
    check_sha256("tensors_sha256", getattr(card, "tensors_sha256", None))
    check_lineage(card)
