"""One typed error for every PACS problem, with a sentence that says what to do.

``PacsError.kind`` is a stable code (:class:`PacsProblem`) the GUI and the
command line branch on; the message never carries patient data (no names, IDs,
accession numbers, UIDs): only the server's name, host and port, and the AE titles.
"""

from __future__ import annotations

import enum

from cxr_desktop.errors import CxrError


class PacsProblem(str, enum.Enum):
    """Stable codes of :class:`PacsError`."""

    UNREACHABLE = "unreachable"  # nothing listens at host:port (or the host is unknown)
    REJECTED = "rejected"  # association rejected: usually a wrong called or calling AE title
    TIMEOUT = "timeout"  # the server accepted the connection but did not answer in time
    MOVE_DESTINATION_UNKNOWN = "move_destination_unknown"  # C-MOVE: the PACS does not know our AE
    NOT_FOUND = "not_found"  # the study is no longer on the server (deleted between find and get)
    PARTIAL = "partial"  # some images of the study could not be retrieved / sent
    AUTH = "auth"  # DICOMweb: 401/403
    REFUSED = "refused"  # the server answered with a failure status
    CANCELLED = "cancelled"
    CONFIG = "config"  # the server settings are incomplete or invalid
    LOCAL = "local"  # our side failed: cannot write the cache, our storage port is taken


class PacsError(CxrError):
    """A PACS operation failed; ``str(err)`` is the sentence for the user (what happened, what to do)."""

    def __init__(self, kind: PacsProblem, message: str):
        self.kind = PacsProblem(kind)
        self.message = message
        super().__init__(message)
