"""What the viewer remembers between sessions (QSettings): recent files and models, overlay look.

``CXR_SETTINGS_FILE`` points the app at an INI file instead of the user's native
settings store; tests and the screenshot script use it so they never touch a
real user's settings. Only file paths and display preferences are stored; never
patient data.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from PySide6.QtCore import QSettings

if TYPE_CHECKING:
    from cxr_desktop.scope import ScopeSettings

MAX_RECENT = 10
DEFAULT_OPACITY = 40
DEFAULT_COLORMAP = "Turbo"


def _as_list(value: Any) -> list[str]:
    """QSettings returns a str for one-element lists in INI files, None when absent."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


class AppSettings:
    """Typed access to the app's QSettings."""

    def __init__(self, qsettings: QSettings):
        self.q = qsettings

    @classmethod
    def from_env(cls) -> "AppSettings":
        """INI file from ``CXR_SETTINGS_FILE`` if set, else the user's native settings."""
        path = os.environ.get("CXR_SETTINGS_FILE")
        if path:
            return cls(QSettings(path, QSettings.Format.IniFormat))
        return cls(QSettings("CXR Review", "CXR Review"))

    # -- lists ----------------------------------------------------------
    def _list(self, key: str) -> list[str]:
        return _as_list(self.q.value(key))

    def _push(self, key: str, item: str) -> list[str]:
        items = [item] + [x for x in self._list(key) if x != item]
        items = items[:MAX_RECENT]
        self.q.setValue(key, items)
        self.q.sync()
        return items

    def _remove(self, key: str, item: str) -> None:
        self.q.setValue(key, [x for x in self._list(key) if x != item])
        self.q.sync()

    @property
    def recent_files(self) -> list[str]:
        return self._list("recent/files")

    def add_recent_file(self, path: str) -> list[str]:
        return self._push("recent/files", path)

    def clear_recent_files(self) -> None:
        self.q.setValue("recent/files", [])

    @property
    def recent_models(self) -> list[str]:
        return self._list("recent/models")

    def add_recent_model(self, path: str) -> list[str]:
        return self._push("recent/models", path)

    def forget_model(self, path: str) -> None:
        """Drop a refused model from the recent list (and as the last model)."""
        self._remove("recent/models", path)
        if self.last_model == path:
            self.last_model = None

    # -- scalars --------------------------------------------------------
    @property
    def last_model(self) -> str | None:
        value = self.q.value("model/last")
        return str(value) if value else None

    @last_model.setter
    def last_model(self, path: str | None) -> None:
        if path:
            self.q.setValue("model/last", path)
        else:
            self.q.remove("model/last")
        self.q.sync()

    @property
    def overlay_opacity(self) -> int:
        try:
            return max(0, min(100, int(self.q.value("overlay/opacity", DEFAULT_OPACITY))))
        except (TypeError, ValueError):
            return DEFAULT_OPACITY

    @overlay_opacity.setter
    def overlay_opacity(self, value: int) -> None:
        self.q.setValue("overlay/opacity", int(value))

    @property
    def overlay_colormap(self) -> str:
        return str(self.q.value("overlay/colormap", DEFAULT_COLORMAP))

    @overlay_colormap.setter
    def overlay_colormap(self, name: str) -> None:
        self.q.setValue("overlay/colormap", name)

    @property
    def overlay_visible(self) -> bool:
        value = self.q.value("overlay/visible", True)
        if isinstance(value, str):
            return value.lower() in ("1", "true", "yes")
        return bool(value)

    @overlay_visible.setter
    def overlay_visible(self, on: bool) -> None:
        self.q.setValue("overlay/visible", bool(on))

    @property
    def last_dir(self) -> str:
        return str(self.q.value("recent/dir", ""))

    @last_dir.setter
    def last_dir(self, path: str) -> None:
        self.q.setValue("recent/dir", path)

    @property
    def theme(self) -> str:
        """Colour theme, "dark" (the reading-room default) or "light"."""
        value = str(self.q.value("ui/theme", "dark"))
        return value if value in ("dark", "light") else "dark"

    @theme.setter
    def theme(self, name: str) -> None:
        self.q.setValue("ui/theme", name)

    @property
    def scope_settings(self) -> "ScopeSettings":
        """Input-safety settings, stored as one JSON value (bad or missing values: defaults)."""
        from cxr_desktop.scope import ScopeSettings

        raw = self.q.value("scope/settings", "")
        try:
            data = json.loads(raw) if isinstance(raw, str) and raw else None
        except ValueError:
            data = None
        return ScopeSettings.from_dict(data)

    @scope_settings.setter
    def scope_settings(self, settings: "ScopeSettings") -> None:
        self.q.setValue("scope/settings", json.dumps(settings.to_dict()))

    def sync(self) -> None:
        self.q.sync()
