"""geo.caches: small tables read again only after a committed write changed them (``cached_read``); results kept
per store version or across versions (``VersionCache``)."""

from __future__ import annotations

from civicgrid.geo.caches import cached_read
from civicgrid.geo.store import Store, writing


def test_cached_read_reads_again_only_after_its_tables_change(tmp_path):
    db = tmp_path / "city.duckdb"
    store = Store(db, create=True)
    loads = []

    def grids(con):
        loads.append(1)
        return sorted(r[0] for r in con.execute("SELECT code FROM grids").fetchall())

    def read():
        with store.cursor() as con:
            return cached_read(con, "grid-codes", ("areas", "grids"), grids)

    assert read() == [] and len(loads) == 1
    assert read() == [] and len(loads) == 1, "nothing written: no second read"
    with writing(db) as con:  # another table written: still no read
        con.execute("INSERT INTO events (event_id, source, time) VALUES (1, 'complaint', now()::TIMESTAMP)")
    assert read() == [] and len(loads) == 1
    with writing(db) as con:
        con.execute("INSERT INTO grids (code, name) VALUES ('G1', 'one')")
    assert read() == ["G1"] and len(loads) == 2, "a committed write of grids is seen on the next read"
    with writing(db) as con:
        con.execute("DELETE FROM grids")
    assert read() == [] and len(loads) == 3
    other = Store(tmp_path / "other.duckdb", create=True)
    with writing(other.path) as con:
        con.execute("INSERT INTO grids (code, name) VALUES ('G9', 'nine')")
    with other.cursor() as con:  # one value per store: another store's grids are its own
        assert cached_read(con, "grid-codes", ("areas", "grids"), grids) == ["G9"]
    assert read() == [] and len(loads) == 4


def test_lasting_results_outlive_a_write_and_per_version_ones_do_not(tmp_path):
    from civicgrid.geo.caches import VersionCache

    db = tmp_path / "city.duckdb"
    store = Store(db, create=True)
    cache, runs = VersionCache(4), []

    def compute(value):
        runs.append(value)
        return value

    assert cache.get_lasting(store, ("k", 1), lambda: compute("a")) == "a"
    assert cache.get(store, ("k", 1), lambda: compute("b")) == "b", "the two kinds of key are apart"
    with writing(db) as con:
        con.execute("INSERT INTO grids (code, name) VALUES ('G1', 'one')")
    assert cache.get_lasting(Store(db), ("k", 1), lambda: compute("c")) == "a"
    assert cache.get(Store(db), ("k", 1), lambda: compute("d")) == "d"
    assert cache.get_lasting(Store(tmp_path / "other.duckdb", create=True), ("k", 1), lambda: compute("e")) == "e"
    assert runs == ["a", "b", "d", "e"]
    cache.clear()
    assert cache.get_lasting(store, ("k", 1), lambda: compute("f")) == "f"
