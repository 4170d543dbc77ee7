"""The exploration notebooks: committed without outputs, and every code cell still runs against
the project's current code and the real data (a renamed function or argument fails here, not in
a reader's Jupyter)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def test_both_domains_have_a_notebook() -> None:
    assert {p.name for p in NOTEBOOKS} >= {"turbofan_eda.ipynb", "vibration_eda.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_outputs_are_stripped(path: Path) -> None:
    code = [c for c in _cells(path) if c["cell_type"] == "code"]
    assert code
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_code_runs_on_the_real_data(
    path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cells run in order in one namespace, from notebooks/ as Jupyter would, with the data
    # root the tests use. Executed directly rather than through a Jupyter kernel: the cells are
    # plain Python, and a kernel (ipykernel, nbclient and their dependencies) would grow the
    # pinned environment for the same check.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(path.parent)
    monkeypatch.setenv("MH_DATA_DIR", str(data_dir.resolve()))
    namespace: dict = {"__name__": "__main__"}
    try:
        for number, cell in enumerate(_cells(path)):
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"])
            exec(compile(source, f"{path.name}[cell {number}]", "exec"), namespace)  # noqa: S102
        assert plt.get_fignums(), "an exploration notebook draws its findings"
    finally:
        plt.close("all")
