"""`make data`'s checksum table matches the real data, and a corrupted file is caught."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("fetch_data", REPO / "scripts" / "fetch_data.py")
assert spec and spec.loader
fetch_data = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fetch_data)


def test_every_shared_file_verifies(data_dir: Path) -> None:
    assert fetch_data.verify(data_dir) == []


def test_manifest_text_is_the_shared_manifest(data_dir: Path) -> None:
    assert (data_dir / "cwru" / "labels.csv").read_text() == fetch_data.CWRU_MANIFEST


def test_corrupted_and_missing_files_are_reported(data_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(data_dir / "cmapss", tmp_path / "cmapss")
    (tmp_path / "cwru").mkdir()
    rul = tmp_path / "cmapss" / "RUL_FD001.txt"
    rul.write_text(rul.read_text().replace("112", "113", 1))
    problems = fetch_data.verify(tmp_path)
    assert any("RUL_FD001.txt: sha256" in p for p in problems)
    assert sum(p.endswith(": missing") for p in problems) == len(fetch_data.CWRU_FILES)
