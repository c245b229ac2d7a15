"""JSON from model files, parsed only within a stated size and nesting depth.

A model file's header and card are untrusted text. Python's ``json`` parser
recurses once per nesting level, so ``[[[[...`` a few thousand levels deep raises
``RecursionError`` (and could exhaust a worker thread's stack). The depth is
therefore measured first, in linear time and without recursion, and text that is
too large or too deep is refused with a :class:`ModelFileError` before parsing.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from cxr_desktop.errors import ModelFileError

# A JSON string, or an unterminated one running to the end (possessive: linear time on any input).
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\Z)', re.S)
_OPEN = (ord("["), ord("{"))
_CLOSE = (ord("]"), ord("}"))


def nesting_depth(raw: bytes) -> int:
    """Deepest ``[``/``{`` nesting of JSON text, ignoring brackets inside strings (no recursion)."""
    bare = np.frombuffer(_STRING.sub(b"", raw), dtype=np.uint8)
    if not bare.size:
        return 0
    step = np.isin(bare, _OPEN).astype(np.int32) - np.isin(bare, _CLOSE).astype(np.int32)
    return int(np.cumsum(step).max(initial=0))


def loads_bounded(text: str | bytes, *, what: str, max_bytes: int, max_depth: int) -> Any:
    """``json.loads`` of ``text`` if it is at most ``max_bytes`` long and ``max_depth`` deep.

    ``what`` names the text in the refusal ("the model card", "the file's header").
    Raises :class:`ModelFileError` for text too large, too deep or not valid JSON.
    """
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    what = what[:1].upper() + what[1:]
    if len(raw) > max_bytes:
        raise ModelFileError(
            f"{what} is {len(raw):,} bytes, more than the {max_bytes:,} bytes a "
            "CXR Review model file can have: the file is damaged or not a model file."
        )
    depth = nesting_depth(raw)
    if depth > max_depth:
        raise ModelFileError(
            f"{what} is nested {depth} levels deep, more than the {max_depth} "
            "levels a CXR Review model file can have: the file is damaged or not a model file."
        )
    try:
        return json.loads(text if isinstance(text, str) else raw.decode("utf-8"))
    except RecursionError:  # cannot happen within max_depth; kept so that no caller ever sees one
        raise ModelFileError(f"{what} is nested too deeply.") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelFileError(
            f"{what} is not valid JSON ({exc.__class__.__name__})."
        ) from None
