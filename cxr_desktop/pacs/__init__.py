"""Hospital integration, Qt-free: PACS servers, DIMSE and DICOMweb clients, the local study cache.

Public API (the GUI and ``cxr-pacs`` use only these):

- settings: :class:`DimseServer`, :class:`DicomWebServer`, :func:`server_to_dict` /
  :func:`server_from_dict` (plain dicts for QSettings), :class:`SecretStore` (passwords, tokens);
- :func:`echo`, :func:`find_studies` (:class:`StudyQuery` -> :class:`StudyRow`), :func:`retrieve_study`
  (generator of :class:`RetrieveProgress`, then :class:`RetrieveDone`; cancellable), :func:`send_files`
  (generator of :class:`SendProgress`), each for either kind of server;
- :class:`StudyCache`: complete studies only, private (0700), size-limited (least recently used out first);
- every failure is a :class:`PacsError` with a :class:`PacsProblem` code and a sentence that says what to do.
"""

from cxr_desktop.pacs.cache import StudyCache
from cxr_desktop.pacs.config import (
    DicomWebServer, DimseServer, PacsServer, SecretStore, load_servers, save_servers, server_from_dict,
    server_to_dict, servers_from_dict, servers_to_dict,
)
from cxr_desktop.pacs.errors import PacsError, PacsProblem
from cxr_desktop.pacs.query import DEFAULT_MODALITIES, StudyQuery, StudyRow
from cxr_desktop.pacs.retrieve import RetrieveDone, echo, find_studies, retrieve_study, send_files
from cxr_desktop.pacs.dimse import SendProgress
from cxr_desktop.pacs.staging import RetrieveProgress

__all__ = [
    "DEFAULT_MODALITIES", "DicomWebServer", "DimseServer", "PacsError", "PacsProblem", "PacsServer",
    "RetrieveDone", "RetrieveProgress", "SecretStore", "SendProgress", "StudyCache", "StudyQuery", "StudyRow",
    "echo", "find_studies", "load_servers", "retrieve_study", "save_servers", "send_files", "server_from_dict",
    "server_to_dict", "servers_from_dict", "servers_to_dict",
]
