"""Run mypy on the typed layers, ``civicgrid.geo`` and ``civicgrid.grids`` (``make lint``, tests/test_lint.py).

mypy cannot follow the finder of setuptools' editable install, and the folders install under other names
(``geo/`` is ``civicgrid.geo``: ``package-dir`` in pyproject.toml). So this lays the namespace out as it
installs, as a tree of symbolic links under ``build/mypy/``, and runs mypy there with the ``[tool.mypy]``
settings of pyproject.toml. Run it as ``python tests/typecheck.py``; the exit status is mypy's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The packages mypy checks (the modules they import are followed).
CHECKED = ("civicgrid.geo", "civicgrid.grids")


def _link(target: Path, link: Path) -> None:
    """Make ``link`` a symbolic link to ``target``, replacing an older link atomically (runs may overlap)."""
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    tmp = link.with_name(f".{link.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def link_tree(root: Path = ROOT) -> Path:
    """Lay out the ``civicgrid`` namespace as installed (``package-dir`` of pyproject.toml) under
    ``root/build/mypy``; return that folder."""
    config = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    tree = root / "build" / "mypy"
    for package, folder in config["package-dir"].items():
        parts = package.split(".")
        if len(parts) == 1:  # the top package itself: a real folder holding links to its files
            (tree / package).mkdir(parents=True, exist_ok=True)
            for f in sorted((root / folder).iterdir()):
                if f.is_file():
                    _link(f, tree / package / f.name)
        else:
            _link(root / folder, tree.joinpath(*parts))
    return tree


def mypy_command(tree: Path, packages: tuple[str, ...] = CHECKED) -> list[str]:
    """The mypy command run in ``tree`` (this Python's mypy, the project's settings)."""
    return [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
            "--cache-dir", str(tree / ".mypy_cache"), *(arg for p in packages for arg in ("-p", p))]


def run_mypy(packages: tuple[str, ...] = CHECKED) -> subprocess.CompletedProcess[str]:
    """Run mypy on ``packages``; return the finished process (its output in ``stdout``)."""
    tree = link_tree()
    return subprocess.run(mypy_command(tree, packages), cwd=tree, capture_output=True, text=True, timeout=600)


if __name__ == "__main__":
    proc = run_mypy()
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    sys.exit(proc.returncode)
