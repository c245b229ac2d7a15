"""Entry point of the packaged app (``cxr-desktop`` in the bundle).

``freeze_support`` must run first: screening and training start worker processes, which a
frozen app creates by re-running this executable. The bundle has one executable; the
command-line tools run through it when ``CXR_ENTRY`` names one (the .deb's ``cxr-screen``,
``cxr-train`` and ``cxr-model`` launchers set it), so batch screening on a hospital machine
needs no Python installation either.
"""

import multiprocessing
import os
import sys

TOOLS = {
    "desktop": "cxr_desktop.cli.desktop",
    "screen": "cxr_desktop.cli.screen",
    "train": "cxr_desktop.cli.train",
    "model": "cxr_desktop.cli.model",
}


def main() -> int:
    multiprocessing.freeze_support()
    tool = os.environ.pop("CXR_ENTRY", "desktop") or "desktop"
    if tool not in TOOLS:
        print(f"CXR_ENTRY must be one of {', '.join(TOOLS)} (got {tool!r})", file=sys.stderr)
        return 2
    module = __import__(TOOLS[tool], fromlist=["main"])
    return module.main()


if __name__ == "__main__":
    sys.exit(main())
