"""When is a received study complete? After a quiet period, or when the association that brought it ends well.

DICOM has no "end of study" message: a sender pushes instances, over one or more
associations, and stops. A study counts as complete (ready to screen) when

* no new instance of it has arrived for ``quiet_s`` seconds, or
* an association that brought instances of it is *released* (a normal end) and no
  other open association is still bringing it.

An *aborted* association does not complete its studies at once (the sender may
retry); the quiet period still does. A study that receives more instances after it
was screened becomes pending again; screening it again scores only the new files
(the runner's resume skips the scored ones). Thread-safe: the SCP's association
threads report arrivals, the node's main loop takes ready studies.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Hashable


@dataclass
class _Study:
    last_arrival: float
    pending: bool = True  # has instances not yet handed out for screening
    associations: set[Hashable] = field(default_factory=set)  # open associations that brought instances
    released: bool = False  # an association that brought it was released


class StudyTracker:
    """Pending studies and their completion rule; :meth:`take_ready` hands out complete ones, oldest first."""

    PRUNE_EVERY_S = 60.0

    def __init__(self, quiet_s: float, clock: Callable[[], float] = time.monotonic, *, keep_s: float = 3600.0):
        self.quiet_s = float(quiet_s)
        self.keep_s = float(keep_s)  # a screened study's bookkeeping is dropped after this long without news
        self._clock = clock
        self._studies: dict[str, _Study] = {}
        self._cond = threading.Condition()
        self._pruned_at = clock()

    def __len__(self) -> int:
        """Studies tracked (pending, open, or screened within ``keep_s``)."""
        with self._cond:
            return len(self._studies)

    def arrived(self, study: str, association: Hashable | None = None) -> None:
        """An instance of ``study`` was stored (over ``association``, None for a re-queued study)."""
        with self._cond:
            s = self._studies.get(study)
            if s is None:
                s = self._studies[study] = _Study(last_arrival=self._clock())
            s.last_arrival = self._clock()
            s.pending = True
            s.released = False
            if association is not None:
                s.associations.add(association)
            self._cond.notify_all()

    def requeue(self, study: str) -> None:
        """A study received earlier (before a restart) whose screening is unfinished: ready at once."""
        with self._cond:
            s = self._studies.setdefault(study, _Study(last_arrival=self._clock()))
            s.pending, s.released = True, True
            self._cond.notify_all()

    def association_ended(self, association: Hashable, *, released: bool) -> None:
        """An association closed: released (normal end) completes its studies; aborted leaves the timer."""
        with self._cond:
            for s in self._studies.values():
                if association in s.associations:
                    s.associations.discard(association)
                    if released and not s.associations:
                        s.released = True
            self._cond.notify_all()

    def _is_ready(self, s: _Study, now: float) -> bool:
        if not s.pending:
            return False
        return s.released or now - s.last_arrival >= self.quiet_s

    def take_ready(self, timeout: float | None = None) -> str | None:
        """The oldest complete pending study (now no longer pending), waiting up to ``timeout`` s; else None."""
        deadline = None if timeout is None else self._clock() + timeout
        with self._cond:
            while True:
                now = self._clock()
                if now - self._pruned_at >= self.PRUNE_EVERY_S:  # a node runs for months: it must stay small
                    self._forget_idle(now, self.keep_s)
                ready = [(s.last_arrival, k) for k, s in self._studies.items() if self._is_ready(s, now)]
                if ready:
                    _, key = min(ready)
                    s = self._studies[key]
                    s.pending, s.released = False, False
                    return key
                if deadline is not None and now >= deadline:
                    return None
                # Wake for the next quiet-period expiry, a new arrival, or the caller's deadline.
                waits = [s.last_arrival + self.quiet_s - now for s in self._studies.values() if s.pending]
                if deadline is not None:
                    waits.append(deadline - now)
                self._cond.wait(max(0.01, min(waits)) if waits else None)

    def wake(self) -> None:
        """Wake a waiting :meth:`take_ready` (used when stopping)."""
        with self._cond:
            self._cond.notify_all()

    def pending(self) -> list[str]:
        """Studies with instances not yet handed out (complete or not)."""
        with self._cond:
            return [k for k, s in self._studies.items() if s.pending]

    def forget_idle(self, keep_s: float | None = None) -> None:
        """Drop bookkeeping of studies neither pending nor open for ``keep_s`` s (default :attr:`keep_s`);
        :meth:`take_ready` does it every minute. A study that gets more images later is simply new again."""
        with self._cond:
            self._forget_idle(self._clock(), self.keep_s if keep_s is None else keep_s)

    def _forget_idle(self, now: float, keep_s: float) -> None:
        self._pruned_at = now
        for k in [k for k, s in self._studies.items()
                  if not s.pending and not s.associations and now - s.last_arrival > keep_s]:
            del self._studies[k]
