"""Run every benchmark script in turn (`make bench`); each records its figures in BENCHMARKS.md.

`python -m bench NAME ...` runs only the named ones (module names in this folder).
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
import time
from pathlib import Path

logger = logging.getLogger("bench")
#: halves of a benchmark (`adaptation` runs them), not benchmarks of their own
PARTS = {"adaptation_turbofan", "adaptation_vibration"}


def available() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)])
                  if not m.name.startswith("_") and m.name not in PARTS)  # fmt: skip


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    names = argv or available()
    unknown = [n for n in names if n not in available()]
    if unknown:  # e.g. options: they belong to one script (`python -m bench.pipeline --help`)
        logger.error(
            "unknown benchmark(s) %s; known: %s. Options go to one script: "
            "python -m bench.NAME --help", unknown, ", ".join(available()),
        )  # fmt: skip
        return 2
    failed = []
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        if not hasattr(module, "main"):
            continue
        started = time.monotonic()
        logger.info("=== bench %s", name)
        try:
            module.main([])
        except Exception:
            logger.exception("bench %s failed", name)
            failed.append(name)
        logger.info("=== bench %s done in %.0fs", name, time.monotonic() - started)
    if failed:
        logger.error("failed benchmarks: %s", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
