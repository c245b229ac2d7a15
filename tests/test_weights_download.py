"""ImageNet weights download and import, offline against a loopback HTTP server.

The server (http.server on 127.0.0.1, port 0) serves a stand-in file whose name carries
the first 8 hex digits of its sha256, as torchvision's files do. Checked: success into
the user data folder, resume with HTTP Range after a truncated attempt, a server that
ignores Range, wrong checksum, truncated transfer, HTTP 500/404, cancel, proxy
variables, import, and the ``cxr-model weights`` command.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from loopback_weights import NAME, PAYLOAD, SHA, LoopbackServer

from cxr_desktop.cli.model import main
from cxr_desktop.model.weights import find_imagenet_weights, user_weights_dir
from cxr_desktop.model.weights_download import (
    DEFAULT_URL, HASH_REGEX, ChecksumError, DownloadProgress, WeightsDownloadError, download_weights,
    import_weights,
)


@pytest.fixture()
def server():
    s = LoopbackServer()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Private user data folder and torch hub cache; no proxy from the machine's environment."""
    monkeypatch.setenv("CXR_DATA_DIR", str(tmp_path / "user"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    for var in ("CXR_WEIGHTS_DIR", "CXR_WEIGHTS_URL", "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
                "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


def _run(gen) -> tuple[list[DownloadProgress], Path | None]:
    seen = []
    while True:
        try:
            seen.append(next(gen))
        except StopIteration as stop:
            return seen, stop.value


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def test_defaults_are_torchvisions():
    import torch.hub
    from torchvision.models import ResNet50_Weights

    assert DEFAULT_URL == ResNet50_Weights.IMAGENET1K_V2.url
    assert HASH_REGEX.pattern == torch.hub.HASH_REGEX.pattern


def test_download_into_the_user_data_folder_where_weights_are_found(server):
    assert find_imagenet_weights() is None
    progress, path = _run(download_weights(server.url))
    assert path == user_weights_dir() / NAME and path.read_bytes() == PAYLOAD
    assert _files(user_weights_dir()) == [NAME]  # no .part left
    assert progress[-1].done == progress[-1].total == len(PAYLOAD)
    assert [p.done for p in progress] == sorted(p.done for p in progress)
    assert find_imagenet_weights() == path
    _, again = _run(download_weights(server.url))  # already there and verified: no second transfer
    assert again == path and len(server.requests) == 1


def test_truncated_download_keeps_the_part_and_resumes_with_range(server, tmp_path):
    dest = tmp_path / "w"
    server.truncate_times = 1
    with pytest.raises(WeightsDownloadError, match="interrupted after 0.1 MB of 0.3 MB.*run the download again"):
        _run(download_weights(server.url, dest))
    assert _files(dest) == [NAME + ".part"]  # no final file; the part is what resuming needs
    got = (dest / (NAME + ".part")).stat().st_size
    assert got == int(len(PAYLOAD) * 0.4)
    progress, path = _run(download_weights(server.url, dest))
    assert server.requests[-1]["range"] == f"bytes={got}-"
    assert progress[0].resumed_from == got
    assert path.read_bytes() == PAYLOAD and _files(dest) == [NAME]


def test_server_that_ignores_range_sends_the_whole_file_again(server, tmp_path):
    dest = tmp_path / "w"
    server.truncate_times = 1
    with pytest.raises(WeightsDownloadError):
        _run(download_weights(server.url, dest))
    server.mode = "ignore_range"
    _, path = _run(download_weights(server.url, dest))
    assert server.requests[-1]["range"] is not None  # asked for the rest, got everything
    assert path.read_bytes() == PAYLOAD and _files(dest) == [NAME]


def test_wrong_checksum_leaves_nothing(server, tmp_path):
    dest = tmp_path / "w"
    server.mode = "wrong"
    with pytest.raises(ChecksumError, match=f"not {SHA[:8]} as expected.*deleted and nothing was installed"):
        _run(download_weights(server.url, dest))
    assert _files(dest) == []


@pytest.mark.parametrize("code", ["500", "404"])
def test_server_error_leaves_nothing(server, tmp_path, code):
    dest = tmp_path / "w"
    server.mode = code
    with pytest.raises(WeightsDownloadError, match=f"HTTP {code}.*Nothing was installed"):
        _run(download_weights(server.url, dest))
    assert _files(dest) == []


def test_connection_refused_is_explained(tmp_path):
    s = LoopbackServer()
    url = s.url
    s.close()  # nothing listens there now
    with pytest.raises(WeightsDownloadError, match="Could not connect to 127.0.0.1.*HTTPS_PROXY"):
        _run(download_weights(url, tmp_path / "w"))
    assert _files(tmp_path / "w") == []


def test_cancel_keeps_the_part_and_installs_nothing(server, tmp_path):
    dest = tmp_path / "w"
    stop = threading.Event()
    gen = download_weights(server.url, dest, cancelled=stop.is_set)
    first = next(gen)
    stop.set()
    progress, path = _run(gen)
    assert path is None and first.done == 0
    assert NAME not in _files(dest)


def test_url_without_checksum_needs_a_sha256(server, tmp_path):
    with pytest.raises(WeightsDownloadError, match="no sha256 prefix"):
        _run(download_weights(server.base + "/weights.pth", tmp_path / "w"))
    assert _files(tmp_path / "w") == []


def test_proxy_variables_are_honoured(server, tmp_path, monkeypatch):
    """HTTP_PROXY: the request goes to the proxy with the absolute URL (the host is never resolved);
    NO_PROXY: a listed host is reached directly; HTTPS_PROXY: an https URL is tunnelled via the proxy."""
    monkeypatch.setenv("HTTP_PROXY", server.base)
    url = f"http://weights-mirror.invalid/models/{NAME}"
    _, path = _run(download_weights(url, tmp_path / "a"))
    assert path.read_bytes() == PAYLOAD
    assert server.requests[-1]["path"] == url

    proxy = LoopbackServer()
    proxy.mode = "proxy_only"
    try:
        monkeypatch.setenv("HTTP_PROXY", proxy.base)
        with pytest.raises(WeightsDownloadError, match="HTTP 502"):  # via the proxy, which refuses
            _run(download_weights(server.url, tmp_path / "b"))
        assert len(proxy.requests) == 1
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        _, path = _run(download_weights(server.url, tmp_path / "b"))
        assert path.read_bytes() == PAYLOAD and len(proxy.requests) == 1  # the proxy was bypassed
        # HTTPS_PROXY: an https URL is tunnelled through the proxy (CONNECT), which refuses here
        monkeypatch.setenv("HTTPS_PROXY", proxy.base)
        with pytest.raises(WeightsDownloadError, match="Could not connect.*502"):
            _run(download_weights(f"https://weights-mirror.invalid/models/{NAME}", tmp_path / "c"))
        assert proxy.requests[-1] == {"method": "CONNECT", "path": "weights-mirror.invalid:443", "range": None}
        assert _files(tmp_path / "c") == []
    finally:
        proxy.close()


def test_import_verifies_the_checksum(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    good = src / NAME
    good.write_bytes(PAYLOAD)
    path = import_weights(good)
    assert path == user_weights_dir() / NAME and path.read_bytes() == PAYLOAD
    assert find_imagenet_weights() == path

    dest = tmp_path / "w"
    damaged = src / "sub" / NAME
    damaged.parent.mkdir()
    damaged.write_bytes(PAYLOAD[:-1])
    with pytest.raises(ChecksumError, match="damaged, incomplete or renamed. Nothing was copied"):
        import_weights(damaged, dest)
    renamed = src / "weights.pth"
    renamed.write_bytes(PAYLOAD)
    with pytest.raises(ChecksumError, match="not one of torchvision's ResNet50 weight files"):
        import_weights(renamed, dest)
    assert _files(dest) == []
    assert import_weights(renamed, dest, sha256=SHA.upper()) == dest / NAME  # named by its checksum
    assert _files(dest) == [NAME]


def test_cli_weights_status_download_and_errors(server, tmp_path, capsys):
    assert main(["weights"]) == 0
    out = capsys.readouterr().out
    assert "none installed" in out and "cxr-model weights --download" in out and str(user_weights_dir()) in out

    server.mode = "500"
    assert main(["weights", "--download", "--url", server.url]) == 1
    assert "HTTP 500" in capsys.readouterr().err
    server.mode = "wrong"
    assert main(["weights", "--download", "--url", server.url]) == 2
    assert "refused" in capsys.readouterr().err
    server.mode = "ok"
    assert main(["weights", "--download", "--url", server.url]) == 0
    assert f"Installed {user_weights_dir() / NAME}" in capsys.readouterr().out
    assert main(["weights"]) == 0
    out = capsys.readouterr().out
    assert f"in use: {user_weights_dir() / NAME}" in out and "checksum ok" in out

    bad = tmp_path / NAME
    bad.write_bytes(b"not the weights")
    assert main(["weights", "--import", str(bad), "--dir", str(tmp_path / "other")]) == 2
    assert "Nothing was copied" in capsys.readouterr().err
    assert main(["weights", "--url", server.url]) == 2  # --url without --download
