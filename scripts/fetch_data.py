#!/usr/bin/env python3
"""Download the public data sets from their official sources and check every file's sha256.

`make data` runs this on a machine with internet, into `data/`. The data-dir setting prefers
`../shared/data` when it exists, so this is only needed on a machine without it. Standard library
only: it runs before any virtual environment exists.

    python3 scripts/fetch_data.py --dest data          download + verify
    python3 scripts/fetch_data.py --verify DIR         verify an existing data dir (.txt or .txt.gz)
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import shutil
import sys
import urllib.request
import zipfile
from pathlib import Path

# NASA Prognostics Center of Excellence data repository (C-MAPSS, Saxena et al. 2008).
CMAPSS_URL = (
    "https://phm-datasets.s3.amazonaws.com/NASA/"
    "6.+Turbofan+Engine+Degradation+Simulation+Data+Set.zip"
)
# CWRU Bearing Data Center: one .mat per file number.
CWRU_URL = "https://engineering.case.edu/sites/default/files/{number}.mat"

# sha256 of each file's uncompressed content (the same bytes whether stored as .txt or .txt.gz).
CMAPSS_FILES = {
    "RUL_FD001.txt": "a19c8ec94931949d0485bdc35118206e9c81c4547b422efb9cf86f4ceddbceca",
    "test_FD001.txt": "3cda7109ce17bafb5443f2ac926cfcf88154b941b8c4cf95eb55d1ddd6f52851",
    "train_FD001.txt": "963b5e22825b34d8b21c69e1aeb4af3e647050eb672ee8834ba4b5d91d2de0f8",
    "RUL_FD002.txt": "c851dd96a6ea6998d3c4a8f834d3c8013aa90e93a6ed950dc826ad0655b2906b",
    "test_FD002.txt": "de7b5bf7e998a985c378488480528b7c02cff1406a46740def362dda8d9b4e02",
    "train_FD002.txt": "dac6c4dbc4e7c1bdeb5747da3d313d05c395bb99801b44a002b26a2ba13d788f",
}
# local name -> (CWRU file number, sha256)
CWRU_FILES = {
    "normal_0_97.mat": (97, "16bf48babcf1c7ac224bc1a81cd9eafdb27e42d5cf559761907e067e8eeadf3c"),
    "48k_Drive_End_IR007_0_109.mat": (
        109,
        "daddef5f784879becdf8fefbe2453f11c3cfc8d061a2a671da2f546d1bb48460",
    ),
    "48k_Drive_End_IR014_0_174.mat": (
        174,
        "ca7113a900d9217aa5632e0dad4f8791caed4d314321daa011719e1bc99f3026",
    ),
    "48k_Drive_End_B007_0_122.mat": (
        122,
        "f392129bf3b43360b964d4e5b3479d0797d1647af8359934b0f56b9abab4739a",
    ),
    "48k_Drive_End_B014_0_189.mat": (
        189,
        "6fd84310f781e1ab54a9a746b8626c73a863f2b02cea4c86229ca2444cb20a9a",
    ),
    "48k_Drive_End_OR007@6_0_135.mat": (
        135,
        "5a1c3ceec1f2b58af9e01051e425aa9d31dd018f58a8d31cda25bbdb1ac6dca9",
    ),
    "48k_Drive_End_OR014@6_0_201.mat": (
        201,
        "6c27615a61f19f05f65cf2cc2aa4bca5bda051c9d93a708d0ee8baf5138834fa",
    ),
}
# The manifest describing the recordings (our own file; see ../shared/data/README.md).
CWRU_MANIFEST = """\
file,label,binary_label,fault_diameter_in,or_position_oclock,motor_load_hp,rpm,fs_hz,de_key,fe_key,n_samples
48k_Drive_End_B007_0_122.mat,ball,1,0.007,,0,1796,48000,X122_DE_time,X122_FE_time,244739
48k_Drive_End_B014_0_189.mat,ball,1,0.014,,0,1797,48000,X189_DE_time,X189_FE_time,249146
48k_Drive_End_IR007_0_109.mat,inner_race,1,0.007,,0,1796,48000,X109_DE_time,X109_FE_time,243938
48k_Drive_End_IR014_0_174.mat,inner_race,1,0.014,,0,1796,48000,X173_DE_time,X173_FE_time,63788
48k_Drive_End_OR007@6_0_135.mat,outer_race,1,0.007,6,0,1796,48000,X135_DE_time,X135_FE_time,243538
48k_Drive_End_OR014@6_0_201.mat,outer_race,1,0.014,6,0,1796,48000,X201_DE_time,X201_FE_time,245140
normal_0_97.mat,normal,0,,,0,1796,48000,X097_DE_time,X097_FE_time,243938
"""


def sha256_of(path: Path) -> str:
    """sha256 of a file's content, decompressing .gz first."""
    opener = gzip.open if path.suffix == ".gz" else open
    digest = hashlib.sha256()
    with opener(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def expected_files() -> dict[str, str]:
    """relative path -> sha256 of every file a data dir must hold."""
    files = {f"cmapss/{name}": sha for name, sha in CMAPSS_FILES.items()}
    files.update({f"cwru/{name}": sha for name, (_, sha) in CWRU_FILES.items()})
    return files


def verify(root: Path) -> list[str]:
    """Problems found in `root` (empty when every file is present with the right content)."""
    problems = []
    for rel, sha in expected_files().items():
        candidates = [root / rel, root / f"{rel}.gz"]
        found = next((p for p in candidates if p.exists()), None)
        if found is None:
            problems.append(f"{rel}: missing")
        elif (actual := sha256_of(found)) != sha:
            problems.append(f"{found}: sha256 {actual} != expected {sha}")
    return problems


def _download(url: str) -> bytes:
    print(f"  downloading {url}", file=sys.stderr)
    with urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 (fixed https URLs)
        return response.read()


def _find_in_zip(blob: bytes, wanted: set[str]) -> dict[str, bytes]:
    """Files named in `wanted`, searched through nested zip archives too."""
    found: dict[str, bytes] = {}
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        for info in archive.infolist():
            name = Path(info.filename).name
            if name in wanted:
                found[name] = archive.read(info)
            elif name.endswith(".zip"):
                found.update(_find_in_zip(archive.read(info), wanted))
    return found


def fetch(dest: Path) -> None:
    (dest / "cmapss").mkdir(parents=True, exist_ok=True)
    (dest / "cwru").mkdir(parents=True, exist_ok=True)
    missing = {n for n in CMAPSS_FILES if not (dest / "cmapss" / n).exists()}
    if missing:
        for name, content in _find_in_zip(_download(CMAPSS_URL), missing).items():
            (dest / "cmapss" / name).write_bytes(content)
    for name, (number, _) in CWRU_FILES.items():
        target = dest / "cwru" / name
        if not target.exists():
            tmp = target.with_suffix(".part")
            tmp.write_bytes(_download(CWRU_URL.format(number=number)))
            shutil.move(tmp, target)
    (dest / "cwru" / "labels.csv").write_text(CWRU_MANIFEST)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=Path("data"))
    parser.add_argument("--verify", type=Path, help="only verify this data dir")
    args = parser.parse_args(argv)
    root = args.verify or args.dest
    if args.verify is None:
        fetch(root)
    problems = verify(root)
    for problem in problems:
        print(f"FAILED {problem}", file=sys.stderr)
    if not problems:
        print(f"all {len(expected_files())} files verified in {root}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
