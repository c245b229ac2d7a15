"""Input safety (no Qt): is an image an adult frontal chest radiograph the model may score?

``check_image`` runs the metadata and image rules before the model; ``check_learned``
runs the feature-distance check on the engine's pooled features after it. An
out-of-scope image (a rule objects) is shown with its reasons and without a score by
default; an image unlike the training images is scored and carries a :class:`Caution`.
"""

from cxr_desktop.scope.check import (
    ScopeResult,
    ScopeSettings,
    check_image,
    check_info,
    check_learned,
    learned_hook,
    scope_reason,
)
from cxr_desktop.scope.learned import CAUTION_MARK, Caution, LearnedScopeCheck, from_loaded
from cxr_desktop.scope.rules import RULE_CODES, ScopeReason

__all__ = [
    "CAUTION_MARK",
    "Caution",
    "LearnedScopeCheck",
    "RULE_CODES",
    "ScopeReason",
    "ScopeResult",
    "ScopeSettings",
    "check_image",
    "check_info",
    "check_learned",
    "from_loaded",
    "learned_hook",
    "scope_reason",
]
