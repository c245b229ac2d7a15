"""A single queue that owns the engine: calls from any thread run one at a time, in order."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from cxr_desktop.inference.protocol import Engine

T = TypeVar("T")


class EngineService:
    """Runs every engine call on one dedicated thread.

    The GUI (or any caller) submits work and gets a :class:`~concurrent.futures.Future`;
    the model is only ever touched from the service thread.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cxr-engine")
        self.engine: Engine | None = None

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> "Future[T]":
        """Run ``fn(engine, *args, **kwargs)`` on the service thread."""
        return self._pool.submit(lambda: fn(self.engine, *args, **kwargs))

    def set_engine(self, factory: Callable[[], Any]) -> "Future[Any]":
        """Build (load) a new engine on the service thread and make it current."""

        def _load() -> Any:
            self.engine = factory()
            return self.engine

        return self._pool.submit(_load)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
