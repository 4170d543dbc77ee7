"""The full cluster check: the served turbofan ensemble trained and retrained in the pods.

    python -m bench cluster        (part of `make bench`; needs root, like `make cluster-check`)

`make test` runs the same check with the tree model for turbofan (a fraction of the time, the
same code path). This one sets MH_CLUSTER_FULL=1 and prints the wall time and the per-phase
timings the check reports (`-s`: its fixture prints them at the end; docs/BENCHMARKS.md,
"Cluster check").
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    env = {**os.environ, "MH_CLUSTER_FULL": "1"}
    command = ["unshare", "--net", "--", sys.executable, "-m", "pytest", "tests/cluster",
               "-p", "no:cacheprovider", "-q", "-s", *argv]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    timings = [line for line in done.stderr.splitlines() if "cluster check timings" in line]
    logger.info("cluster check (full): exit %s in %.0f s; %s", done.returncode, seconds,
                timings[-1] if timings else "no timings")  # fmt: skip
    print(done.stdout[-3000:])
    if done.returncode != 0:
        raise RuntimeError(f"the full cluster check failed:\n{done.stdout[-3000:]}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main(sys.argv[1:]))
