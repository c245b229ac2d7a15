"""PACS server settings: named DIMSE or DICOMweb servers, serialisable to a plain dict.

The dict form (:func:`server_to_dict` / :func:`server_from_dict`, and
:func:`servers_to_dict` / :func:`servers_from_dict` for a list) is what the GUI
keeps in QSettings and ``cxr-pacs --config FILE`` reads as JSON. It never holds a
password or token: those live in :class:`SecretStore` (the system keyring where a
backend exists, else only in this process's memory, with a warning), keyed by
the server's name. ``repr`` of a server never shows a secret either.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Union

from cxr_desktop.pacs.errors import PacsError, PacsProblem

log = logging.getLogger(__name__)

DEFAULT_AE_TITLE = "CXRREVIEW"
RETRIEVE_METHODS = ("get", "move")  # DIMSE retrieval: C-GET (one association) or C-MOVE (to our storage SCP)
AUTH_KINDS = ("none", "basic", "bearer")
KEYRING_SERVICE = "cxr-review-pacs"
_AE_RE = re.compile(r"^[\x20-\x7e]{1,16}$")


def check_ae_title(title: str, what: str) -> str:
    """An AE title: 1-16 printable ASCII characters, not only spaces, no backslash."""
    t = str(title).strip()
    if not t or not _AE_RE.match(t) or "\\" in t:
        raise PacsError(PacsProblem.CONFIG, f"{what} {title!r} is not a valid AE title: use 1 to 16 letters, "
                                            "digits or spaces (no backslash).")
    return t


def _check_port(port: Any, what: str, *, allow_zero: bool = False) -> int:
    try:
        p = int(port)
    except (TypeError, ValueError):
        raise PacsError(PacsProblem.CONFIG, f"{what} {port!r} is not a port number; use 1 to 65535.") from None
    if not (0 if allow_zero else 1) <= p <= 65535:
        raise PacsError(PacsProblem.CONFIG, f"{what} {p} is out of range; use 1 to 65535.")
    return p


@dataclass(frozen=True)
class DimseServer:
    """A DIMSE peer (classic DICOM networking).

    ``our_port``: where our storage SCP listens for C-MOVE (the PACS must know
    ``our_ae`` at this host and port); 0 = no storage SCP, retrieve with C-GET only.
    """

    name: str
    host: str
    port: int
    called_ae: str
    our_ae: str = DEFAULT_AE_TITLE
    our_port: int = 0
    retrieve: str = "get"  # "get" or "move"
    timeout_s: float = 30.0
    kind: str = field(default="dimse", init=False)

    def __post_init__(self) -> None:
        if not str(self.name).strip():
            raise PacsError(PacsProblem.CONFIG, "a PACS server needs a name.")
        if not str(self.host).strip():
            raise PacsError(PacsProblem.CONFIG, f"server {self.name!r}: give the PACS host name or address.")
        object.__setattr__(self, "port", _check_port(self.port, f"server {self.name!r}: port"))
        object.__setattr__(self, "our_port", _check_port(self.our_port, f"server {self.name!r}: our port",
                                                         allow_zero=True))
        object.__setattr__(self, "called_ae", check_ae_title(self.called_ae, f"server {self.name!r}: called AE"))
        object.__setattr__(self, "our_ae", check_ae_title(self.our_ae, f"server {self.name!r}: our AE"))
        if self.retrieve not in RETRIEVE_METHODS:
            raise PacsError(PacsProblem.CONFIG, f"server {self.name!r}: retrieve method {self.retrieve!r} is "
                                                "unknown; use 'get' (C-GET) or 'move' (C-MOVE).")
        if self.retrieve == "move" and not self.our_port:
            raise PacsError(PacsProblem.CONFIG, f"server {self.name!r}: C-MOVE needs our storage port "
                                                "(our_port); set it or retrieve with C-GET.")
        if not float(self.timeout_s) > 0:
            raise PacsError(PacsProblem.CONFIG, f"server {self.name!r}: the timeout must be above 0 seconds.")

    @property
    def where(self) -> str:
        """``NAME (host:port, AE CALLED)``: for messages (no patient data)."""
        return f"{self.name} ({self.host}:{self.port}, AE {self.called_ae})"


@dataclass(frozen=True)
class DicomWebServer:
    """A DICOMweb service (QIDO-RS, WADO-RS, STOW-RS) at ``url``; ``auth`` none / basic / bearer.

    The password (basic) or token (bearer) is not a field: see :class:`SecretStore`.
    """

    name: str
    url: str
    auth: str = "none"
    username: str = ""
    timeout_s: float = 30.0
    kind: str = field(default="dicomweb", init=False)

    def __post_init__(self) -> None:
        if not str(self.name).strip():
            raise PacsError(PacsProblem.CONFIG, "a PACS server needs a name.")
        if not re.match(r"^https?://[^\s/]+", str(self.url)):
            raise PacsError(PacsProblem.CONFIG, f"server {self.name!r}: the DICOMweb URL must start with "
                                                "http:// or https:// and name a host.")
        object.__setattr__(self, "url", str(self.url).rstrip("/"))
        if self.auth not in AUTH_KINDS:
            raise PacsError(PacsProblem.CONFIG, f"server {self.name!r}: authentication {self.auth!r} is unknown; "
                                                "use none, basic or bearer.")
        if self.auth == "basic" and not self.username:
            raise PacsError(PacsProblem.CONFIG, f"server {self.name!r}: basic authentication needs a user name.")
        if not float(self.timeout_s) > 0:
            raise PacsError(PacsProblem.CONFIG, f"server {self.name!r}: the timeout must be above 0 seconds.")

    @property
    def where(self) -> str:
        return f"{self.name} ({self.url})"


PacsServer = Union[DimseServer, DicomWebServer]


def server_to_dict(server: PacsServer) -> dict[str, Any]:
    """Plain dict (JSON / QSettings); never contains a secret."""
    if isinstance(server, DimseServer):
        return {"kind": "dimse", "name": server.name, "host": server.host, "port": server.port,
                "called_ae": server.called_ae, "our_ae": server.our_ae, "our_port": server.our_port,
                "retrieve": server.retrieve, "timeout_s": float(server.timeout_s)}
    return {"kind": "dicomweb", "name": server.name, "url": server.url, "auth": server.auth,
            "username": server.username, "timeout_s": float(server.timeout_s)}


def server_from_dict(data: Mapping[str, Any]) -> PacsServer:
    """Inverse of :func:`server_to_dict`; unknown keys are ignored, bad values raise :class:`PacsError` (CONFIG)."""
    if not isinstance(data, Mapping):
        raise PacsError(PacsProblem.CONFIG, "a PACS server entry must be an object with a 'kind'.")
    kind = data.get("kind", "dimse" if "host" in data else "dicomweb")
    try:
        if kind == "dimse":
            return DimseServer(name=str(data["name"]), host=str(data["host"]), port=data["port"],
                               called_ae=str(data["called_ae"]), our_ae=str(data.get("our_ae") or DEFAULT_AE_TITLE),
                               our_port=data.get("our_port") or 0, retrieve=str(data.get("retrieve") or "get"),
                               timeout_s=float(data.get("timeout_s") or 30.0))
        if kind == "dicomweb":
            return DicomWebServer(name=str(data["name"]), url=str(data["url"]), auth=str(data.get("auth") or "none"),
                                  username=str(data.get("username") or ""),
                                  timeout_s=float(data.get("timeout_s") or 30.0))
    except KeyError as exc:
        raise PacsError(PacsProblem.CONFIG, f"a {kind} PACS server entry lacks {exc.args[0]!r}.") from None
    except (TypeError, ValueError):
        raise PacsError(PacsProblem.CONFIG, f"a {kind} PACS server entry has a value of the wrong type.") from None
    raise PacsError(PacsProblem.CONFIG, f"PACS server kind {kind!r} is unknown; use 'dimse' or 'dicomweb'.")


def servers_to_dict(servers: list[PacsServer]) -> dict[str, Any]:
    return {"format": "cxr-pacs-servers", "version": 1, "servers": [server_to_dict(s) for s in servers]}


def servers_from_dict(data: Mapping[str, Any]) -> list[PacsServer]:
    """Servers from :func:`servers_to_dict` output; duplicate names are refused."""
    entries = data.get("servers") if isinstance(data, Mapping) else None
    if not isinstance(entries, list):
        raise PacsError(PacsProblem.CONFIG, "the PACS settings hold no 'servers' list.")
    servers = [server_from_dict(e) for e in entries]
    names = [s.name for s in servers]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise PacsError(PacsProblem.CONFIG, f"two PACS servers are named {dup[0]!r}; names must be unique.")
    return servers


def load_servers(path: str | os.PathLike[str]) -> list[PacsServer]:
    """Read a JSON file written by :func:`save_servers` (or by hand)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PacsError(PacsProblem.CONFIG, f"cannot read the PACS settings {p.name} "
                                            f"({exc.strerror or exc.__class__.__name__}).") from None
    except ValueError:
        raise PacsError(PacsProblem.CONFIG, f"the PACS settings {p.name} are not valid JSON.") from None
    return servers_from_dict(data)


def save_servers(path: str | os.PathLike[str], servers: list[PacsServer]) -> None:
    """Write the servers (no secrets) as JSON, atomically."""
    from cxr_desktop.atomic import write_text_atomic

    write_text_atomic(path, json.dumps(servers_to_dict(servers), indent=1))


class SecretStore:
    """Passwords and tokens of DICOMweb servers, by server name.

    Uses the system keyring (python ``keyring``) when a real backend exists;
    otherwise keeps them only in this process's memory: :attr:`persistent` is
    False and :attr:`warning` says so (show it where the secret is entered).
    Secrets are never logged and never written to the settings dict.
    """

    def __init__(self, *, use_keyring: bool = True, service: str = KEYRING_SERVICE):
        self.service = service
        self._memory: dict[str, str] = {}
        self._keyring: Any = None
        if use_keyring:
            try:
                import keyring
                from keyring.backends import fail

                backend = keyring.get_keyring()
                if not isinstance(backend, fail.Keyring) and "fail" not in type(backend).__module__:
                    self._keyring = keyring
            except Exception:  # noqa: BLE001 - no usable keyring is a normal case (headless Linux)
                self._keyring = None

    @property
    def persistent(self) -> bool:
        return self._keyring is not None

    @property
    def warning(self) -> str:
        if self.persistent:
            return ""
        return ("No system keyring is available: the password is kept only until the app closes and must be "
                "entered again next time.")

    def set(self, server_name: str, secret: str) -> None:
        if self._keyring is not None:
            try:
                self._keyring.set_password(self.service, server_name, secret)
                return
            except Exception:  # noqa: BLE001 - a locked or broken keyring: fall back to memory
                log.warning("the system keyring refused to store a PACS secret; it is kept in memory only")
                self._keyring = None
        self._memory[server_name] = secret

    def get(self, server_name: str) -> str | None:
        if server_name in self._memory:
            return self._memory[server_name]
        if self._keyring is not None:
            try:
                return self._keyring.get_password(self.service, server_name)
            except Exception:  # noqa: BLE001
                return None
        return None

    def delete(self, server_name: str) -> None:
        self._memory.pop(server_name, None)
        if self._keyring is not None:
            try:
                self._keyring.delete_password(self.service, server_name)
            except Exception:  # noqa: BLE001 - nothing stored
                pass
