"""Entry point of the packaged app (``cxr-desktop`` in the bundle).

``freeze_support`` must run first: screening and training start worker processes, which a
frozen app creates by re-running this executable.
"""

import multiprocessing
import sys


def main() -> int:
    multiprocessing.freeze_support()
    from cxr_desktop.cli.desktop import main as desktop_main

    return desktop_main()


if __name__ == "__main__":
    sys.exit(main())
