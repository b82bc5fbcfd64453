"""The tree is clean under the project's ruff rules (``[tool.ruff]`` in pyproject.toml), and mypy finds no error
in the typed layers, ``civicgrid.geo`` and ``civicgrid.grids`` (``[tool.mypy]``; ``make lint`` runs both)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from typecheck import CHECKED, run_mypy

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> list[str] | None:
    """The command that runs the venv's ruff: ``python -m ruff`` if importable, else ``ruff`` beside python."""
    if importlib.util.find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    beside = Path(sys.executable).with_name("ruff")
    return [str(beside)] if beside.exists() else None


def test_ruff_check_is_clean():
    ruff = _ruff()
    if ruff is None:
        pytest.skip("ruff is not installed (it is in the dev extra: pip install -e '.[dev]')")
    proc = subprocess.run([*ruff, "check", "--no-cache", "--output-format", "concise", str(ROOT)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"ruff check found problems (fix them or run `make lint`):\n{proc.stdout}{proc.stderr}"


def test_mypy_is_clean_on_the_typed_layers():
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (it is in the dev extra: pip install -e '.[dev]')")
    proc = run_mypy()
    assert proc.returncode == 0, (f"mypy found problems in {', '.join(CHECKED)} (fix them or run `make lint`):\n"
                                  f"{proc.stdout}{proc.stderr}")
