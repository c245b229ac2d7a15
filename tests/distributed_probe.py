"""One process of a two-process job for tests/test_distributed.py (run directly, not by pytest).

Usage: python tests/distributed_probe.py OUT_DIR MODE. MODE "ok" exercises the collectives and
writes what this rank saw to OUT_DIR/rank<R>.json; MODE "die" makes rank 1 exit before the
barrier, and rank 0 writes the error message it got.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from cxr_desktop.distributed import DistributedError, join


def main() -> int:
    out, mode = Path(sys.argv[1]), sys.argv[2]
    session = join(cuda=False)
    seen: dict[str, object] = {"rank": session.rank, "world": session.world_size, "backend": session.backend}
    try:
        if mode == "die" and session.rank == 1:
            os._exit(3)  # a process that dies without a word
        seen["broadcast"] = session.broadcast({"split": [3, 1, 2]} if session.is_main else None, "sharing the split")
        mine = session.shard(list(range(7)))
        seen["shard"] = mine
        parts = session.all_gather(mine, "gathering shards")
        seen["unshard"] = session.unshard(parts)
        seen["any_rank1"] = session.any(session.rank == 1, "agreeing on cancel")
        seen["any_none"] = session.any(False, "agreeing on cancel")
        session.barrier("finishing")
    except DistributedError as exc:
        seen["error"] = str(exc)
    finally:
        session.close()
    (out / f"rank{session.rank}.json").write_text(json.dumps(seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
