"""Files replaced whole: a reader sees the old content or the new, never half of one."""

from __future__ import annotations

import uuid
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path`.

    The temporary name is unique per call, not per process or per target: two threads (or two
    processes) writing the same file at once each rename their own, and the last one wins
    whole. With a shared name, the slower writer found its file already renamed away.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("x") as handle:  # "x": never someone else's file; mode from the umask
            handle.write(text)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
