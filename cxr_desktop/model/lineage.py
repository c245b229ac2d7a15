"""Lineage: a model trained from another model file carries its ancestry and limits.

A model's lineage and limits travel with it. When a model starts from another CXR
Review model file (``cxr-train --weights parent.safetensors``, ``cxr-model init
--weights ...``), the new card

- records its parent in ``card.parent`` = ``{"name", "version", "sha256"}`` (the
  sha256 of the parent *file*, so the exact parent can be found again);
- keeps the whole chain in ``card.provenance["lineage"]``: a list of ancestors,
  nearest first (parent, grandparent, ...), each ``{"name", "version", "sha256",
  "demonstration"}``. It is built from the parent's own ``lineage`` (or, for a
  parent that has only a ``parent``, from that), so the grandparent stays findable
  after any number of generations;
- is a demonstration model when any ancestor is one (fine-tuning does not make a
  demonstration model fit for clinical use);
- inherits the parent's warnings, each prefixed with the model it came from
  (warnings already inherited keep their original prefix; the parent's "Untrained"
  warning is dropped, since the child is trained or says so itself), and gets one
  "Lineage: ..." warning naming the demonstration ancestor when there is one.

Qt-free and torch-free: used by :mod:`cxr_desktop.model.weights`, the training
engine, ``cxr-model info`` and the viewer's banner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from cxr_desktop.model.card import ModelCard

MAX_GENERATIONS = 32  # a chain longer than this is cut (the nearest ancestors are kept)
INHERITED_PREFIX = "Inherited from "
LINEAGE_PREFIX = "Lineage: "
UNTRAINED_PREFIX = "Untrained:"


@dataclass(frozen=True)
class Inheritance:
    """What a child model takes over from its parent model file."""

    parent: dict[str, str]
    lineage: list[dict[str, Any]]
    demonstration: bool
    warnings: list[str] = field(default_factory=list)


def _summary(card_like: Mapping[str, Any], demonstration: bool | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {k: str(card_like.get(k) or "") for k in ("name", "version", "sha256")}
    if demonstration is not None:
        out["demonstration"] = bool(demonstration)
    return out


def _label(entry: Mapping[str, Any]) -> str:
    return f"'{entry.get('name') or '?'} v{entry.get('version') or '?'}'"


def ancestors(card: ModelCard) -> list[dict[str, Any]]:
    """The card's ancestors, nearest first (empty for a model with no parent)."""
    chain = card.provenance.get("lineage") if isinstance(card.provenance, dict) else None
    if isinstance(chain, list) and chain:
        return [dict(e) for e in chain if isinstance(e, dict)][:MAX_GENERATIONS]
    if isinstance(card.parent, dict):  # a card with a parent but no chain (older or other tools)
        return [_summary(card.parent)]
    return []


def inherit_from(parent: ModelCard, parent_sha256: str) -> Inheritance:
    """What a model trained from ``parent`` (a file with that sha256) inherits."""
    me = _summary({"name": parent.name, "version": parent.version, "sha256": parent_sha256},
                  demonstration=parent.demonstration)
    lineage = ([me] + ancestors(parent))[:MAX_GENERATIONS]
    demo = any(bool(e.get("demonstration")) for e in lineage)
    label = _label(me)
    warnings = []
    if demo:
        origin = [e for e in lineage if e.get("demonstration")][-1]  # the oldest demonstration ancestor
        how = (f"the demonstration model {label}" if origin is me
               else f"{label}, which descends from the demonstration model {_label(origin)}")
        warnings.append(f"{LINEAGE_PREFIX}trained from {how}, so this is a demonstration model too: for trying "
                        "the software only, not validated for clinical use.")
    for w in parent.warnings:
        if w.startswith((UNTRAINED_PREFIX, LINEAGE_PREFIX)):  # the child is trained; lineage is said anew
            continue
        warnings.append(w if w.startswith(INHERITED_PREFIX) else f"{INHERITED_PREFIX}{label}: {w}")
    return Inheritance(parent=_summary(me), lineage=lineage, demonstration=demo, warnings=warnings)


def apply(card: ModelCard, inheritance: Inheritance) -> ModelCard:
    """Record ``inheritance`` on ``card`` (parent, lineage, demonstration flag, warnings); returns it."""
    card.parent = dict(inheritance.parent)
    card.provenance = {**card.provenance, "lineage": [dict(e) for e in inheritance.lineage]}
    card.demonstration = bool(card.demonstration or inheritance.demonstration)
    card.warnings = list(card.warnings) + [w for w in inheritance.warnings if w not in card.warnings]
    return card


def from_provenance(provenance: Mapping[str, Any], warnings: Sequence[str] = ()) -> Inheritance | None:
    """The inheritance recorded on an initial card (``init_model``'s), or None without a parent.

    The training engine builds its final card anew; this carries the lineage over
    from the card of the model it started from (also after a resume).
    """
    chain = provenance.get("lineage")
    if not isinstance(chain, list) or not chain or not isinstance(chain[0], dict):
        return None
    lineage = [dict(e) for e in chain if isinstance(e, dict)][:MAX_GENERATIONS]
    inherited = [w for w in warnings if w.startswith((INHERITED_PREFIX, LINEAGE_PREFIX))]
    return Inheritance(parent=_summary(lineage[0]), lineage=lineage,
                       demonstration=any(bool(e.get("demonstration")) for e in lineage), warnings=inherited)


def lineage_lines(card: ModelCard) -> list[str]:
    """Human-readable lineage: "Trained from ..." and one line per earlier ancestor."""
    chain = ancestors(card)
    if not chain:
        return []

    def one(e: Mapping[str, Any]) -> str:
        sha = str(e.get("sha256") or "")
        demo = ", demonstration model" if e.get("demonstration") else ""
        return f"{_label(e)} (sha256 {sha[:16] + '...' if sha else 'unknown'}{demo})"

    lines = [f"Trained from {one(chain[0])}"]
    lines += [f"  which was trained from {one(e)}" for e in chain[1:]]
    return lines
