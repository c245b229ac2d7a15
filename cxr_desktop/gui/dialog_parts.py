"""Small widget-building helpers shared by the dialogs (one place for parts several dialogs lay out alike)."""

from __future__ import annotations

from typing import Any, Callable, Iterable

from PySide6.QtWidgets import QBoxLayout, QFormLayout, QHBoxLayout, QLabel, QLayout, QProgressBar, QPushButton, QWidget


def add_progress_and_status(layout: QBoxLayout, text: str = "") -> tuple[QProgressBar, QLabel]:
    """Add an idle progress bar (0 of 1) and a word-wrapped status line showing ``text`` below it."""
    progress = QProgressBar()
    progress.setRange(0, 1)
    progress.setValue(0)
    status = QLabel(text)
    status.setWordWrap(True)
    layout.addWidget(progress)
    layout.addWidget(status)
    return progress, status


def end_busy(progress: QProgressBar) -> None:
    """A busy (indeterminate 0..0) bar goes back to an idle 0..1 one; a bar showing counts keeps them."""
    if progress.maximum() == 0:
        progress.setRange(0, 1)


def add_button_row(layout: QBoxLayout, *buttons: tuple[str, Callable[[], Any]]) -> list[QPushButton]:
    """Add a right-aligned row of ``(text, on_click)`` push buttons; they are returned in that order."""
    row = QHBoxLayout()
    row.addStretch(1)
    made = []
    for text, on_click in buttons:
        button = QPushButton(text)
        button.clicked.connect(on_click)
        row.addWidget(button)
        made.append(button)
    layout.addLayout(row)
    return made


def add_form_rows(form: QFormLayout, rows: Iterable[tuple[str, QWidget | QLayout]]) -> None:
    """Add ``(label, field)`` rows to ``form`` in order ("" leaves the label column blank)."""
    for label, field in rows:
        form.addRow(label, field)
