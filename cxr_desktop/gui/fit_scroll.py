"""A scroll area that asks for exactly the height its content needs at the width it has.

Used for panels of wrapped text (the decision-aid panel): while there is room, the whole
panel is shown without a scroll bar; when there is not, it scrolls. Wrapped labels are
never squeezed below the height of their text (which would cut sentences off).
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QSize, Qt
from PySide6.QtWidgets import QFrame, QScrollArea, QWidget

MIN_VISIBLE_HEIGHT = 90  # px the panel keeps when the dock is very short (the rest scrolls)


class FitScrollArea(QScrollArea):
    """Vertical scrolling around ``widget``; size hint = the widget's height for the current width."""

    def __init__(self, widget: QWidget, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWidgetResizable(True)  # the content follows the width; QScrollArea honours height-for-width
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.setWidget(widget)
        widget.installEventFilter(self)  # its layout changes (a banner appears): ask for a new height

    def _content_height(self, width: int) -> int:
        w = self.widget()
        if w is None:
            return 0
        h = w.heightForWidth(width) if w.hasHeightForWidth() else -1
        return max(h, w.minimumSizeHint().height())

    def sizeHint(self) -> QSize:  # noqa: N802
        width = max(1, self.viewport().width())
        return QSize(super().sizeHint().width(), self._content_height(width) + 2 * self.frameWidth())

    def minimumSizeHint(self) -> QSize:  # noqa: N802
        return QSize(super().minimumSizeHint().width(), min(MIN_VISIBLE_HEIGHT, self.sizeHint().height()))

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802
        if obj is self.widget() and event.type() in (QEvent.Type.LayoutRequest, QEvent.Type.Show,
                                                      QEvent.Type.Hide):
            self.updateGeometry()
        return False

    def resizeEvent(self, event) -> None:  # noqa: N802
        old, new = event.oldSize().width(), event.size().width()
        super().resizeEvent(event)
        if old != new:  # another width wraps the text onto another number of lines
            self.updateGeometry()
