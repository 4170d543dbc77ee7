"""The sync folder of `serve --workers N`: files written from several threads at once.

A worker's heartbeat is written by its poll loop and by `record` after a reload, each from a
thread of its own; with one temporary name per process the slower writer found its file
renamed away, and `PUT /reload` answered 500 (seen in CI on a two-worker reload).
"""

from __future__ import annotations

import threading
from pathlib import Path

from machine_health.api.workers import _read_json, _write_json


def test_concurrent_writes_of_one_file_all_succeed_and_readers_never_see_half(
    tmp_path: Path,
) -> None:
    path = tmp_path / "worker-1.json"
    errors: list[BaseException] = []
    torn: list[str] = []
    done = threading.Event()

    def write(writer: int) -> None:
        for i in range(300):
            try:
                _write_json(path, {"writer": writer, "i": i, "pad": "x" * 4000})
            except BaseException as exc:  # any failure is what this test looks for
                errors.append(exc)

    def read() -> None:
        while not done.is_set():
            if path.exists() and _read_json(path) is None:
                torn.append(path.read_text()[:80])

    writers = [threading.Thread(target=write, args=(n,)) for n in range(3)]
    reader = threading.Thread(target=read)
    reader.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    reader.join()

    assert errors == []
    assert torn == []
    final = _read_json(path)
    assert final is not None and final["i"] == 299
    # No temporary file left behind (the heartbeat glob must only ever see whole files).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["worker-1.json"]
