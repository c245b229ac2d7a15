"""Combine the scope rules into one verdict per image: in scope, or out of scope and why.

:func:`check_image` runs the metadata and image rules on a decoded image (before
the model runs); :func:`check_info` runs the header-only rules on an
:class:`ImageInfo` (study lists, folder walks); :func:`check_learned` runs the
feature-distance check on the pooled features the engine returns (after the
model runs). An out-of-scope image (a rule objects) is shown with its reasons and
no score unless the reader deliberately asks to see it anyway. The learned check
never refuses: an image unlike the training images is scored and carries a
:class:`~cxr_desktop.scope.learned.Caution` (``ScopeResult.caution``).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from cxr_desktop.imaging.types import ImageInfo, StudyImage
from cxr_desktop.scope import rules
from cxr_desktop.scope.learned import Caution, LearnedScopeCheck
from cxr_desktop.scope.rules import RULE_CODES, ScopeReason

#: What a reason list turns into when shown in one line (CSV ``detail``, worklist tooltip).
SEPARATOR = " | "


@dataclass(frozen=True)
class ScopeSettings:
    """User-adjustable scope settings (stored by the GUI; see :meth:`to_dict`).

    ``enabled_rules`` holds the rule codes of :data:`rules.RULE_CODES` that run;
    a code left out switches that rule off.
    """

    allow_secondary_capture: bool = False
    min_age_years: float = 18.0
    min_side: int = 224
    max_aspect: float = 2.0
    max_colour_fraction: float = rules.COLOUR_FRACTION
    enabled_rules: frozenset[str] = frozenset(RULE_CODES)

    def enabled(self, code: str) -> bool:
        return code in self.enabled_rules

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (for QSettings / config files)."""
        d = dataclasses.asdict(self)
        d["enabled_rules"] = sorted(self.enabled_rules)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "ScopeSettings":
        """Settings from a stored dict; unknown keys are ignored, bad values fall back to defaults."""
        base = cls()
        if not isinstance(data, Mapping):
            return base
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                continue
            value, default = data[f.name], getattr(base, f.name)
            try:
                if f.name == "enabled_rules":
                    items = [value] if isinstance(value, str) else list(value)
                    kwargs[f.name] = frozenset(str(v) for v in items if str(v) in RULE_CODES)
                elif isinstance(default, bool):
                    kwargs[f.name] = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
                else:
                    v = type(default)(value)
                    if not np.isfinite(v) or v < 0:
                        raise ValueError(value)
                    kwargs[f.name] = v
            except (TypeError, ValueError):
                continue
        return cls(**kwargs)


@dataclass
class ScopeResult:
    """The verdict for one image: ``in_scope`` and the reasons when it is not.

    ``caution`` (from the learned check) does not change ``in_scope``: a cautioned
    image is scored and shown with the caution mark.
    """

    in_scope: bool
    reasons: list[ScopeReason] = field(default_factory=list)
    caution: Caution | None = None

    @classmethod
    def from_reasons(cls, reasons: Iterable[ScopeReason | None]) -> "ScopeResult":
        found = [r for r in reasons if r is not None]
        return cls(in_scope=not found, reasons=found)

    def with_reason(self, reason: ScopeReason | None) -> "ScopeResult":
        """This result plus one more reason (e.g. from :func:`check_learned`)."""
        if reason is None:
            return self
        result = ScopeResult.from_reasons([*self.reasons, reason])
        result.caution = self.caution
        return result

    def with_caution(self, caution: Caution | None) -> "ScopeResult":
        """This result with the learned check's caution (``None`` keeps it as it is)."""
        if caution is None:
            return self
        return ScopeResult(self.in_scope, list(self.reasons), caution)

    @property
    def codes(self) -> list[str]:
        return [r.code for r in self.reasons]

    def reason_codes(self) -> str:
        """Codes joined by ';' (CSV ``reason`` column), empty when in scope."""
        return ";".join(self.codes)

    def message(self) -> str:
        """All reasons as one line for the reader (CSV ``detail``, worklist tooltip, report)."""
        return SEPARATOR.join(r.message for r in self.reasons)

    def summary(self) -> str:
        """Short status text: 'In scope' or 'Out of scope: <first reason> (+N more)'."""
        if self.in_scope:
            return "In scope" if self.caution is None else f"In scope, with a caution: {self.caution.short}"
        more = f" (+{len(self.reasons) - 1} more)" if len(self.reasons) > 1 else ""
        return f"Out of scope: {self.reasons[0].message}{more}"


def metadata_reasons(metadata: Mapping[str, Any], *, frames: int, rows: int, columns: int,
                     settings: ScopeSettings) -> list[ScopeReason | None]:
    """The header-only rules (DICOM attributes, frame count, geometry)."""
    s = settings
    out: list[ScopeReason | None] = []
    if s.enabled(rules.MODALITY) or s.enabled(rules.SECONDARY_CAPTURE):
        r = rules.modality_rule(metadata, allow_secondary_capture=s.allow_secondary_capture
                                or not s.enabled(rules.SECONDARY_CAPTURE))
        if r is not None and s.enabled(r.code):
            out.append(r)
    if s.enabled(rules.MULTI_FRAME):
        out.append(rules.multi_frame_rule(frames))
    if s.enabled(rules.VIEW):
        out.append(rules.view_rule(metadata))
    if s.enabled(rules.BODY_PART):
        out.append(rules.body_part_rule(metadata))
    if s.enabled(rules.AGE):
        out.append(rules.age_rule(metadata, min_age_years=s.min_age_years))
    if rows > 0 and columns > 0:
        if s.enabled(rules.ASPECT):
            out.append(rules.aspect_rule(rows, columns, max_aspect=s.max_aspect))
        if s.enabled(rules.TOO_SMALL):
            out.append(rules.size_rule(rows, columns, min_side=s.min_side))
    return out


def _ordered(reasons: Iterable[ScopeReason | None]) -> ScopeResult:
    found = [r for r in reasons if r is not None]
    order = {c: i for i, c in enumerate(RULE_CODES)}
    found.sort(key=lambda r: order.get(r.code, len(order)))
    return ScopeResult.from_reasons(found)


def check_image(image: StudyImage, settings: ScopeSettings | None = None) -> ScopeResult:
    """All metadata and image rules for a decoded image (run before the model)."""
    s = settings or ScopeSettings()
    frames = max(int(image.frame_count or 1), rules.frame_count(image.metadata))
    reasons = metadata_reasons(image.metadata, frames=frames, rows=image.full_shape[0], columns=image.full_shape[1],
                               settings=s)
    if s.enabled(rules.COLOUR):
        reasons.append(rules.colour_rule(image, max_fraction=s.max_colour_fraction))
    if s.enabled(rules.INVERTED):
        reasons.append(rules.inverted_rule(image))
    return _ordered(reasons)


def check_info(info: ImageInfo, settings: ScopeSettings | None = None) -> ScopeResult:
    """Header-only rules for a file not yet decoded (study list, folder walk).

    Image rules (colour, inversion) need pixels: :func:`check_image` on the decoded
    image is the full check.
    """
    s = settings or ScopeSettings()
    frames = max(int(info.frames or 1), rules.frame_count(info.metadata))
    return _ordered(metadata_reasons(info.metadata, frames=frames, rows=info.rows, columns=info.columns,
                                     settings=s))


def check_learned(pooled: Any, learned: LearnedScopeCheck | None,
                  settings: ScopeSettings | None = None) -> Caution | None:
    """The learned check for one image's pooled features (run after the model): a caution, never a refusal.

    ``None`` when the features are like the training images, when the model has no
    feature statistics (see :attr:`LearnedScopeCheck.status`), or when the rule is off.
    """
    s = settings or ScopeSettings()
    if learned is None or not learned.enabled or not s.enabled(rules.LEARNED):
        return None
    return learned.caution(pooled)


# --------------------------------------------------------------------------- hook forms


def scope_reason(image: StudyImage, settings: ScopeSettings | None = None) -> str | None:
    """Hook form of :func:`check_image`: ``None`` when in scope, else every reason in one line.

    For ``screening.scope.scope_check`` and the viewer (``functools.partial(scope_reason,
    settings=...)`` pickles to screening workers). No final full stop, so callers can embed it.
    """
    result = check_image(image, settings)
    return None if result.in_scope else result.message().rstrip(".")


def learned_hook(learned: LearnedScopeCheck | None,
                 settings: ScopeSettings | None = None) -> Callable[[Any], Caution | None] | None:
    """Hook form of :func:`check_learned` for the screening runner's ``after_model``.

    ``None`` (no hook) when the check is disabled, so callers skip it entirely.
    """
    if learned is None or not learned.enabled or not (settings or ScopeSettings()).enabled(rules.LEARNED):
        return None
    return functools.partial(check_learned, learned=learned, settings=settings or ScopeSettings())
