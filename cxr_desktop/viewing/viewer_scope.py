"""Input safety for the image on screen (no Qt): may the classifier's score be shown?

The viewer shows every image it can decode, but the classifier is only for adult
frontal chest radiographs. :class:`ViewerScope` holds the verdict for the image
on screen: the metadata and image rules of :mod:`cxr_desktop.scope` (run in the
image loader's worker, see ``workers.load_for_view``) before the model, plus the
model's learned check on the pooled features after it. An out-of-scope image is
shown with its reasons and no score unless the reader deliberately asks for the
score (``show_anyway``, reset for every new image). The learned check never
refuses: its :class:`~cxr_desktop.scope.Caution` rides on the verdict
(``ScopeResult.caution``) and the score is shown with the caution mark
(:func:`caution_text`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from cxr_desktop.inference.protocol import Engine

if TYPE_CHECKING:  # the scope package (numpy, imaging) loads once the window is up
    from cxr_desktop.imaging.types import StudyImage
    from cxr_desktop.scope import Caution, LearnedScopeCheck, ScopeResult, ScopeSettings

log = logging.getLogger(__name__)

NO_MODEL = "Learned check: waiting for the model."
#: Title of the caution mark (the sign and the words the reader sees beside the score).
CAUTION_HEADLINE = "\u26a0 Unusual image - interpret with care"


def caution_text(caution: "Caution") -> str:
    """The caution mark as the results panel shows it: headline, figures, what it means."""
    return (f"{CAUTION_HEADLINE}\nFeature distance {caution.distance:.1f} is above the model's limit "
            f"{caution.limit:.1f}: this image is unlike the model's training images (its processing, quality "
            "or a finding). The score is shown; read the image yourself.")


class ViewerScope:
    """The input-safety verdict of the image on screen, and whether its score is shown anyway."""

    def __init__(self, settings: "ScopeSettings | None" = None):
        self.settings = settings
        self.learned: LearnedScopeCheck | None = None
        self.show_anyway = False
        self._key: tuple[str, int] | None = None
        if self.settings is None:
            from cxr_desktop.scope import ScopeSettings

            self.settings = ScopeSettings()
        self._verdict: ScopeResult | None = None

    @property
    def learned_status(self) -> str:
        return self.learned.status if self.learned is not None else NO_MODEL

    def set_model(self, engine: Engine) -> None:
        """Build the model's learned check from its feature statistics (disabled, with a status, if none)."""
        from cxr_desktop.scope import LearnedScopeCheck

        try:
            self.learned = LearnedScopeCheck.from_model(engine.extra_tensors, engine.card)
        except Exception as exc:  # a damaged statistics block must not stop the viewer
            log.warning("learned check unavailable: %s", exc.__class__.__name__)
            self.learned = LearnedScopeCheck.disabled(f"its statistics could not be read ({exc.__class__.__name__})")

    def set_image(self, image: "StudyImage", verdict: ScopeResult | None = None, checked_with: Any = None) -> None:
        """A new image is on screen; ``verdict`` is the loader worker's result (if made with these settings)."""
        key = (str(image.path), int(image.frame_index))
        if key != self._key:
            self.show_anyway = False
        self._key = key
        self._verdict = verdict if verdict is not None and checked_with == self.settings else None

    def before_model(self, image: "StudyImage") -> ScopeResult:
        """The rules' verdict (computed here only if the worker's is missing)."""
        from cxr_desktop.scope import ScopeResult, check_image

        key = (str(image.path), int(image.frame_index))
        if self._verdict is None or key != self._key:
            try:
                self._verdict = check_image(image, self.settings)
            except Exception as exc:  # a broken rule must not stop the viewer
                log.warning("input-safety rules failed: %s", exc.__class__.__name__)
                self._verdict = ScopeResult(in_scope=True)
            self._key = key
        return self._verdict

    def after_model(self, image: "StudyImage", pooled: Any) -> ScopeResult:
        """The rules' verdict plus the learned check's caution (never a refusal) on the pooled features."""
        from cxr_desktop.scope import check_learned

        verdict = self.before_model(image)
        if pooled is None:
            return verdict
        try:
            return verdict.with_caution(check_learned(pooled, self.learned, self.settings))
        except Exception as exc:
            log.warning("learned check failed: %s", exc.__class__.__name__)
            return verdict
