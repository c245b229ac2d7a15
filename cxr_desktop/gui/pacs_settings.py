"""Settings -> PACS: named servers (DIMSE or DICOMweb), a "Test connection" button, the study cache limit.

Servers are kept in QSettings as the plain dict of :func:`cxr_desktop.pacs.servers_to_dict`
(JSON, never a password or token); secrets go to :class:`cxr_desktop.pacs.SecretStore`
(the system keyring where a backend exists, else this process's memory, with a warning
shown next to the password field). "Test connection" (C-ECHO or a QIDO-RS search) runs
in a worker, never on the GUI thread; its outcome is the PACS layer's sentence, which
names only the server, host, port and AE titles.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from PySide6.QtCore import QSettings, Signal
from PySide6.QtWidgets import (
    QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit,
    QListWidget, QPushButton, QSpinBox, QStackedWidget, QVBoxLayout, QWidget,
)

from cxr_desktop.gui.dialog_parts import add_form_rows
from cxr_desktop.gui.workers import WorkerRunner
from cxr_desktop.pacs import (
    DicomWebServer, DimseServer, PacsError, PacsServer, SecretStore, StudyCache, server_from_dict, servers_from_dict,
    servers_to_dict,
)
from cxr_desktop.pacs.cache import DEFAULT_LIMIT_BYTES

log = logging.getLogger(__name__)

SERVERS_KEY = "pacs/servers"
CACHE_LIMIT_KEY = "pacs/cache_limit_mb"
CACHE_DIR_KEY = "pacs/cache_dir"
GIB = 1024 ** 3

_SECRETS: SecretStore | None = None


def shared_secrets() -> SecretStore:
    """The app's one secret store (its in-memory fallback must outlive each dialog)."""
    global _SECRETS
    if _SECRETS is None:
        _SECRETS = SecretStore()
    return _SECRETS


class PacsSettings:
    """Typed access to the PACS part of QSettings (servers without secrets, cache limit and folder)."""

    def __init__(self, q: QSettings, secrets: SecretStore | None = None):
        self.q = q
        self.secrets = secrets or shared_secrets()

    @classmethod
    def of_app(cls, settings: QSettings | None = None, secrets: SecretStore | None = None) -> PacsSettings:
        """The store on ``settings``, or on the app's own settings when None (what every PACS dialog opens)."""
        if settings is None:
            from cxr_desktop.gui.settings import AppSettings

            settings = AppSettings.from_env().q
        return cls(settings, secrets)

    def servers(self) -> list[PacsServer]:
        """The saved servers; a damaged entry is skipped (logged by kind only, never by value)."""
        raw = self.q.value(SERVERS_KEY, "")
        if not raw:
            return []
        try:
            data = json.loads(str(raw))
        except ValueError:
            log.warning("the saved PACS servers are not valid JSON; none are used")
            return []
        entries = data.get("servers") if isinstance(data, dict) else None
        out: list[PacsServer] = []
        for e in entries if isinstance(entries, list) else []:
            try:
                server = server_from_dict(e)
            except PacsError:
                log.warning("a saved PACS server entry is invalid and was skipped")
                continue
            if all(s.name != server.name for s in out):
                out.append(server)
        return out

    def set_servers(self, servers: list[PacsServer]) -> None:
        self.q.setValue(SERVERS_KEY, json.dumps(servers_to_dict(servers)))
        self.q.sync()

    def server(self, name: str) -> PacsServer | None:
        return next((s for s in self.servers() if s.name == name), None)

    @property
    def cache_limit_bytes(self) -> int:
        try:
            mb = int(self.q.value(CACHE_LIMIT_KEY, DEFAULT_LIMIT_BYTES // (1024 ** 2)))
        except (TypeError, ValueError):
            return DEFAULT_LIMIT_BYTES
        return max(1, mb) * 1024 ** 2

    @cache_limit_bytes.setter
    def cache_limit_bytes(self, value: int) -> None:
        self.q.setValue(CACHE_LIMIT_KEY, max(1, int(value) // (1024 ** 2)))
        self.q.sync()

    @property
    def cache_dir(self) -> str:
        return str(self.q.value(CACHE_DIR_KEY, "") or "")

    def cache(self) -> StudyCache:
        """The local study cache with the configured limit (raises PacsError LOCAL when it cannot be made)."""
        return StudyCache(self.cache_dir or None, limit_bytes=self.cache_limit_bytes)


def describe(server: PacsServer) -> str:
    """One line for lists and combo boxes (no secret)."""
    if isinstance(server, DimseServer):
        return f"{server.name} - DIMSE {server.host}:{server.port} ({server.called_ae})"
    return f"{server.name} - DICOMweb {server.url}"


def test_connection(server: PacsServer, secrets: SecretStore | None) -> float:
    """Worker: C-ECHO / QIDO-RS round trip in seconds (raises PacsError with the sentence to show)."""
    from cxr_desktop.pacs import echo

    return echo(server, secrets=secrets)


class PacsDialog(QDialog):
    """Base of the PACS dialogs: a titled dialog over the PACS settings ``store``, with one worker thread."""

    def __init__(self, title: str, size: tuple[int, int], worker_name: str, parent: QWidget | None,
                 settings: QSettings | None, secrets: SecretStore | None):
        super().__init__(parent)
        self.setWindowTitle(title)
        self.resize(*size)
        self.store = PacsSettings.of_app(settings, secrets)
        self._runner = WorkerRunner(worker_name, threads=1)


class PacsSettingsDialog(PacsDialog):
    """Edit the PACS servers and the cache limit; ``saved`` is emitted after OK wrote them."""

    saved = Signal()
    connection_tested = Signal(bool, str)  # ok, the sentence shown

    def __init__(self, parent: QWidget | None = None, *, settings: QSettings | None = None,
                 secrets: SecretStore | None = None):
        super().__init__("PACS settings", (760, 520), "cxr-pacs-settings", parent, settings, secrets)
        self.secrets = self.store.secrets
        self._servers: list[dict[str, Any]] = [self._as_form(s) for s in self.store.servers()]
        self._current = -1
        self._testing = False
        self.last_test: tuple[bool, str] | None = None
        self._build_ui()
        for s in self._servers:
            self.server_list.addItem(s["name"])
        if self._servers:
            self.server_list.setCurrentRow(0)
        self._update_enabled()

    # -- UI
    def _build_ui(self) -> None:
        outer = QVBoxLayout(self)
        row = QHBoxLayout()
        left = QVBoxLayout()
        self.server_list = QListWidget()
        self.server_list.currentRowChanged.connect(self._select)
        add_dimse = QPushButton("Add DIMSE server")
        add_web = QPushButton("Add DICOMweb server")
        self.remove_button = QPushButton("Remove")
        add_dimse.clicked.connect(lambda: self.add_server("dimse"))
        add_web.clicked.connect(lambda: self.add_server("dicomweb"))
        self.remove_button.clicked.connect(self.remove_current)
        left.addWidget(QLabel("Servers:"))
        left.addWidget(self.server_list, 1)
        left.addWidget(add_dimse)
        left.addWidget(add_web)
        left.addWidget(self.remove_button)
        row.addLayout(left, 1)

        self.form_box = QGroupBox("Server")
        form_col = QVBoxLayout(self.form_box)
        common = QFormLayout()
        self.name_edit = QLineEdit()
        self.kind_combo = QComboBox()
        self.kind_combo.addItem("DIMSE (classic DICOM networking)", "dimse")
        self.kind_combo.addItem("DICOMweb (QIDO / WADO / STOW-RS)", "dicomweb")
        self.kind_combo.currentIndexChanged.connect(lambda i: self.stack.setCurrentIndex(i))
        self.timeout_spin = QDoubleSpinBox()
        self.timeout_spin.setRange(1, 600)
        self.timeout_spin.setSuffix(" s")
        common.addRow("Name:", self.name_edit)
        common.addRow("Kind:", self.kind_combo)
        common.addRow("Timeout:", self.timeout_spin)
        form_col.addLayout(common)

        self.stack = QStackedWidget()
        dimse = QWidget()
        f = QFormLayout(dimse)
        f.setContentsMargins(0, 0, 0, 0)
        self.host_edit = QLineEdit()
        self.port_spin = QSpinBox()
        self.port_spin.setRange(1, 65535)
        self.called_edit = QLineEdit()
        self.called_edit.setMaxLength(16)
        self.our_ae_edit = QLineEdit()
        self.our_ae_edit.setMaxLength(16)
        self.our_port_spin = QSpinBox()
        self.our_port_spin.setRange(0, 65535)
        self.our_port_spin.setSpecialValueText("none (C-GET only)")
        self.retrieve_combo = QComboBox()
        self.retrieve_combo.addItem("C-GET (one connection)", "get")
        self.retrieve_combo.addItem("C-MOVE (to our storage port)", "move")
        add_form_rows(f, (("Host:", self.host_edit), ("Port:", self.port_spin),
                          ("Called AE (the PACS):", self.called_edit), ("Our AE:", self.our_ae_edit),
                          ("Our storage port:", self.our_port_spin), ("Retrieve with:", self.retrieve_combo)))
        web = QWidget()
        g = QFormLayout(web)
        g.setContentsMargins(0, 0, 0, 0)
        self.url_edit = QLineEdit()
        self.url_edit.setPlaceholderText("http://host:8042/dicom-web")
        self.auth_combo = QComboBox()
        for label, key in (("None", "none"), ("Basic (user + password)", "basic"), ("Bearer token", "bearer")):
            self.auth_combo.addItem(label, key)
        self.user_edit = QLineEdit()
        self.secret_edit = QLineEdit()
        self.secret_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.secret_edit.setPlaceholderText("unchanged")
        self.keyring_label = QLabel(self.secrets.warning or "Kept in the system keyring.")
        self.keyring_label.setWordWrap(True)
        add_form_rows(g, (("URL:", self.url_edit), ("Authentication:", self.auth_combo),
                          ("User name:", self.user_edit), ("Password / token:", self.secret_edit),
                          ("", self.keyring_label)))
        self.auth_combo.currentIndexChanged.connect(lambda _i: self._update_enabled())
        self.stack.addWidget(dimse)
        self.stack.addWidget(web)
        form_col.addWidget(self.stack)

        test_row = QHBoxLayout()
        self.test_button = QPushButton("Test connection")
        self.test_button.clicked.connect(self.test_current)
        test_row.addWidget(self.test_button)
        test_row.addStretch(1)
        form_col.addLayout(test_row)
        self.test_label = QLabel("")
        self.test_label.setWordWrap(True)
        form_col.addWidget(self.test_label)
        form_col.addStretch(1)
        row.addWidget(self.form_box, 2)
        outer.addLayout(row, 1)

        cache_row = QHBoxLayout()
        self.cache_spin = QSpinBox()
        self.cache_spin.setRange(1, 1024 * 1024)
        self.cache_spin.setSuffix(" MB")
        self.cache_spin.setValue(self.store.cache_limit_bytes // (1024 ** 2))
        cache_row.addWidget(QLabel("Local study cache limit (oldest studies removed first):"))
        cache_row.addWidget(self.cache_spin)
        cache_row.addStretch(1)
        outer.addLayout(cache_row)
        self.error_label = QLabel("")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #b00020")
        outer.addWidget(self.error_label)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.save_and_close)
        buttons.rejected.connect(self.reject)
        outer.addWidget(buttons)

    # -- the form <-> plain dicts
    @staticmethod
    def _as_form(server: PacsServer) -> dict[str, Any]:
        from cxr_desktop.pacs import server_to_dict

        d = server_to_dict(server)
        d["secret"] = None  # None: unchanged (kept where it is)
        return d

    def _load_form(self, d: dict[str, Any]) -> None:
        self.name_edit.setText(d.get("name", ""))
        self.kind_combo.setCurrentIndex(0 if d.get("kind") == "dimse" else 1)
        self.timeout_spin.setValue(float(d.get("timeout_s") or 30.0))
        self.host_edit.setText(str(d.get("host", "127.0.0.1")))
        self.port_spin.setValue(int(d.get("port") or 104))
        self.called_edit.setText(str(d.get("called_ae", "")))
        self.our_ae_edit.setText(str(d.get("our_ae", "CXRREVIEW")))
        self.our_port_spin.setValue(int(d.get("our_port") or 0))
        self.retrieve_combo.setCurrentIndex(1 if d.get("retrieve") == "move" else 0)
        self.url_edit.setText(str(d.get("url", "")))
        self.auth_combo.setCurrentIndex(max(0, self.auth_combo.findData(d.get("auth", "none"))))
        self.user_edit.setText(str(d.get("username", "")))
        self.secret_edit.clear()
        self.test_label.clear()

    def _read_form(self) -> dict[str, Any]:
        kind = self.kind_combo.currentData()
        d: dict[str, Any] = {"kind": kind, "name": self.name_edit.text().strip(),
                             "timeout_s": float(self.timeout_spin.value())}
        if kind == "dimse":
            d.update(host=self.host_edit.text().strip(), port=self.port_spin.value(),
                     called_ae=self.called_edit.text().strip(), our_ae=self.our_ae_edit.text().strip(),
                     our_port=self.our_port_spin.value(), retrieve=self.retrieve_combo.currentData())
        else:
            d.update(url=self.url_edit.text().strip(), auth=self.auth_combo.currentData(),
                     username=self.user_edit.text().strip())
        old = self._servers[self._current] if 0 <= self._current < len(self._servers) else {}
        typed = self.secret_edit.text()
        d["secret"] = typed if typed else old.get("secret")
        d["_was"] = old.get("_was", old.get("name"))  # the saved name (its keyring entry)
        return d

    def _commit_form(self) -> None:
        if 0 <= self._current < len(self._servers):
            self._servers[self._current] = self._read_form()
            item = self.server_list.item(self._current)
            if item is not None:
                item.setText(self._servers[self._current]["name"] or "(no name)")

    def _select(self, row: int) -> None:
        if self._current == row:
            return
        self._commit_form()
        self._current = row
        if 0 <= row < len(self._servers):
            self._load_form(self._servers[row])
        self._update_enabled()

    def _update_enabled(self) -> None:
        has = 0 <= self._current < len(self._servers)
        self.form_box.setEnabled(has)
        self.remove_button.setEnabled(has)
        self.test_button.setEnabled(has and not self._testing)
        needs_secret = self.auth_combo.currentData() != "none"
        self.user_edit.setEnabled(self.auth_combo.currentData() == "basic")
        self.secret_edit.setEnabled(needs_secret)

    # -- actions
    def add_server(self, kind: str) -> None:
        self._commit_form()
        names = {s["name"] for s in self._servers}
        n = 1
        while f"PACS {n}" in names:
            n += 1
        d = {"kind": kind, "name": f"PACS {n}", "timeout_s": 30.0, "secret": None}
        if kind == "dimse":
            d.update(host="127.0.0.1", port=104, called_ae="", our_ae="CXRREVIEW", our_port=0, retrieve="get")
        else:
            d.update(url="", auth="none", username="")
        self._servers.append(d)
        self.server_list.addItem(d["name"])
        self.server_list.setCurrentRow(len(self._servers) - 1)

    def remove_current(self) -> None:
        row = self._current
        if not 0 <= row < len(self._servers):
            return
        self._servers.pop(row)
        self._current = -1
        self.server_list.takeItem(row)
        if self._servers:
            self.server_list.setCurrentRow(min(row, len(self._servers) - 1))
            self._select(self.server_list.currentRow())
        self._update_enabled()

    def current_server(self) -> PacsServer:
        """The server as the form says now (raises PacsError CONFIG with what is wrong)."""
        return server_from_dict({k: v for k, v in self._read_form().items() if k not in ("secret", "_was")})

    def test_current(self) -> None:
        """C-ECHO / QIDO-RS in a worker; the outcome goes to the label and :attr:`connection_tested`."""
        try:
            server = self.current_server()
        except PacsError as exc:
            self._tested(False, str(exc))
            return
        secrets = self.secrets
        typed = self._read_form().get("secret")
        if isinstance(server, DicomWebServer) and typed:
            secrets = SecretStore(use_keyring=False)  # the password as typed, before it is saved
            secrets.set(server.name, typed)
        self._testing = True
        self._update_enabled()
        self.test_label.setText(f"Testing {server.where}…")
        what = "C-ECHO" if isinstance(server, DimseServer) else "QIDO-RS"
        self._runner.start_function(
            test_connection, server, secrets,
            returned=lambda s: self._tested(True, f"OK: {server.where} answered the {what} in {s * 1000:.0f} ms."),
            errored=lambda exc: self._tested(False, self._failure(exc)))

    @staticmethod
    def _failure(exc: BaseException) -> str:
        if isinstance(exc, PacsError):
            return f"Connection failed: {exc}"
        log.warning("PACS connection test failed: %s", exc.__class__.__name__)
        return f"Connection failed ({exc.__class__.__name__}); check the settings and that the PACS is running."

    def _tested(self, ok: bool, text: str) -> None:
        self._testing = False
        self.last_test = (ok, text)
        self.test_label.setStyleSheet("color: #1b5e20" if ok else "color: #b00020")
        self.test_label.setText(text)
        self._update_enabled()
        self.connection_tested.emit(ok, text)

    def save(self) -> bool:
        """Validate every server and write them (and the secrets, and the cache limit); False with a message."""
        self._commit_form()
        servers: list[PacsServer] = []
        try:
            for d in self._servers:
                servers.append(server_from_dict({k: v for k, v in d.items() if k not in ("secret", "_was")}))
            servers_from_dict(servers_to_dict(servers))  # unique names
        except PacsError as exc:
            self.error_label.setText(str(exc))
            return False
        kept = {s.name for s in servers}
        for d, server in zip(self._servers, servers):
            was = d.get("_was")
            if was and was != server.name and d.get("secret") is None:
                old = self.secrets.get(was)  # renamed: move the stored secret with it
                if old is not None:
                    self.secrets.set(server.name, old)
            if d.get("secret"):
                self.secrets.set(server.name, d["secret"])
            if isinstance(server, DicomWebServer) and server.auth == "none":
                self.secrets.delete(server.name)
        for name in self._saved_names() - kept:
            self.secrets.delete(name)
        self.store.set_servers(servers)
        self.store.cache_limit_bytes = self.cache_spin.value() * 1024 ** 2
        self.error_label.clear()
        self.saved.emit()
        return True

    def _saved_names(self) -> set[str]:
        return {s.name for s in self.store.servers()}

    def save_and_close(self) -> None:
        if self.save():
            self.accept()

    def shutdown(self, timeout_ms: int = 10000) -> bool:
        return self._runner.shutdown(timeout_ms)

    def done(self, result: int) -> None:
        self._runner.shutdown(2000)  # a test in flight ends by its timeout; never left running at quit
        super().done(result)
