"""PACS settings and the study cache, without a PACS (issue 13)."""

from __future__ import annotations

import json
import logging
import os
import time

import pytest

from cxr_desktop.pacs import (
    DicomWebServer, DimseServer, PacsError, PacsProblem, SecretStore, StudyCache, load_servers, save_servers,
    server_from_dict, server_to_dict,
)
from cxr_desktop.pacs.cache import MARKER
from cxr_desktop.pacs.query import StudyQuery


def test_servers_round_trip_through_a_plain_dict_and_json(tmp_path):
    dimse = DimseServer("main PACS", "pacs.local", 104, "PACS01", our_ae="CXRREVIEW", our_port=11113,
                        retrieve="move", timeout_s=12)
    web = DicomWebServer("web", "https://pacs.example/dicom-web/", auth="basic", username="reader")
    for s in (dimse, web):
        d = server_to_dict(s)
        assert json.loads(json.dumps(d)) == d  # QSettings / JSON safe
        assert server_from_dict(d) == s
    assert web.url == "https://pacs.example/dicom-web"
    save_servers(tmp_path / "servers.json", [dimse, web])
    assert load_servers(tmp_path / "servers.json") == [dimse, web]


@pytest.mark.parametrize("bad, words", [
    ({"kind": "dimse", "name": "x", "host": "h", "port": 70000, "called_ae": "A"}, "out of range"),
    ({"kind": "dimse", "name": "x", "host": "h", "port": 104, "called_ae": "A" * 17}, "not a valid AE title"),
    ({"kind": "dimse", "name": "x", "host": "h", "port": 104, "called_ae": "A", "retrieve": "move"},
     "C-MOVE needs our storage port"),
    ({"kind": "dimse", "name": "x", "host": "h", "called_ae": "A"}, "lacks 'port'"),
    ({"kind": "dicomweb", "name": "x", "url": "ftp://h"}, "must start with http"),
    ({"kind": "dicomweb", "name": "x", "url": "http://h", "auth": "basic"}, "needs a user name"),
    ({"kind": "wado", "name": "x"}, "unknown"),
])
def test_bad_settings_say_what_is_wrong(bad, words):
    with pytest.raises(PacsError) as info:
        server_from_dict(bad)
    assert info.value.kind == PacsProblem.CONFIG and words in str(info.value)


def test_secrets_never_in_settings_or_logs(caplog):
    caplog.set_level(logging.DEBUG)
    store = SecretStore(use_keyring=False)
    assert not store.persistent and "kept only until the app closes" in store.warning
    web = DicomWebServer("web", "http://127.0.0.1:1/dicom-web", auth="bearer")
    store.set(web.name, "s3cr3t-token")
    assert store.get("web") == "s3cr3t-token"
    assert "s3cr3t" not in json.dumps(server_to_dict(web)) and "s3cr3t" not in repr(web)
    from cxr_desktop.pacs.dicomweb import client

    c = client(web, store)
    assert c._session.headers["Authorization"] == "Bearer s3cr3t-token"
    assert "s3cr3t" not in caplog.text
    store.delete("web")
    assert store.get("web") is None
    with pytest.raises(PacsError) as info:
        client(web, store)
    assert info.value.kind == PacsProblem.AUTH and "token" in str(info.value)


def test_query_keeps_patient_data_out_of_repr():
    import datetime as dt

    q = StudyQuery(patient_id="PID-4711", patient_name="DOE^JANE", accession_number="ACC9",
                   date_from=dt.date(2024, 1, 2), date_to=dt.date(2024, 3, 4))
    assert q.date_range() == "20240102-20240304"
    assert not {"PID-4711", "DOE", "ACC9"} & set(repr(q).replace("'", " ").replace(",", " ").split())
    assert StudyQuery(date_from=dt.date(2024, 1, 2)).date_range() == "20240102-"


def _fill(cache: StudyCache, uid: str, size: int) -> None:
    with cache.staging(uid) as stage:
        stage.add(uid + ".1", b"\0" * size)


def test_cache_is_private_complete_only_and_evicts_oldest_first(tmp_path):
    cache = StudyCache(tmp_path / "cache", limit_bytes=2500)
    assert (cache.root.stat().st_mode & 0o777) == 0o700
    _fill(cache, "1.2.1", 1000)
    _fill(cache, "1.2.2", 1000)
    old = time.time() - 100
    os.utime(cache.folder("1.2.1") / MARKER, (old, old))  # 1.2.1 used longest ago
    cache.touch("1.2.2")
    _fill(cache, "1.2.3", 1000)
    removed = cache.evict(keep="1.2.3")
    assert cache.has("1.2.2") and cache.has("1.2.3") and not cache.has("1.2.1")
    assert len(removed) == 1 and cache.total_bytes() <= 2500
    assert all(p.parent == cache.folder("1.2.2") for p in cache.files("1.2.2"))
    assert (cache.folder("1.2.2").stat().st_mode & 0o777) == 0o700

    # a failure while staging leaves nothing; a crash's leftovers are removed on the next start
    with pytest.raises(RuntimeError):
        with cache.staging("1.2.9") as stage:
            stage.add("x", b"half")
            raise RuntimeError("connection lost")
    assert not cache.has("1.2.9") and sorted(p.name for p in cache.root.iterdir()) == sorted(
        [cache.folder("1.2.2").name, cache.folder("1.2.3").name])
    leftover = cache.root / ".staging-crashed"
    leftover.mkdir()
    (leftover / "a.dcm").write_bytes(b"x")
    old = time.time() - 60
    os.utime(leftover, (old, old))
    (cache.root / "nomarker").mkdir()
    StudyCache(cache.root)
    assert not leftover.exists() and not (cache.root / "nomarker").exists() and cache.has("1.2.2")


def test_cache_folder_that_cannot_be_created_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PacsError) as info:
        StudyCache(blocker / "cache")
    assert info.value.kind == PacsProblem.LOCAL and "choose another cache folder" in str(info.value)
