"""Drive a nested generator to its end and keep its return value.

The training engine runs loops (``train_one_epoch``, ``evaluate``) that yield raw progress
tuples and *return* their result; the engine turns each tuple into a typed event. Writing
``while True: next(...) except StopIteration`` at every call site is easy to get subtly wrong,
so the loop lives here once.
"""

from __future__ import annotations

from typing import Callable, Generator, TypeVar

T = TypeVar("T")
E = TypeVar("E")
R = TypeVar("R")


def relay(gen: Generator[T, None, R], wrap: Callable[[T], E | None] | None = None) -> Generator[E, None, R]:
    """Yield ``wrap(item)`` for each item of ``gen`` (nothing when it gives None) and return ``gen``'s value.

    Without ``wrap`` the items are dropped: use it as ``value = yield from relay(gen)``.
    """
    while True:
        try:
            item = next(gen)
        except StopIteration as stop:
            return stop.value
        if wrap is not None:
            out = wrap(item)
            if out is not None:
                yield out


def drain(gen: Generator[T, None, R], on_item: Callable[[T], None] | None = None) -> R:
    """Run ``gen`` to its end outside a generator, calling ``on_item`` on each item; return its value."""
    box: list[R] = []

    def collect() -> Generator[T, None, None]:
        box.append((yield from gen))

    for item in collect():
        if on_item is not None:
            on_item(item)
    return box[0]
