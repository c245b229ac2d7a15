"""A submenu of exclusive, checkable choices (cine rate, theme): one checked at a time."""

from __future__ import annotations

from typing import Callable, Hashable, Iterable, TypeVar

from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import QMenu

T = TypeVar("T", bound=Hashable)


def add_choice_menu(parent: QMenu, title: str, choices: Iterable[T], current: T,
                    label: Callable[[T], str], pick: Callable[[T], None]) -> dict[T, QAction]:
    """Add submenu ``title`` to ``parent`` with one checkable action per choice (``current`` checked).

    Triggering an action calls ``pick(choice)``; the actions are returned by choice.
    """
    sub = parent.addMenu(title)
    group = QActionGroup(sub)
    actions: dict[T, QAction] = {}
    for choice in choices:
        act = sub.addAction(label(choice))
        act.setCheckable(True)
        act.setChecked(choice == current)
        act.triggered.connect(lambda _c=False, c=choice: pick(c))
        group.addAction(act)
        actions[choice] = act
    return actions
