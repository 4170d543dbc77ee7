"""What a benchmark's figures were measured on, recorded in every result file it writes.

`provenance(data=[...], **specifics)` is the block every benchmark JSON carries under
"provenance": the commit (and whether src/, bench/ or research/ had uncommitted changes), when
(UTC), the command line, the host, a sha256 of every data file read, and what the domain's
figures depend on besides the code and data (passed in: the turbofan RUL cap and window, the
vibration window and hop, the acoustic sample rate and bands).
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
_CHUNK = 1 << 20


def commit() -> str:
    """`git rev-parse --short HEAD`, marked when src/, bench/ or research/ differ from it;
    "unknown" outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
            check=True,
        )  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src", "bench", "research"], cwd=REPO,
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


def sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes (as stored: a .gz file's compressed bytes)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def data_checksums(paths: Iterable[Path]) -> dict[str, Any]:
    """{path: sha256} of every file; a folder is one entry, {"files": n, "sha256": digest of its
    sorted "relative-path sha256" lines}, so a 200-clip data set stays one line."""
    out: dict[str, Any] = {}
    for path in (Path(p).resolve() for p in paths):
        if path.is_dir():
            lines = [
                f"{p.relative_to(path).as_posix()} {sha256(p)}\n"
                for p in sorted(path.rglob("*"))
                if p.is_file()
            ]
            listing = hashlib.sha256("".join(lines).encode()).hexdigest()
            out[str(path)] = {"files": len(lines), "sha256": listing}
        else:
            out[str(path)] = sha256(path)
    return out


def command() -> str:
    """The command line that is running: `python -m module args` when run as a module."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is None:
        head = ["python", sys.argv[0]]
    else:  # `python -m bench vibration` runs bench.__main__
        head = ["python", "-m", spec.name.removesuffix(".__main__")]
    return " ".join([*head, *sys.argv[1:]])


def provenance(data: Iterable[Path] = (), **specifics: Any) -> dict[str, Any]:
    """The provenance block: commit, measured_at (UTC, ISO), command (sys.argv), host, data
    ({file: sha256}) and the domain `specifics` (e.g. cap=125, window=100)."""
    return {
        "commit": commit(),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command(),
        "host": {
            "name": platform.node(),
            "cpus": os.cpu_count(),
            "load_average_1m_5m_15m": list(os.getloadavg()),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "data": data_checksums(data),
        **specifics,
    }
