"""Which model the viewer uses, loaded off the GUI thread.

torch is only ever imported inside the worker functions here, so the first
window appears before torch (about 3 s to import) is loaded. At start-up the
model is, in order: the ``--model`` argument, the last model used (QSettings),
the bundled default model (:func:`cxr_desktop.paths.default_model_path`), or a
freshly initialised, *untrained* model, flagged as such in the results panel.
A model file that cannot be used - refused (:class:`ModelFileError`) or failing in
any other way (out of memory, a library error) - is explained to the user, naming the
file and the reason; at start-up the next model in that order is used, later the
viewer keeps the model it had. A model that failed is never remembered as the last one.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QObject, Signal

from cxr_desktop.errors import ModelFileError
from cxr_desktop.gui.settings import AppSettings
from cxr_desktop.gui.workers import WorkerRunner
from cxr_desktop.inference.protocol import Engine

if TYPE_CHECKING:
    from cxr_desktop.model.card import ModelCard

log = logging.getLogger(__name__)

UNTRAINED_CLASSES = ("normal", "abnormal")
_untrained_ids = itertools.count(1)


@dataclass
class ActiveModel:
    """The engine in use and what the user must know about it."""

    engine: Engine
    card: ModelCard
    path: str | None  # None: a freshly initialised model that exists only in memory
    model_id: str  # cache key: the file's sha256, or a per-session id for an in-memory model
    untrained: bool = False
    notes: list[str] = field(default_factory=list)  # e.g. why the remembered model was not used
    refused_path: str | None = None  # a model file tried first and refused (forgotten in settings)

    @property
    def display_name(self) -> str:
        return str(self.card.display_name)


def failure_reason(exc: BaseException) -> str:
    """Why a model could not be loaded, for the user: a refusal's own sentence, else type and text."""
    if isinstance(exc, ModelFileError):
        return exc.message  # the caller names the file
    text = " ".join(str(exc).split())
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _options(engine_options: dict[str, Any] | None) -> Any:
    from cxr_desktop.inference.engine import EngineOptions

    return EngineOptions(**(engine_options or {}))


def load_model_file(path: str, engine_options: dict[str, Any] | None = None) -> ActiveModel:
    """Load a model file into an engine (worker thread). Raises :class:`ModelFileError`."""
    from cxr_desktop.inference.engine import load_engine

    from cxr_desktop.model.modelfile import WEIGHTS_VERIFIED

    engine = load_engine(path, options=_options(engine_options))
    active = ActiveModel(engine, engine.card, str(path), engine.model_sha256 or f"file:{path}")
    status = engine.weights_status
    if status and status != WEIGHTS_VERIFIED:
        active.notes.append(f"Weights {status}: damage to this model file would go unnoticed.")
    return active


def untrained_model(engine_options: dict[str, Any] | None = None, *, input_size: int = 224) -> ActiveModel:
    """A new classifier (ImageNet body if available offline, random head): outputs are meaningless."""
    from cxr_desktop.inference.engine import InferenceEngine
    from cxr_desktop.model.weights import init_model

    model, card = init_model(classes=list(UNTRAINED_CLASSES), positive_class="abnormal", weights="imagenet",
                             input_size=input_size, name="Untrained model", seed=0)
    engine = InferenceEngine(model, card, model_sha256="", options=_options(engine_options))
    return ActiveModel(engine, card, None, f"untrained:{next(_untrained_ids)}", untrained=True)


def default_model(engine_options: dict[str, Any] | None = None) -> ActiveModel:
    """The bundled model if present and valid, else an untrained one (with a note saying why)."""
    from cxr_desktop.paths import default_model_path

    p = default_model_path()
    notes = []
    if p.exists():
        try:
            return load_model_file(str(p), engine_options)
        except Exception as exc:  # any failure: the viewer must still get a model
            log.warning("bundled model failed to load: %s", type(exc).__name__)
            notes.append(f"The bundled model ({p.name}) could not be used: {failure_reason(exc)}")
    else:
        notes.append("No trained model is installed (the bundled model file is missing). Open a trained "
                     "model with Model > Open model file, or train one with Tools > Train a model.")
    active = untrained_model(engine_options)
    active.notes = notes + active.notes
    return active


def startup_model(path: str | None, engine_options: dict[str, Any] | None = None) -> ActiveModel:
    """The model to start with: ``path`` if usable, else the default (with a note why not)."""
    if path:
        try:
            return load_model_file(path, engine_options)
        except Exception as exc:  # refused or failed in any other way: fall back, never end without a model
            log.warning("start-up model failed to load: %s", type(exc).__name__)
            active = default_model(engine_options)
            instead = ("An untrained model is used instead." if active.untrained
                       else "The bundled model is used instead.")
            active.notes.insert(0, f"The model {Path(path).name} could not be used: {failure_reason(exc)} {instead}")
            active.refused_path = path
            return active
    return default_model(engine_options)


class ModelController(QObject):
    """Loads models in a worker and announces the active one.

    ``ready(ActiveModel)`` when a model is in use; ``failed(message)`` when a
    model the user chose was refused (the previous model stays active);
    ``loading(text)`` while a load is under way.
    """

    loading = Signal(str)
    ready = Signal(object)
    failed = Signal(str)

    def __init__(self, runner: WorkerRunner, settings: AppSettings, *,
                 engine_options: dict[str, Any] | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.runner = runner
        self.settings = settings
        self.engine_options = dict(engine_options or {})
        self.active: ActiveModel | None = None
        self.loads = 0
        self._busy = False

    @property
    def busy(self) -> bool:
        return self._busy

    def load_startup(self, explicit: str | None = None) -> None:
        """Start-up choice: ``explicit`` (command line), else the remembered model, else the default."""
        path = explicit or self.settings.last_model
        self._start(f"Loading model {Path(path).name}..." if path else "Loading the default model...",
                    startup_model, path, self.engine_options, remember=bool(explicit))

    def open_model(self, path: str) -> None:
        """Switch to the model file at ``path`` (refused files leave the current model in place)."""
        self._start(f"Loading model {Path(path).name}...", load_model_file, str(path), self.engine_options,
                    remember=True, chosen=str(path))

    def use_default(self) -> None:
        self._start("Loading the default model...", default_model, self.engine_options, remember=False,
                    forget_last=True)

    def _start(self, text: str, fn: Any, *args: Any, remember: bool, chosen: str | None = None,
               forget_last: bool = False) -> None:
        self._busy = True
        self.loading.emit(text)
        self.runner.start_function(
            fn, *args,
            returned=lambda active: self._on_ready(active, remember, forget_last),
            errored=lambda exc: self._on_error(exc, chosen),
        )

    def _on_ready(self, active: ActiveModel, remember: bool, forget_last: bool) -> None:
        self._busy = False
        self.loads += 1
        if active.refused_path:  # the model that failed is forgotten, and the fallback not remembered for it
            self.settings.forget_model(active.refused_path)
        elif active.path and (remember or self.settings.last_model == active.path):
            self.settings.last_model = active.path
            self.settings.add_recent_model(active.path)
        if forget_last:
            self.settings.last_model = None
        self.active = active
        self.ready.emit(active)

    def _on_error(self, exc: Exception, chosen: str | None) -> None:
        self._busy = False
        if not isinstance(exc, ModelFileError):
            log.warning("model loading failed: %s", type(exc).__name__)
        if chosen:  # a model that failed is not offered again as the last or a recent one
            self.settings.forget_model(chosen)
            message = f"The model {Path(chosen).name} could not be used: {failure_reason(exc)}"
        else:
            message = f"No model could be loaded: {failure_reason(exc)}"
        if self.active is not None:
            message += f"\n\nStill using: {self.active.display_name}."
        else:
            message += ("\n\nNo model is in use. Open a model file with Model > Open model file, "
                        "or train one with Tools > Train a model.")
        self.failed.emit(message)
