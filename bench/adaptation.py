"""Adaptation benchmark: does ONE retrain on field data close the gap to a model trained there?

    .venv/bin/python -m bench adaptation                           # both domains
    .venv/bin/python -m bench.adaptation --domain turbofan --units 130

Each domain's half (`bench/adaptation_<domain>.py`, `run(args, work) -> dict`) serves a champion
trained on its base data, replays new-condition data through the real API with its labels,
runs the retraining pipeline once (gate, register, reload against real replicas) and scores
before / after / a model trained on the new data directly. A half may add its own options
(`add_arguments(parser)`). Results: docs/benchmarks/adaptation.json, one key per domain, so the
halves (run separately) never overwrite each other.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from bench.provenance import commit

logger = logging.getLogger("bench.adaptation")
OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "adaptation.json"
DOMAINS = ("turbofan", "vibration")


def _half(domain: str) -> ModuleType | None:
    """The domain's half, imported only when asked for (None, logged, while it is not written)."""
    try:
        return importlib.import_module(f"bench.adaptation_{domain}")
    except ModuleNotFoundError as exc:
        if exc.name != f"bench.adaptation_{domain}":
            raise  # a missing dependency of an existing half is a real error
        logger.error("no %s half yet: bench/adaptation_%s.py does not exist", domain, domain)
        return None


def parse(argv: list[str]) -> tuple[argparse.Namespace, dict[str, ModuleType]]:
    """The options (each half adds its own) and the halves that exist for the chosen domains."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.adaptation", description=__doc__, add_help=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    parser.add_argument("--domain", choices=[*DOMAINS, "both"], default="both")
    parser.add_argument("--keep", type=Path, help="work directory to keep (default: temporary)")
    chosen, _ = parser.parse_known_args(argv)  # --help waits for the halves' options
    parser.add_argument("-h", "--help", action="help", help="show this help message and exit")
    names = DOMAINS if chosen.domain == "both" else (chosen.domain,)
    halves = {n: m for n in names if (m := _half(n)) is not None}
    for module in halves.values():
        if hasattr(module, "add_arguments"):
            module.add_arguments(parser)
    return parser.parse_args(argv), halves


def record(domain: str, result: dict[str, Any], command: str) -> None:
    """Replace `domain`'s key of the results file, keeping the other domain's."""
    previous = json.loads(OUT.read_text()) if OUT.exists() else {}
    previous[domain] = {"commit": commit(), "date": datetime.now(UTC).isoformat(timespec="seconds"),
                        "command": command, **result}  # fmt: skip
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(previous, indent=2) + "\n")


def main(argv: list[str]) -> int:
    args, halves = parse(argv)
    command = " ".join([".venv/bin/python -m bench.adaptation", *argv])
    for domain, module in halves.items():
        started = time.monotonic()
        if args.keep:
            work = args.keep / domain
            work.mkdir(parents=True, exist_ok=True)
            result = module.run(args, work)
        else:
            with tempfile.TemporaryDirectory(prefix=f"mh-bench-adapt-{domain}-") as tmp:
                result = module.run(args, Path(tmp))
        result["wall_s"] = round(time.monotonic() - started, 1)
        record(domain, result, command)
        logger.info("%s: %s", domain, json.dumps(result.get("summary", {})))
    asked = DOMAINS if args.domain == "both" else (args.domain,)
    return 0 if len(halves) == len(asked) else 2


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    sys.exit(main(sys.argv[1:]))
