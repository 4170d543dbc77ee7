"""Files replaced whole (`machine_health.files`), written from several threads at once.

A worker's heartbeat (the sync folder of `serve --workers N`) is written by its poll loop and by
`record` after a reload, each from a thread of its own; with one temporary name per process the
slower writer found its file renamed away, and `PUT /reload` answered 500 (seen in CI on a
two-worker reload). The pipeline's step records use the same writer.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from machine_health.api.workers import _read_json, _write_json
from machine_health.files import write_text_atomic
from machine_health.pipeline.workspace import write_json_atomic


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


def test_pipeline_json_written_from_two_threads_at_once_stays_whole(tmp_path: Path) -> None:
    # The pipeline's step records share the writer (`machine_health.files`), so the same race
    # cannot come back there: before, they used one fixed temporary name per file.
    path = tmp_path / "gate.json"
    errors: list[BaseException] = []

    def write(writer: int) -> None:
        for i in range(200):
            try:
                write_json_atomic(path, {"writer": writer, "i": i})
            except BaseException as exc:  # any failure is what this test looks for
                errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert json.loads(path.read_text())["i"] == 199
    assert [p.name for p in tmp_path.iterdir()] == ["gate.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    write_text_atomic(path, '{"v": 1}')
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(path, "\ud800")  # a lone surrogate: utf-8 cannot encode it
    assert path.read_text() == '{"v": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]
