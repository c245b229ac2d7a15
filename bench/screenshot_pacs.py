"""Screenshots of the PACS dialogs with a real Orthanc: Tools > PACS settings (after Test connection) and
File > Query PACS (after a search that found the uploaded radiographs).

Starts an Orthanc on loopback (tests/orthanc_fixture.py), uploads the ../shared/data radiographs
(C-STORE), opens the dialogs of the real app on the X display and saves each dialog as Qt paints it.

Usage: xvfb-run -a python bench/screenshot_pacs.py OUT_DIR
Settings go to a temporary INI file, the cache to a temporary folder: the user's own are untouched.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from qt_wait import wait_until  # noqa: E402 - bench/ is the script's folder
RADIOGRAPHS = ("cxr/siim_pneumothorax_sample.dcm", "dicom/RG1_J2KI.dcm", "cxr/nih_sample.dcm")


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "pacs-screenshots")
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="cxr-pacs-shot-"))
    os.environ["CXR_SETTINGS_FILE"] = str(tmp / "settings.ini")
    os.environ["CXR_CACHE_DIR"] = str(tmp / "cache")
    from orthanc_fixture import OrthancServer
    from PySide6.QtWidgets import QApplication

    from cxr_desktop.gui.pacs_query import QueryPacsDialog
    from cxr_desktop.gui.pacs_settings import PacsSettings, PacsSettingsDialog
    from cxr_desktop.gui.settings import AppSettings
    from cxr_desktop.pacs import DicomWebServer, DimseServer, send_files

    data = REPO.parent / "shared" / "data"
    files = [data / p for p in RADIOGRAPHS if (data / p).is_file()]
    with OrthancServer(tmp / "orthanc", our_ae="CXRREVIEW") as pacs:
        dimse = DimseServer("Radiology PACS", "127.0.0.1", pacs.dicom_port, pacs.aet, our_ae="CXRREVIEW",
                            our_port=pacs.our_port, retrieve="move")
        list(send_files(dimse, files))
        app = QApplication.instance() or QApplication(sys.argv)
        q = AppSettings.from_env().q
        PacsSettings(q).set_servers([dimse, DicomWebServer("Orthanc DICOMweb", pacs.dicomweb_url)])

        dlg = PacsSettingsDialog(settings=q)
        dlg.show()
        dlg.test_current()
        wait_until(app, lambda: dlg.last_test is not None)
        app.processEvents()
        dlg.grab().save(str(out / "pacs_settings.png"))
        print("settings:", dlg.last_test)
        dlg.server_list.setCurrentRow(1)  # the DICOMweb page: authentication, password field, keyring note
        dlg.auth_combo.setCurrentIndex(dlg.auth_combo.findData("basic"))
        dlg.user_edit.setText("reader")
        dlg.secret_edit.setText("not-a-real-password")
        dlg.test_current()
        wait_until(app, lambda: not dlg._testing)
        app.processEvents()
        dlg.grab().save(str(out / "pacs_settings_dicomweb.png"))
        print("settings (DICOMweb):", dlg.last_test)
        dlg.close()

        qd = QueryPacsDialog(settings=q)
        qd.show()
        qd.search()
        wait_until(app, lambda: not qd.busy and qd.table.rowCount() > 0)
        qd.table.selectRow(0)
        app.processEvents()
        qd.grab().save(str(out / "pacs_query.png"))
        print("query:", qd.last_status)
        qd.close()
    print(f"saved {out / 'pacs_settings.png'} and {out / 'pacs_query.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
