"""Getting torchvision's ResNet50 ImageNet weights: download (resumable) or import a copy.

The only network access in the app, and only when the user asks for it
(``cxr-model weights --download``, the training wizard's "Download ImageNet
weights" button). The file goes to the user data folder's ``weights/``
(:func:`cxr_desktop.model.weights.user_weights_dir`), where
:func:`~cxr_desktop.model.weights.find_imagenet_weights` looks.

- URL: torchvision's own for ``ResNet50_Weights.IMAGENET1K_V2`` (:data:`DEFAULT_URL`);
  ``$CXR_WEIGHTS_URL`` or an explicit ``url`` overrides it (a local mirror, tests).
- Check: as ``torch.hub.download_url_to_file`` does, the sha256 of the file must start
  with the hex prefix in its name (``resnet50-11ad3fa6.pth``; same regular expression
  as ``torch.hub.HASH_REGEX``), or equal a full sha256 given by the caller.
- Resumable: bytes arrive in ``<name>.part`` beside the target; a later attempt asks
  for the rest with an HTTP ``Range`` request (a server that ignores it sends the whole
  file again, which is handled). The finished file is renamed into place atomically.
- Proxies: ``urllib``'s default handlers honour ``HTTP(S)_PROXY`` and ``NO_PROXY``; a
  new opener is built per download so the current environment applies.
- What is left after a failure: a wrong checksum deletes the ``.part`` (those bytes
  are not the file); an interrupted or cancelled transfer keeps it, so the next
  attempt resumes; an HTTP error before any byte arrived creates nothing. A final
  file exists only after its checksum was verified.

:func:`download_weights` is a generator yielding :class:`DownloadProgress`, cancelled
through its ``cancelled`` callable; Qt-free.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generator

from cxr_desktop.atomic import fsync_dir
from cxr_desktop.errors import CxrError

# torchvision.models.ResNet50_Weights.IMAGENET1K_V2.url (tests check that it still is)
DEFAULT_URL = "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"
URL_ENV = "CXR_WEIGHTS_URL"
HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")  # torch.hub.HASH_REGEX: the sha256 prefix in a file name
PART_SUFFIX = ".part"
MAX_BYTES = 1024**3  # a ResNet50 state dict is ~100 MB; refuse to fill a disk from a wrong URL
_CHUNK = 1 << 16
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


class WeightsDownloadError(CxrError):
    """The weights could not be fetched or imported; the message says why and what to do."""


class ChecksumError(WeightsDownloadError):
    """The file is not the one expected (wrong sha256); it was not installed."""


@dataclass(frozen=True)
class DownloadProgress:
    """``done`` of ``total`` bytes (``total`` None when the server does not say); ``resumed_from`` > 0 on resume."""

    done: int
    total: int | None
    resumed_from: int = 0


def weights_url(url: str | None = None) -> str:
    """The URL to fetch: ``url``, else ``$CXR_WEIGHTS_URL``, else torchvision's."""
    return url or os.environ.get(URL_ENV) or DEFAULT_URL


def file_name_of(url: str) -> str:
    """The file name at the end of the URL's path (torchvision's naming is kept)."""
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
    if not _SAFE_NAME.match(name):
        raise WeightsDownloadError(f"The URL {url!r} does not end in a usable file name (e.g. resnet50-11ad3fa6.pth).")
    return name


def expected_prefix(file_name: str, sha256: str | None = None) -> str:
    """What the file's sha256 must start with: the full ``sha256`` given, else the prefix in the name."""
    if sha256:
        want = sha256.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", want):
            raise WeightsDownloadError("The expected sha256 must be 64 hexadecimal digits.")
        return want
    m = HASH_REGEX.search(file_name)
    if not m or len(m.group(1)) < 8:
        raise WeightsDownloadError(
            f"The file name {file_name!r} carries no sha256 prefix (torchvision's files are named like "
            "resnet50-11ad3fa6.pth), so the download could not be verified. Give its expected sha256.")
    return m.group(1)


def _sha256_of(path: Path) -> "hashlib._Hash":
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h


def _content_range_total(value: str | None, start: int) -> int | None:
    """Total size from ``Content-Range: bytes START-END/TOTAL``; None if absent or not starting at ``start``."""
    m = re.fullmatch(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*", value or "")
    if not m or int(m.group(1)) != start:
        return None
    return int(m.group(3)) if m.group(3) != "*" else None


def _interrupted(done: int, total: int | None, why: str) -> WeightsDownloadError:
    of = f" of {total / 1e6:.1f} MB" if total else ""
    return WeightsDownloadError(
        f"The download was interrupted after {done / 1e6:.1f} MB{of} ({why}). The part already received is "
        "kept: run the download again to resume it.")


def download_weights(url: str | None = None, dest_dir: str | os.PathLike[str] | None = None, *,
                     sha256: str | None = None, cancelled: Callable[[], bool] | None = None,
                     timeout: float = 30.0) -> Generator[DownloadProgress, None, Path | None]:
    """Download the weights file into ``dest_dir`` (default: the user data folder's ``weights/``).

    Yields :class:`DownloadProgress`; returns the verified file's path, or None when
    ``cancelled()`` became true (the ``.part`` is kept for resuming). Raises
    :class:`WeightsDownloadError` with the reason (HTTP error, connection, wrong checksum,
    interrupted transfer).
    """
    from cxr_desktop.model.weights import user_weights_dir

    url = weights_url(url)
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise WeightsDownloadError(f"Only http(s) URLs can be downloaded ({url!r}); use Import for a local file.")
    name = file_name_of(url)
    want = expected_prefix(name, sha256)
    folder = Path(dest_dir) if dest_dir is not None else user_weights_dir()
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / name
    part = folder / (name + PART_SUFFIX)
    if final.is_file() and _sha256_of(final).hexdigest().startswith(want):
        size = final.stat().st_size
        yield DownloadProgress(size, size)
        return final
    for attempt in range(2):  # the second only after the server refused the range (stale .part)
        start = part.stat().st_size if part.is_file() else 0
        try:
            result = yield from _transfer(url, part, start, want, cancelled, timeout)
        except _RangeRefused:
            part.unlink(missing_ok=True)
            if attempt:
                raise WeightsDownloadError("The server refused to send the file from its start; try again later.")
            continue
        if result is None:
            return None
        os.replace(part, final)
        fsync_dir(folder)
        return final
    return None  # not reached


class _RangeRefused(Exception):
    """HTTP 416: the partial file does not fit what the server has (start again)."""


def _open(url: str, start: int, timeout: float) -> http.client.HTTPResponse:
    headers = {"User-Agent": "cxr-review (weights download)", "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    opener = urllib.request.build_opener()  # ProxyHandler reads HTTP(S)_PROXY / NO_PROXY now
    try:
        return opener.open(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and start:
            raise _RangeRefused() from None
        raise WeightsDownloadError(
            f"The server answered HTTP {exc.code} ({exc.reason}) for {url}. Nothing was installed. Check the "
            f"address (${URL_ENV}), or download the file on another computer and use Import.") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        why = getattr(exc, "reason", None) or exc
        raise WeightsDownloadError(
            f"Could not connect to {urllib.parse.urlsplit(url).netloc} ({why}). Nothing was installed. Check the "
            "network and the proxy settings (HTTPS_PROXY / HTTP_PROXY / NO_PROXY), or download the file on "
            "another computer and use Import.") from None


def _transfer(url: str, part: Path, start: int, want: str, cancelled: Callable[[], bool] | None,
              timeout: float) -> Generator[DownloadProgress, None, Path | None]:
    resp = _open(url, start, timeout)
    with contextlib.closing(resp):
        if start and resp.status == 206:
            total = _content_range_total(resp.headers.get("Content-Range"), start)
            if total is None:  # not the range asked for: start over
                raise _RangeRefused()
            mode = "ab"
        else:
            start, mode = 0, "wb"  # 200: the whole file (the server ignored Range, or none was sent)
        if mode == "wb":
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        if total is not None and total > MAX_BYTES:
            raise WeightsDownloadError(f"The server offers {total / 1e9:.1f} GB, far more than a ResNet50 weights "
                                       "file; check the address. Nothing was installed.")
        digest = _sha256_of(part) if mode == "ab" else hashlib.sha256()
        done = start
        yield DownloadProgress(done, total, start)
        with open(part, mode) as fh:
            while True:
                if cancelled is not None and cancelled():
                    return None
                try:
                    chunk = resp.read(_CHUNK)
                except (http.client.IncompleteRead, socket.timeout, ConnectionError, OSError) as exc:
                    fh.flush()
                    raise _interrupted(done, total, exc.__class__.__name__) from None
                if not chunk:
                    break
                fh.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if done > MAX_BYTES or (total is not None and done > total):
                    fh.close()
                    part.unlink(missing_ok=True)
                    raise WeightsDownloadError("The server sent more data than announced; nothing was installed.")
                yield DownloadProgress(done, total, start)
            fh.flush()
            os.fsync(fh.fileno())
    if total is not None and done < total:
        raise _interrupted(done, total, "the connection closed early")
    got = digest.hexdigest()
    if not got.startswith(want):
        part.unlink(missing_ok=True)
        raise ChecksumError(
            f"The downloaded file's sha256 starts with {got[:len(want)][:16]}, not {want[:16]} as expected: it is "
            "damaged or not the official file. It was deleted and nothing was installed; try again, or import a "
            "copy you trust.")
    return part


def import_weights(src: str | os.PathLike[str], dest_dir: str | os.PathLike[str] | None = None, *,
                   sha256: str | None = None) -> Path:
    """Copy a weights file the user has (offline sites) into the weights folder, verified.

    The checksum is the one in the file's torchvision name (``resnet50-<prefix>.pth``),
    or the full ``sha256`` given, or, for a renamed copy, one of torchvision's known
    ResNet50 files (:data:`~cxr_desktop.model.weights.IMAGENET_FILES`), whose name it
    then gets back. A file that matches none is refused and nothing is copied.
    """
    from cxr_desktop.model.weights import IMAGENET_FILES, user_weights_dir

    p = Path(src)
    if not p.is_file():
        raise WeightsDownloadError(f"{p.name or src} is not a file. Choose the weights file (e.g. resnet50-11ad3fa6.pth).")
    got = _sha256_of(p).hexdigest()
    named = HASH_REGEX.search(p.name) and p.name.startswith("resnet50-") and _SAFE_NAME.match(p.name)
    if sha256:
        want = expected_prefix(p.name, sha256)
        name = p.name if named else f"resnet50-{got[:8]}.pth"
    elif named:
        want, name = expected_prefix(p.name), p.name
    else:
        known = [n for n in IMAGENET_FILES.values() if got.startswith(expected_prefix(n))]
        if not known:
            raise ChecksumError(
                f"{p.name} is not one of torchvision's ResNet50 weight files (its sha256 starts with {got[:8]}) and "
                "its name carries no checksum. Import the original file (e.g. resnet50-11ad3fa6.pth) or give its "
                "expected sha256. Nothing was copied.")
        want, name = expected_prefix(known[0]), known[0]
    if not got.startswith(want):
        raise ChecksumError(
            f"{p.name}: its sha256 starts with {got[:len(want)][:16]}, not {want[:16]} as "
            + ("given" if sha256 else "its name says")
            + ": the file is damaged, incomplete or renamed. Nothing was copied; copy the original file again.")
    folder = Path(dest_dir) if dest_dir is not None else user_weights_dir()
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / name
    if final.exists() and final.resolve() == p.resolve():
        return final
    part = folder / (name + PART_SUFFIX)
    try:
        with open(p, "rb") as fin, open(part, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
            fout.flush()
            os.fsync(fout.fileno())
        if _sha256_of(part).hexdigest() != got:  # the copy itself went wrong (disk, media)
            raise WeightsDownloadError("The copy differs from the original (disk or media error); nothing was "
                                       "installed. Try again.")
        os.replace(part, final)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    fsync_dir(folder)
    return final
