"""A real Orthanc PACS for tests: loopback only, free ports, temporary storage, DICOMweb plugin.

``OrthancServer(tmp, our_ae=..., our_port=...)`` writes the JSON configuration,
starts ``Orthanc CONFIG.json``, waits until ``/system`` answers and stops it on
``stop()``. Our AE title is registered as a modality (for C-MOVE to our storage
SCP). Tests skip with a clear message where the binary is absent
(:func:`orthanc_binary`); CI installs it (Debian ``orthanc`` + ``orthanc-dicomweb``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

ORTHANC_BINARY_CANDIDATES = ("/usr/sbin/Orthanc", "Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
PACS_AE = "ORTHANC"


def orthanc_binary() -> str | None:
    """Path of the Orthanc executable, or None where it is not installed."""
    for cand in ORTHANC_BINARY_CANDIDATES:
        found = shutil.which(cand) if not os.path.isabs(cand) else (cand if os.access(cand, os.X_OK) else None)
        if found:
            return found
    return None


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OrthancServer:
    """One Orthanc process with its own configuration and storage under ``folder``."""

    def __init__(self, folder: Path, *, our_ae: str = "CXRTEST", our_port: int | None = None,
                 dicom_timeout_s: int = 10):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.our_ae = our_ae
        self.our_port = our_port or free_port()
        self.aet = PACS_AE
        self.config_path = self.folder / "orthanc.json"
        self.log_path = self.folder / "orthanc.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.config: dict[str, Any] = {
            "Name": "cxr-test-orthanc",
            "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.aet,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpServerEnabled": True,
            "DicomServerEnabled": True,
            "DicomCheckCalledAet": True,
            "DicomScpTimeout": dicom_timeout_s,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "DicomCheckModalityHost": False,
            "DicomModalities": {"cxr": [our_ae, "127.0.0.1", self.our_port]},
            "Plugins": [str(DICOMWEB_PLUGIN)] if DICOMWEB_PLUGIN.exists() else [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "StudiesMetadata": "Full"},
            "StableAge": 1,
            "LimitFindResults": 0,
            "HttpTimeout": 30,
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return self.url + "/dicom-web"

    def start(self, timeout_s: float = 30.0) -> "OrthancServer":
        binary = orthanc_binary()
        if binary is None:
            raise FileNotFoundError("Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)")
        self.config_path.write_text(json.dumps(self.config, indent=1))
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([binary, str(self.config_path)], stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.folder)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited ({self.proc.returncode}); see {self.log_path}:\n"
                                   + self.log_path.read_text(errors="replace")[-2000:])
            try:
                self.rest("/system")
                return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"Orthanc did not answer /system within {timeout_s} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def rest(self, path: str, *, method: str = "GET", data: bytes | dict | list | None = None) -> Any:
        """Call Orthanc's REST API; JSON answers are decoded."""
        body = json.dumps(data).encode() if isinstance(data, (dict, list)) else data
        req = urllib.request.Request(self.url + path, data=body, method=method)
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            if "json" in (resp.headers.get("Content-Type") or ""):
                return json.loads(raw)
            return raw

    def clear(self) -> None:
        """Delete every patient (a fresh PACS for the next test)."""
        for pid in self.rest("/patients"):
            self.rest(f"/patients/{pid}", method="DELETE")

    def __enter__(self) -> "OrthancServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def orthanc_for_module(tmp_path_factory: Any, our_ae: str, needed_by: str) -> Iterator[OrthancServer]:
    """Body of a test module's ``orthanc`` fixture (``yield from`` it): one Orthanc that knows ``our_ae``,
    stopped after the module; the module is skipped, saying so, where Orthanc is not installed."""
    import pytest

    if orthanc_binary() is None:
        pytest.skip(f"Orthanc is not installed (apt-get install orthanc orthanc-dicomweb); {needed_by} need it")
    server = OrthancServer(tmp_path_factory.mktemp("orthanc"), our_ae=our_ae)
    server.start()
    yield server
    server.stop()
