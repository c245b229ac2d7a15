"""Training events and results as JSON text, and back (no pickle).

A training job started by :mod:`cxr_desktop.training.launch` runs in other processes;
its rank-0 process sends each event (and the final :class:`TrainResult`) as one JSON
line, and the launcher rebuilds the same typed objects. Only the dataclasses named in
:func:`_types` are ever built from the text, so reading a line cannot run code.

Exact round trip: floats (NaN and infinities included) keep their value, tuples stay
tuples, numpy arrays keep dtype, shape and bytes, numpy scalars their type.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
from typing import Any

import numpy as np

_DC, _TUPLE, _ARRAY, _SCALAR, _DICT = "__dc__", "__tuple__", "__ndarray__", "__npscalar__", "__dict__"


@functools.cache
def _types() -> dict[str, type]:
    """The dataclasses that may appear in an event or a result, by class name."""
    from cxr_desktop.model.card import ModelCard
    from cxr_desktop.training import events as E
    from cxr_desktop.training.metrics import ThresholdChoice
    from cxr_desktop.training.results import Evaluation, SplitPredictions, TrainResult
    from cxr_desktop.training.scan import DuplicateSet, ScanItem, ScanProblem, ScanProgress, ScanResult

    found = [obj for obj in vars(E).values() if isinstance(obj, type) and dataclasses.is_dataclass(obj)]
    found += [ModelCard, ThresholdChoice, Evaluation, SplitPredictions, TrainResult, DuplicateSet, ScanItem,
              ScanProblem, ScanProgress, ScanResult]
    return {cls.__name__: cls for cls in found}


def encode(obj: Any) -> Any:
    """``obj`` as plain JSON values (dicts, lists, str, numbers, None), tagged where JSON alone would lose it."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.generic):
        return {_SCALAR: obj.dtype.str, "value": obj.item()}
    if isinstance(obj, (int, float)):
        return obj
    if isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            raise TypeError("an array of Python objects cannot be sent as JSON")
        data = np.ascontiguousarray(obj)
        return {_ARRAY: base64.b64encode(data.tobytes()).decode("ascii"), "dtype": data.dtype.str,
                "shape": list(data.shape)}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        name = type(obj).__name__
        if _types().get(name) is not type(obj):
            raise TypeError(f"{name} is not a training event or result type")
        return {_DC: name, "fields": {f.name: encode(getattr(obj, f.name))
                                      for f in dataclasses.fields(obj) if f.init}}
    if isinstance(obj, tuple):
        return {_TUPLE: [encode(v) for v in obj]}
    if isinstance(obj, list):
        return [encode(v) for v in obj]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: encode(v) for k, v in obj.items()}
        return {_DICT: [[encode(k), encode(v)] for k, v in obj.items()]}
    raise TypeError(f"a {type(obj).__name__} cannot be sent as JSON")


def decode(raw: Any) -> Any:
    """The objects :func:`encode` was given (only known dataclasses are built)."""
    if isinstance(raw, list):
        return [decode(v) for v in raw]
    if not isinstance(raw, dict):
        return raw
    if _DC in raw:
        cls = _types().get(raw[_DC])
        if cls is None:
            raise ValueError(f"unknown type {raw[_DC]!r} in a training message")
        return cls(**{k: decode(v) for k, v in raw["fields"].items()})
    if _TUPLE in raw:
        return tuple(decode(v) for v in raw[_TUPLE])
    if _ARRAY in raw:
        dtype = np.dtype(raw["dtype"])
        if dtype.hasobject:
            raise ValueError("an array of Python objects in a training message")
        data = base64.b64decode(raw[_ARRAY])
        return np.frombuffer(data, dtype=dtype).reshape(raw["shape"]).copy()
    if _SCALAR in raw:
        return np.dtype(raw[_SCALAR]).type(raw["value"])
    if _DICT in raw:
        return {decode(k): decode(v) for k, v in raw[_DICT]}
    return {k: decode(v) for k, v in raw.items()}


def to_json(obj: Any) -> str:
    """One line of JSON text (no newline inside) for an event, a result or None."""
    return json.dumps(encode(obj), separators=(",", ":"), allow_nan=True)


def from_json(text: str) -> Any:
    """The event or result :func:`to_json` wrote."""
    return decode(json.loads(text))
