"""Shared helpers for the DuckLake spike: connect with extensions loaded by file path."""
from __future__ import annotations

import importlib
import random
import time
from pathlib import Path

import duckdb

CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
PG_DSN = "host=/tmp/ducklake/pg port=5499 user=lake dbname={db}"


def ext_path(name: str) -> str:
    mod = importlib.import_module(f"duckdb_extension_{name}")
    root = Path(mod.__file__).resolve().parent / "extensions"
    wanted = root / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if wanted.exists():
        return str(wanted)
    return str(sorted(root.glob(f"*/{name}.duckdb_extension"))[-1])


def connect(exts=("spatial", "ducklake", "sqlite_scanner", "postgres_scanner"), config=None):
    cfg = dict(CONFIG)
    if config:
        cfg.update(config)
    con = duckdb.connect(":memory:", config=cfg)
    for e in exts:
        con.load_extension(ext_path(e))
    return con


def attach_sql(kind: str, base: str, *, alias="lake", extra="") -> str:
    """kind 'sqlite' -> base is a directory; kind 'pg' -> base is a pg database name."""
    if kind == "sqlite":
        return (f"ATTACH 'ducklake:sqlite:{base}/city.sqlite' AS {alias} "
                f"(DATA_PATH '{base}/city.data/'{extra})")
    if kind == "pg":
        return (f"ATTACH 'ducklake:postgres:{PG_DSN.format(db=base)}' AS {alias} "
                f"(DATA_PATH '/tmp/ducklake/pgdata_{base}/'{extra})")
    raise ValueError(kind)


def open_lake(kind, base, *, alias="lake", extra="", config=None):
    con = connect(config=config)
    con.execute(attach_sql(kind, base, alias=alias, extra=extra))
    con.execute(f"USE {alias}")
    return con


def retry(fn, *, attempts=20, base_ms=5, cap_ms=500, on_conflict=None):
    """Run fn() with retry + full jitter on DuckLake/catalog conflicts. Returns (result, tries)."""
    for i in range(attempts):
        try:
            return fn(), i + 1
        except duckdb.Error as exc:
            if not is_retryable(exc):
                raise
            if on_conflict:
                on_conflict(exc)
            if i == attempts - 1:
                raise
            time.sleep(random.uniform(0, min(cap_ms, base_ms * 2 ** i)) / 1000)
    raise RuntimeError("unreachable")


def is_retryable(exc: Exception) -> bool:
    """Commit conflicts and SQLite catalog lock errors are retryable; anything else (syntax, catalog) is not."""
    msg = str(exc)
    return isinstance(exc, duckdb.TransactionException) or "database is locked" in msg or "conflict" in msg.lower()


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = min(len(xs) - 1, max(0, int(round(p / 100 * (len(xs) - 1)))))
    return xs[k]
