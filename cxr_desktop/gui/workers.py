"""Background work for the viewer: image loading and classification off the GUI thread.

Every job runs as a superqt worker (``create_worker``) on a dedicated
``QThreadPool`` and reports through Qt signals, which Qt delivers on the GUI
thread. Jobs the user has moved past are superseded: while one job runs, only
the newest request waits; older ones are dropped without running. A running
job is not interrupted (a backbone pass cannot be stopped half-way), but its
result is only cached, not shown, if the user has moved on.

Predictions (class probabilities + Grad-CAM) are cached per (image path,
frame, model, explained class), so going back to an image is instant.
torch is never imported here: the engine module is imported by the model
controller on a worker thread (:mod:`cxr_desktop.gui.model_controller`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtCore import QObject, QThreadPool, QTimer, Signal
from PySide6.QtGui import QImage

from cxr_desktop.errors import ImageError
from cxr_desktop.inference.protocol import Engine

if TYPE_CHECKING:  # torch-free at run time; imaging and superqt load when the first job starts
    from cxr_desktop.viewing.display_mapper import DisplayMapper
    from cxr_desktop.gui.overlay import HeatmapLayer
    from cxr_desktop.viewing.window_presets import Preset
    from cxr_desktop.imaging.types import StudyImage
    from cxr_desktop.inference.engine import ImageResult

log = logging.getLogger(__name__)

PREDICTION_CACHE_BYTES = 384 * 1024 * 1024
#: Decoded frames kept for the viewer (LRU by bytes): a multi-frame series plays from memory.
IMAGE_CACHE_BYTES = 512 * 1024 * 1024
#: During cine, frames decoded ahead of the one on screen (fewer when they would not fit the cache).
PREFETCH_AHEAD = 8
#: Decoded images of files other than the one asked for last, kept as well (going back is instant).
OTHER_FILES_ITEMS = 4


class WorkerRunner:
    """Starts superqt workers on its own thread pool and keeps them alive until they finish."""

    def __init__(self, name: str, threads: int = 1):
        self.pool = QThreadPool()
        self.pool.setObjectName(name)
        self.pool.setMaxThreadCount(max(1, threads))
        self._live: set[Any] = set()

    def _start(self, worker: Any, signals: dict[str, Callable | None]) -> Any:
        for name, slot in signals.items():
            if slot is not None:
                getattr(worker, name).connect(slot)
        self._live.add(worker)
        worker.finished.connect(partial(self._live.discard, worker))
        self.pool.start(worker)
        return worker

    def start_function(self, fn: Callable[..., Any], *args: Any, returned: Callable | None = None,
                       errored: Callable | None = None, finished: Callable | None = None,
                       **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` in the pool; ``returned(value)`` / ``errored(exc)`` on the GUI thread."""
        from superqt.utils import create_worker

        worker = create_worker(fn, *args, _start_thread=False, _ignore_errors=True, **kwargs)
        return self._start(worker, {"returned": returned, "errored": errored, "finished": finished})

    def start_generator(self, fn: Callable[..., Any], *args: Any, yielded: Callable | None = None,
                        returned: Callable | None = None, errored: Callable | None = None,
                        finished: Callable | None = None, **kwargs: Any) -> Any:
        """Run a generator function; each yielded item arrives via ``yielded``; ``quit()`` stops it.

        A generator stopped by ``quit()`` is closed when its worker finishes (superqt leaves it suspended),
        so its ``finally`` runs then, not whenever it is collected: a training job it started ends, its
        temporary files go.
        """
        from superqt.utils import GeneratorWorker, create_worker

        started: list[Any] = []

        def run(*a: Any, **kw: Any) -> Any:
            gen = fn(*a, **kw)
            started.append(gen)
            return (yield from gen)

        def close() -> None:
            for gen in started:
                gen.close()  # a no-op for one that ended; the worker's loop has left it, so never "running"

        worker = create_worker(run, *args, _start_thread=False, _ignore_errors=True,
                               _worker_class=GeneratorWorker, **kwargs)
        worker.finished.connect(close)
        return self._start(worker, {"yielded": yielded, "returned": returned, "errored": errored,
                                    "finished": finished})

    @property
    def active(self) -> int:
        return len(self._live)

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        """Drop queued jobs, ask generator jobs to stop, and wait up to ``timeout_ms`` for running ones."""
        self.pool.clear()  # jobs that have not started never will
        for worker in list(self._live):
            try:
                worker.quit()
            except RuntimeError:  # already deleted
                pass
        return bool(self.pool.waitForDone(timeout_ms))


# ---------------------------------------------------------------- images


@dataclass
class LoadedStudy:
    """A decoded frame for the viewer, with its DICOM tags; or why it could not be read."""

    path: str
    frame: int
    image: StudyImage | None
    error: ImageError | None = None
    tags: list[tuple[str, str, str, str]] | None = None
    tags_error: str | None = None
    mapper: DisplayMapper | None = None  # prepared display mapping (see canvas.set_image)
    prepared: QImage | None = None  # the picture with the file's default window, RGB32
    presets: list[Preset] | None = None  # window presets for this image
    scope: Any = None  # ScopeResult of the input-safety rules (None: not checked)
    scope_settings: Any = None  # the ScopeSettings ``scope`` was checked under
    frame_tags: list[tuple[str, str, str, str]] | None = None  # this frame's per-frame functional groups

    @property
    def nbytes(self) -> int:
        """Memory held by this frame (pixels, colour, mask, display table index, prepared picture)."""
        n = 4096
        im = self.image
        if im is not None:
            for arr in (im.pixels, im.rgb, im.padding_mask):
                n += int(getattr(arr, "nbytes", 0))
        idx = getattr(self.mapper, "_idx", None)
        n += int(getattr(idx, "nbytes", 0))
        if self.prepared is not None:
            n += int(self.prepared.sizeInBytes())
        return n


_IDENTIFYING: OrderedDict[tuple[Any, ...], frozenset[str]] = OrderedDict()  # per file version
_IDENTIFYING_FILES = 32


def _register_identifying(path: str) -> None:
    """Register the file's PS3.15 Annex E values with the redactor, reading its header once per version."""
    from cxr_desktop.imaging.loader import dicom_dataset, file_version
    from cxr_desktop.redaction import REDACTOR, identifying_values, register_file

    try:
        version = file_version(path)
        values = _IDENTIFYING.get(version)
        if values is None:
            values = frozenset(identifying_values(dicom_dataset(path)))
            _IDENTIFYING[version] = values
            while len(_IDENTIFYING) > _IDENTIFYING_FILES:
                _IDENTIFYING.popitem(last=False)
        REDACTOR.register_values(values)
    except Exception:  # not DICOM, or a header the cache cannot parse: the redactor's own bounded read
        register_file(path)


def load_for_view(path: str, frame: int = 0, scope_settings: Any = None) -> LoadedStudy:
    """Decode one frame, prepare its display, run the input-safety rules, and for DICOM read its tags.

    Runs in a worker; never raises ImageError. ``scope`` stays None when the rules fail
    (the window then checks again itself). A DICOM file is parsed once for all its frames
    (``reuse_parsed``: header, tags and redaction values come from that one parse).
    """
    from cxr_desktop.gui.canvas import packed_to_qimage
    from cxr_desktop.viewing.display_mapper import DisplayMapper
    from cxr_desktop.viewing.window_presets import presets_for
    from cxr_desktop.imaging.loader import load_image, read_dicom_tags, read_frame_tags

    _register_identifying(path)  # its PS3.15 Annex E values (names, IDs, dates, ...) never reach a crash log
    try:
        image = load_image(path, frame=frame, reuse_parsed=True)
    except ImageError as exc:
        return LoadedStudy(path, frame, None, exc)
    mapper = DisplayMapper(image)
    picture = packed_to_qimage(mapper.render_packed(mapper.default_window, image.invert_for_display))
    out = LoadedStudy(path, frame, image, mapper=mapper, prepared=picture, presets=presets_for(image))
    out.scope, out.scope_settings = check_scope(image, scope_settings)
    if image.source_format == "dicom":
        try:
            out.tags = read_dicom_tags(path, reuse_parsed=True)
            if image.frame_count > 1:
                out.frame_tags = read_frame_tags(path, frame)
        except ImageError as exc:
            out.tags_error = exc.user_message()
    return out


def check_scope(image: StudyImage, settings: Any = None) -> tuple[Any, Any]:
    """(ScopeResult, the settings used) for the viewer; (None, settings) if a rule fails unexpectedly."""
    from cxr_desktop.scope import ScopeSettings, check_image

    settings = settings or ScopeSettings()
    try:
        return check_image(image, settings), settings
    except Exception:  # a broken rule must not stop the viewer
        log.exception("input-safety check failed")
        return None, settings


class _LatestOnly:
    """One job at a time on a runner; a new request replaces any waiting one."""

    def __init__(self, runner: WorkerRunner, done: Callable[[Any, Any], None],
                 failed: Callable[[Any, Exception], None], idle: Callable[[bool], None]):
        self.runner = runner
        self._done = done
        self._failed = failed
        self._idle = idle
        self.running: Any = None  # key of the job in the pool
        self.pending: tuple[Any, Callable[..., Any], tuple[Any, ...]] | None = None
        self.superseded = 0

    @property
    def busy(self) -> bool:
        return self.running is not None or self.pending is not None

    def submit(self, key: Any, fn: Callable[..., Any], *args: Any) -> None:
        if key == self.running:  # already being computed: that result will do
            self.drop_pending()
            self._idle(self.busy)
            return
        if self.pending is not None and self.pending[0] != key:
            self.superseded += 1
        self.pending = (key, fn, args)
        self._kick()

    def drop_pending(self) -> None:
        if self.pending is not None:
            self.superseded += 1
        self.pending = None

    def _kick(self) -> None:
        if self.running is not None or self.pending is None:
            self._idle(self.busy)
            return
        key, fn, args = self.pending
        self.pending = None
        self.running = key
        self._idle(True)
        self.runner.start_function(fn, *args, returned=partial(self._settle, self._done, key),
                                   errored=partial(self._settle, self._failed, key))

    def _settle(self, report: Callable[[Any, Any], None], key: Any, outcome: Any) -> None:
        """The running job ended: ``report`` its value or exception, then start the waiting request."""
        self.running = None
        try:
            report(key, outcome)
        finally:
            self._kick()


class ImageLoader(QObject):
    """Decodes frames in a worker; only the latest request is reported (``loaded``).

    Decoded frames stay in an LRU cache bounded by bytes (``cache_bytes``), so a
    multi-frame series, once decoded, plays from memory. :meth:`prefetch` decodes
    frames ahead (cine) while the worker has nothing asked for; ``busy`` is only about
    the frame asked for, never about prefetching.
    """

    loaded = Signal(object)  # LoadedStudy
    busy_changed = Signal(bool)

    def __init__(self, runner: WorkerRunner | None = None, parent: QObject | None = None,
                 cache_bytes: int = IMAGE_CACHE_BYTES):
        super().__init__(parent)
        self.runner = runner or WorkerRunner("image-loader", threads=1)
        self._queue = _LatestOnly(self.runner, self._on_done, self._on_failed, self._queue_idle)
        self._wanted: tuple[str, int] | None = None
        self._waiting = False  # the wanted frame is being decoded (not yet reported)
        self._cache: OrderedDict[tuple[str, int], LoadedStudy] = OrderedDict()
        self._cache_bytes = 0
        self.cache_limit = int(cache_bytes)
        self._prefetch: list[tuple[str, int]] = []
        self.decodes = 0  # frames decoded (cache misses and prefetches), for tests and benches
        self.scope_settings: Any = None  # ScopeSettings for the input-safety rules (None: defaults)

    @property
    def busy(self) -> bool:
        """The frame last asked for is still being decoded."""
        return self._waiting

    @property
    def superseded(self) -> int:
        """Loads dropped before they ran because the user moved on."""
        return self._queue.superseded

    @property
    def cache_bytes(self) -> int:
        return self._cache_bytes

    def is_cached(self, path: str, frame: int) -> bool:
        return (str(path), int(frame)) in self._cache

    def request(self, path: str, frame: int = 0) -> None:
        key = (str(path), int(frame))
        self._wanted = key
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            self._queue.drop_pending()
            self._set_waiting(False)
            self.loaded.emit(hit)
            self._kick_prefetch()
            return
        self._set_waiting(True)
        self._queue.submit(key, self._load, key[0], key[1], self.scope_settings)

    def prefetch(self, path: str, frames: list[int]) -> None:
        """Decode ``frames`` of ``path`` in this order while nothing is asked for (replaces the last list)."""
        self._prefetch = [(str(path), int(f)) for f in frames]
        self._kick_prefetch()

    def stop_prefetch(self) -> None:
        self._prefetch = []

    def forget(self, path: str) -> None:
        for key in [k for k in self._cache if k[0] == path]:
            self._cache_bytes -= self._cache.pop(key).nbytes
        self._prefetch = [k for k in self._prefetch if k[0] != path]

    def _load(self, path: str, frame: int, scope_settings: Any) -> LoadedStudy:
        self.decodes += 1
        return load_for_view(path, frame, scope_settings)

    def _set_waiting(self, on: bool) -> None:
        if on != self._waiting:
            self._waiting = on
            self.busy_changed.emit(on)

    def _queue_idle(self, _busy: bool) -> None:
        self.busy_changed.emit(self._waiting)

    def _kick_prefetch(self) -> None:
        if self._queue.busy:
            return
        while self._prefetch:
            key = self._prefetch.pop(0)
            if key not in self._cache:
                self._queue.submit(key, self._load, key[0], key[1], self.scope_settings)
                return

    def _store(self, key: tuple[str, int], study: LoadedStudy) -> None:
        old = self._cache.pop(key, None)
        if old is not None:
            self._cache_bytes -= old.nbytes
        size = study.nbytes
        if size > self.cache_limit:
            return
        self._cache[key] = study
        self._cache_bytes += size
        while self._cache_bytes > self.cache_limit:
            _, dropped = self._cache.popitem(last=False)
            self._cache_bytes -= dropped.nbytes
        current = self._wanted[0] if self._wanted else key[0]
        others = [k for k in self._cache if k[0] != current]  # oldest first
        for k in others[:max(0, len(others) - OTHER_FILES_ITEMS)]:
            self._cache_bytes -= self._cache.pop(k).nbytes

    def prefetch_series(self, path: str, frame: int, frame_count: int) -> None:
        """Cine: decode the frames after ``frame`` (wrapping), as many as fit the cache, up to
        :data:`PREFETCH_AHEAD`."""
        hit = self._cache.get((str(path), int(frame)))
        per = hit.nbytes if hit is not None else 0
        ahead = min(PREFETCH_AHEAD, frame_count - 1)
        if per:
            ahead = min(ahead, max(1, self.cache_limit // per // 2))
        self.prefetch(path, [(frame + i) % frame_count for i in range(1, ahead + 1)])

    def _on_done(self, key: tuple[str, int], study: LoadedStudy) -> None:
        if study.image is not None:
            self._store(key, study)
        if key == self._wanted and self._waiting:
            self._set_waiting(False)
            self.loaded.emit(study)
        if self._queue.pending is None:
            QTimer.singleShot(0, self, self._kick_prefetch)  # after _LatestOnly has marked the job done

    def _on_failed(self, key: tuple[str, int], exc: Exception) -> None:
        log.warning("image loading failed unexpectedly: %s", type(exc).__name__)
        if key == self._wanted and self._waiting:
            from cxr_desktop.errors import Reason

            self._set_waiting(False)
            err = ImageError(Reason.UNREADABLE, f"The file could not be read ({type(exc).__name__}).", key[0])
            self.loaded.emit(LoadedStudy(key[0], key[1], None, err))


# ---------------------------------------------------------------- predictions


@dataclass(frozen=True)
class PredictionKey:
    """What a cached prediction depends on."""

    path: str
    frame: int
    model_id: str
    cam_class: str | None  # None: the map explains the finding (positive) class


@dataclass
class PredictionOutcome:
    """A finished prediction for the current image (``result``), or why there is none (``error``)."""

    key: PredictionKey
    result: "ImageResult | None"
    error: str | None = None
    from_cache: bool = False
    layer: "HeatmapLayer | None" = None  # the heatmap prepared for drawing (see overlay.py)


@dataclass
class _Computed:
    result: "ImageResult"
    layer: "HeatmapLayer | None"

    @property
    def nbytes(self) -> int:
        heat = getattr(self.result, "heatmap", None)
        return int(getattr(heat, "nbytes", 0)) + 4096


def predict_for_view(engine: Engine, image: StudyImage, cam_class: str | None,
                     colormap: str | None = None) -> _Computed:
    """Prediction + Grad-CAM, and the heatmap shrunk and coloured for drawing (all off the GUI thread)."""
    from cxr_desktop.gui.overlay import HeatmapLayer
    from cxr_desktop.preprocess import model_image

    # The model sees the file as screening and training do; the heatmap comes back in full geometry.
    result = engine.predict(model_image(image, engine.card.input_size), cam=True, cam_class=cam_class)
    layer = None
    if result.heatmap is not None:
        layer = HeatmapLayer(result.heatmap, result.cam_class)
        if colormap:
            layer.image(colormap)
    return _Computed(result, layer)


class ClassifierWorker(QObject):
    """Prediction + Grad-CAM in a worker thread, superseded when the user moves on, cached.

    ``engine_runner`` should be the runner the model controller loads engines on,
    so that loading and predicting never compete for the CPU.
    """

    result_ready = Signal(object)  # PredictionOutcome, only for the image currently wanted
    busy_changed = Signal(bool)

    def __init__(self, engine_runner: WorkerRunner, parent: QObject | None = None,
                 cache_bytes: int = PREDICTION_CACHE_BYTES):
        super().__init__(parent)
        self.runner = engine_runner
        self.engine: Engine | None = None
        self.model_id: str | None = None
        self.computations = 0  # engine calls actually made (cache hits excluded)
        self._queue = _LatestOnly(self.runner, self._on_done, self._on_failed, self.busy_changed.emit)
        self._wanted: PredictionKey | None = None
        self._cache: OrderedDict[PredictionKey, _Computed] = OrderedDict()
        self._cache_bytes = 0
        self._cache_limit = cache_bytes

    @property
    def busy(self) -> bool:
        return self._queue.busy

    @property
    def superseded(self) -> int:
        """Requests dropped before they ran because the user moved on."""
        return self._queue.superseded

    def set_engine(self, engine: Engine, model_id: str) -> None:
        """Use ``engine`` from now on (waiting requests for the old one are dropped)."""
        self.engine = engine
        self.model_id = model_id
        self._queue.drop_pending()
        self._wanted = None

    def key_for(self, image: StudyImage, cam_class: str | None = None) -> PredictionKey | None:
        if self.model_id is None:
            return None
        return PredictionKey(str(image.path), int(image.frame_index), self.model_id, cam_class)

    def cached(self, key: PredictionKey) -> "ImageResult | None":
        hit = self._cache.get(key)
        return hit.result if hit is not None else None

    def request(self, image: StudyImage, *, cam_class: str | None = None,
                colormap: str | None = None) -> PredictionKey | None:
        """Predict ``image`` (from the cache when possible); the outcome comes via ``result_ready``.

        ``colormap``: colour the heatmap in the worker too (what the overlay will show first).
        """
        key = self.key_for(image, cam_class)
        if key is None or self.engine is None:
            return None
        self._wanted = key
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            self._queue.drop_pending()
            self.busy_changed.emit(self._queue.busy)
            self.result_ready.emit(PredictionOutcome(key, hit.result, None, True, hit.layer))
            return key
        self._queue.submit(key, self._run, self.engine, image, cam_class, colormap)
        return key

    def cancel(self) -> None:
        """The user moved to something that needs no prediction: drop what waits."""
        self._wanted = None
        self._queue.drop_pending()
        self.busy_changed.emit(self._queue.busy)

    def _run(self, engine: Engine, image: StudyImage, cam_class: str | None, colormap: str | None) -> _Computed:
        self.computations += 1
        return predict_for_view(engine, image, cam_class, colormap)

    def _store(self, key: PredictionKey, done: _Computed) -> None:
        self._cache[key] = done
        self._cache_bytes += done.nbytes
        while self._cache_bytes > self._cache_limit and len(self._cache) > 1:
            _, old = self._cache.popitem(last=False)
            self._cache_bytes -= old.nbytes

    def _on_done(self, key: PredictionKey, done: _Computed) -> None:
        if key.model_id == self.model_id:
            self._store(key, done)
        if key == self._wanted:
            self.result_ready.emit(PredictionOutcome(key, done.result, layer=done.layer))

    def _on_failed(self, key: PredictionKey, exc: Exception) -> None:
        log.warning("prediction failed: %s", type(exc).__name__)  # no paths, no patient data
        if key == self._wanted:
            self.result_ready.emit(PredictionOutcome(
                key, None, f"The classifier could not process this image ({type(exc).__name__}). "
                "The image can still be viewed; try another model or report the problem."))
