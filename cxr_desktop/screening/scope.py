"""Is an image something the classifier may score? (the screening workers' input-safety hook)

:func:`scope_check` is called once per decoded image by the screening workers
(before the model). It runs every rule of :mod:`cxr_desktop.scope` under the
given :class:`~cxr_desktop.scope.ScopeSettings` and returns ``None`` when the
image may be scored, else the :class:`~cxr_desktop.scope.ScopeResult` whose
short codes go into the CSV ``reason`` column and whose sentences go into
``detail``. :func:`make_scope_check` binds settings with ``functools.partial``
so the hook still pickles to the decode worker processes.

:func:`learned_after_model` is the runner's default post-model hook: the
feature-distance check built from the model file's training statistics. It
answers with a :class:`~cxr_desktop.scope.Caution` (scored, marked "unusual image -
interpret with care"), never with a refusal: a possible finding is never hidden.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from cxr_desktop.imaging.types import StudyImage
from cxr_desktop.scope import (
    Caution, LearnedScopeCheck, ScopeReason, ScopeResult, ScopeSettings, check_image, check_learned,
)
from cxr_desktop.scope.rules import LEARNED


def scope_check(image: StudyImage, settings: ScopeSettings | None = None) -> ScopeResult | None:
    """``None`` if the image may be scored, else the out-of-scope verdict with its reasons."""
    result = check_image(image, settings or ScopeSettings())
    return None if result.in_scope else result


def make_scope_check(settings: ScopeSettings | None = None) -> Callable[[StudyImage], ScopeResult | None]:
    """A picklable :func:`scope_check` bound to ``settings`` (for the decode workers)."""
    return functools.partial(scope_check, settings=settings or ScopeSettings())


def learned_after_model(learned: LearnedScopeCheck | None,
                        settings: ScopeSettings | None = None) -> Callable[[Any], Caution | None] | None:
    """The learned check as the runner's ``after_model`` hook (pooled (2048,) -> caution or None).

    ``None`` (no hook) when the model stores no feature statistics or the rule is off.
    """
    s = settings or ScopeSettings()
    if learned is None or not learned.enabled or not s.enabled(LEARNED):
        return None
    return functools.partial(check_learned, learned=learned, settings=s)


def reason_parts(why: Any) -> tuple[str, str]:
    """(short codes, sentences) of a hook's answer: a ScopeResult, a ScopeReason or plain text."""
    if isinstance(why, ScopeResult):
        return why.reason_codes(), why.message()
    if isinstance(why, ScopeReason):
        return why.code, why.message
    text = str(why)
    return text, text
