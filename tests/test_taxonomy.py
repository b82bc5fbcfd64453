"""A city's own taxonomy (issue 13, part 1): labels kept, unmapped labels loaded and reported, `types` managing
them (retroactive mapping gives the events and their cases the type and its deadline), statuses of city files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from civicgrid.api.cli import main
from civicgrid.geo.aggregate import EventFilter, heatmap
from civicgrid.geo.errors import InvalidParameterError, NotFoundError
from civicgrid.geo.store import Store
from civicgrid.sites.cases.calendar import compute_deadlines
from civicgrid.sites.events import import_events
from civicgrid.sites.taxonomy import add_type, import_map, map_label, status_words, unmapped_labels
from click.testing import CliRunner

#: A 12345 export: two labels of the default taxonomy (by 小类 name and by code), three of the city's own.
HOTLINE = pd.DataFrame({
    "工单编号": [f"G{i}" for i in range(1, 9)],
    "受理时间": ["2024-03-08 15:00"] * 8,
    "问题分类": ["暴露垃圾", "0103", "噪音扰民", "噪音扰民", "油烟污染", "Garbage in alley", "噪音扰民", ""],
    "经度": ["112.905"] * 8,
    "纬度": ["28.205"] * 8,
    "办理状态": ["已办结", "处理中", "Completed - Dup", "completed", "待核实", "待核实", "Open", ""],
})


def _write(tmp_path, frame, name="h.csv", encoding="utf-8"):
    f = tmp_path / name
    frame.to_csv(f, index=False, encoding=encoding)
    return f


def _events(db) -> pd.DataFrame:
    return Store(db).sql("SELECT external_id, problem_type, source_type, status, source_status, source_duplicate, "
                         "deadline, time FROM events ORDER BY external_id")


def test_unknown_labels_load_with_their_label_and_are_reported(small_city, tmp_path):
    f = _write(tmp_path, HOTLINE)
    rep = import_events(f, db=small_city, progress=False)
    assert (rep.rows_read, rep.loaded, rep.duplicates, rep.rejected) == (8, 8, 0, 0)
    assert rep.columns["type"] == "问题分类" and rep.columns["status"] == "办理状态"
    assert any("read from column '问题分类'" in w for w in rep.warnings)
    assert rep.unmapped_types == {"噪音扰民": 3, "Garbage in alley": 1, "油烟污染": 1}
    assert set(rep.type_suggestions) == set(rep.unmapped_types)
    assert all(len(v) <= 3 for v in rep.type_suggestions.values())
    ev = _events(small_city).set_index("external_id")
    assert ev.loc["G1", "problem_type"] == "0101" and ev.loc["G2", "problem_type"] == "0103"
    assert ev["source_type"].tolist()[:7] == HOTLINE["问题分类"].tolist()[:7]
    assert pd.isna(ev.loc["G8", "source_type"]) and pd.isna(ev.loc["G8", "problem_type"])
    assert ev.loc[["G3", "G4", "G5", "G6", "G7"], "problem_type"].isna().all()
    assert ev.loc[["G3", "G4", "G5", "G6", "G7"], "deadline"].isna().all()
    # statuses: known words, a duplicate mark, unknown words loaded open with their label and a warning
    assert ev["status"].tolist() == ["closed", "open", "closed", "closed", "open", "open", "open", "open"]
    assert ev["source_status"].tolist()[:7] == HOTLINE["办理状态"].tolist()[:7]
    assert ev["source_duplicate"].tolist() == [False, False, True, False, False, False, False, False]
    assert any("unknown statuses loaded as open" in w and "'待核实' (2 rows)" in w for w in rep.warnings)


def test_strict_types_reject_unknown_labels(small_city, tmp_path):
    rep = import_events(_write(tmp_path, HOTLINE), db=small_city, progress=False, types="strict")
    assert (rep.rows_read, rep.loaded, rep.rejected) == (8, 3, 5)
    assert {r["row"] for r in rep.rejects} == {4, 5, 6, 7, 8}  # file lines (the header is line 1)
    assert all(r["field"] == "type" and "unknown problem type" in r["reason"] for r in rep.rejects)
    with pytest.raises(InvalidParameterError, match=r"open .* or strict"):
        import_events(_write(tmp_path, HOTLINE), db=small_city, progress=False, types="lenient")


def test_map_is_retroactive_with_deadlines_and_kept_for_later_imports(small_city, tmp_path):
    import_events(_write(tmp_path, HOTLINE), db=small_city, progress=False)
    listed = unmapped_labels(Store(small_city))
    assert listed[["label", "events"]].values.tolist() == [["噪音扰民", 3], ["Garbage in alley", 1], ["油烟污染", 1]]
    done = map_label(small_city, "噪音扰民", "0101")
    assert (done["events"], done["cases"]) == (3, 3)
    ev = _events(small_city).set_index("external_id")
    assert (ev.loc[["G3", "G4", "G7"], "problem_type"] == "0101").all()
    # the deadline is the one the type implies: the same as the 暴露垃圾 event found at the same moment
    assert (ev.loc[["G3", "G4", "G7"], "deadline"] == ev.loc["G1", "deadline"]).all()
    want = compute_deadlines(Store(small_city), np.array(["2024-03-08T15:00"], "datetime64[s]"), ["0101"])[0]
    assert ev.loc["G3", "deadline"] == pd.Timestamp(want)
    cases = Store(small_city).sql("SELECT e.external_id, c.problem_type, c.deadline FROM cases c "
                                  "JOIN events e USING (event_id) ORDER BY e.external_id").set_index("external_id")
    assert (cases.loc[["G3", "G4", "G7"], "problem_type"] == "0101").all()
    assert (cases.loc[["G3", "G4", "G7"], "deadline"] == ev.loc["G1", "deadline"]).all()
    # a later import of the same source: the label is mapped at once
    later = HOTLINE.assign(工单编号=[f"H{i}" for i in range(1, 9)])
    rep = import_events(_write(tmp_path, later, "later.csv"), db=small_city, progress=False)
    assert rep.unmapped_types == {"Garbage in alley": 1, "油烟污染": 1}
    assert Store(small_city).sql("SELECT count(*) AS n FROM events WHERE problem_type = '0101'")["n"][0] == 8
    with pytest.raises(NotFoundError, match="unknown problem type"):
        map_label(small_city, "油烟污染", "9999")


def test_add_type_and_import_map(small_city, tmp_path):
    import_events(_write(tmp_path, HOTLINE), db=small_city, progress=False)
    t = add_type(small_city, "0905", "油烟污染", name_en="Cooking fumes", deadline="8h")
    assert (t["major_code"], t["deadline_value"], t["deadline_unit"]) == ("99", 8.0, "working_hours")
    with pytest.raises(InvalidParameterError, match="exists already"):
        add_type(small_city, "0905", "again")
    with pytest.raises(InvalidParameterError, match=r"3d .* 8h"):
        add_type(small_city, "0906", "x", deadline="two days")
    # a city's type in a new 大类 (no names): an unknown type still gets "closest known", not a server error
    add_type(small_city, "7701", "新类", major="77")
    with pytest.raises(NotFoundError, match="closest known"):
        heatmap(Store(small_city), filters=EventFilter(types="\U000af6de秏"))
    m = tmp_path / "map.csv"
    m.write_text("source,label,code\ncomplaint,油烟污染,0905\n,Garbage in alley,暴露垃圾\n", encoding="gbk")
    done = import_map(small_city, m)
    assert [(d["label"], d["code"], d["events"]) for d in done] == [("油烟污染", "0905", 1),
                                                                   ("Garbage in alley", "0101", 1)]
    ev = _events(small_city).set_index("external_id")
    assert ev.loc["G5", "problem_type"] == "0905" and ev.loc["G6", "problem_type"] == "0101"
    # 8 working hours from Friday 15:00: Monday 14:00 (09:00-18:00 working clock)
    assert ev.loc["G5", "deadline"] == pd.Timestamp("2024-03-11 14:00")
    bad = tmp_path / "bad.csv"
    bad.write_text("source,label,code\n,噪音扰民,0101\n,x,nope\n", encoding="utf-8")
    with pytest.raises(NotFoundError, match="line 3"):
        import_map(small_city, bad)
    assert Store(small_city).sql("SELECT count(*) AS n FROM type_labels WHERE label = '噪音扰民'")["n"][0] == 0


def test_types_cli(small_city, tmp_path):
    f = _write(tmp_path, HOTLINE, encoding="gbk")
    run = CliRunner().invoke
    res = run(main, ["import", "events", str(f), "--db", str(small_city), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "unmapped types" in res.output and "噪音扰民 (3)" in res.output
    res = run(main, ["types", "unmapped", "--db", str(small_city)])
    assert res.exit_code == 0 and res.output.splitlines()[0].split()[:3] == ["3", "complaint", "噪音扰民"]
    res = run(main, ["types", "map", "噪音扰民", "0101", "--db", str(small_city)])
    assert res.exit_code == 0 and "3 events and 3 cases updated" in res.output
    res = run(main, ["types", "add", "0905", "油烟污染", "--deadline", "2d", "--db", str(small_city)])
    assert res.exit_code == 0, res.output
    res = run(main, ["types", "list", "--db", str(small_city), "--json"])
    rows = {r["code"]: r for r in json.loads(res.output)}
    assert rows["0101"]["events"] == 4 and rows["0101"]["labels"] == "噪音扰民"
    assert rows["0905"]["deadline_value"] == 2 and rows["0905"]["events"] == 0
    res = run(main, ["types", "map", "x", "nope", "--db", str(small_city)])
    assert res.exit_code == 2 and "unknown problem type 'nope'" in res.output


def test_several_type_columns_most_specific_first(small_city, tmp_path):
    frame = pd.DataFrame({"编号": ["1", "2", "3"], "时间": ["2024-03-08 15:00"] * 3,
                          "经度": ["112.905"] * 3, "纬度": ["28.205"] * 3,
                          "一级分类": ["环境卫生", "环境卫生", "市容环境"],
                          "二级分类": ["道路不洁", "路面油污", "路面油污"]})
    rep = import_events(_write(tmp_path, frame), db=small_city, progress=False,
                        mapping={"type": "一级分类,二级分类"})
    assert rep.columns["type"] == "一级分类,二级分类" and rep.loaded == 3
    ev = _events(small_city)
    # 1: the 小类 matches; 2: only the 大类 does (its label kept); 3: neither (the most specific label kept)
    assert ev["problem_type"].tolist()[:2] == ["0103", "01"] and pd.isna(ev["problem_type"][2])
    assert ev["source_type"].tolist() == ["道路不洁", "环境卫生", "路面油污"]
    assert rep.unmapped_types == {"路面油污": 1}


def test_status_words():
    statuses, dups, unknown = status_words(["办结", "已完成", "Completed - Dup", "Closed (Duplicate)", "处理中",
                                            "closed", "OPEN", "待核实", None])
    assert statuses == ["closed", "closed", "closed", "closed", "open", "closed", "open", "open", "open"]
    assert dups == [False, False, True, True, False, False, False, False, False]
    assert unknown == ["待核实"]


def test_types_api(small_city, tmp_path):
    from civicgrid.api.app import create_app
    from civicgrid.geo.users import add_user
    from fastapi.testclient import TestClient

    _, admin = add_user(small_city, "admin1", role="admin")
    _, viewer = add_user(small_city, "viewer1", role="viewer")
    client = TestClient(create_app(small_city))
    as_admin, as_viewer = ({"Authorization": f"Bearer {t}"} for t in (admin, viewer))
    f = _write(tmp_path, HOTLINE, encoding="gbk")
    with open(f, "rb") as fh:
        r = client.post("/api/imports/events", files={"file": ("12345.csv", fh)}, headers=as_admin,
                        data={"types": "open", "date_order": "dmy"})
    assert r.status_code == 201, r.text
    assert r.json()["unmapped_types"] == {"噪音扰民": 3, "Garbage in alley": 1, "油烟污染": 1}
    r = client.get("/api/types/unmapped", headers=as_viewer)
    assert [(x["label"], x["events"]) for x in r.json()["labels"]] == [("噪音扰民", 3), ("Garbage in alley", 1),
                                                                      ("油烟污染", 1)]
    r = client.post("/api/types/map", json={"label": "噪音扰民", "code": "0101"}, headers=as_viewer)
    assert r.status_code == 403
    r = client.post("/api/types/map", json={"label": "噪音扰民", "code": "0101"}, headers=as_admin)
    assert r.status_code == 200 and (r.json()["events"], r.json()["cases"]) == (3, 3)
    r = client.post("/api/types", json={"code": "0905", "name_zh": "油烟污染", "deadline": "8h"}, headers=as_admin)
    assert r.status_code == 201 and r.json()["deadline_unit"] == "working_hours"
    r = client.post("/api/types/import-map", files={"file": ("m.csv", b"source,label,code\n,Garbage in alley,0101\n")},
                    headers=as_admin)
    assert r.status_code == 200 and r.json()["mapped"][0]["events"] == 1
    r = client.post("/api/types/map", json={"label": "x", "code": "nope"}, headers=as_admin)
    assert r.status_code == 404 and "unknown problem type" in r.text
    types = {t["code"]: t for t in client.get("/api/types", headers=as_viewer).json()["types"]}
    assert types["0101"]["events"] == 5 and types["0905"]["events"] == 0
    assert client.get("/api/types/unmapped", headers=as_viewer).json()["labels"][0]["label"] == "油烟污染"


def test_a_city_label_filters_like_a_type_mapped_or_not(small_city, tmp_path):
    """Issue 13, part 2: a source label that no type matches is a ``type`` of every filter (core, API, map)."""
    from civicgrid.api.app import create_app
    from civicgrid.geo.users import add_user
    from fastapi.testclient import TestClient

    import_events(_write(tmp_path, HOTLINE), db=small_city, progress=False)
    store = Store(small_city)

    def count(types):
        return int(heatmap(store, res=9, filters=EventFilter(types=types))["count"].sum())

    # counted independently from the file itself
    labels = HOTLINE["问题分类"]
    assert count("噪音扰民") == int((labels == "噪音扰民").sum()) == 3
    assert count("garbage in alley") == 1  # a label ignoring case when no label is written so
    assert count("0101,噪音扰民") == 4  # a type and a label: either
    assert count("油烟污染,Garbage in alley") == 2
    with pytest.raises(NotFoundError, match=r"unknown problem type or label '噪音'.*噪音扰民 \(label\)"):
        count("噪音")
    map_label(small_city, "噪音扰民", "0101")
    store = Store(small_city)
    assert count("噪音扰民") == 3 and count("0101") == 4  # mapped: its label still filters its own events

    _, viewer = add_user(small_city, "viewer2", role="viewer")
    client = TestClient(create_app(small_city))
    auth = {"Authorization": f"Bearer {viewer}"}
    r = client.get("/api/heatmap", params={"type": "油烟污染", "res": 9}, headers=auth)
    assert r.status_code == 200 and r.json()["total_events"] == 1
    r = client.get("/api/events", params={"type": "Garbage in alley"}, headers=auth)
    assert r.status_code == 200 and r.json()["total"] == 1
    assert r.json()["features"][0]["properties"]["problem_type"] is None
    r = client.get("/api/stats/areas", params={"type": "油烟污染", "level": "district"}, headers=auth)
    assert r.status_code == 200, r.text
    r = client.get("/map", params={"type": "油烟污染"}, headers=auth)
    assert r.status_code == 200, r.text[:300]
    # the form lists the labels still without a type, the one asked for selected
    assert '<option value="油烟污染" selected>油烟污染</option>' in r.text
    assert '<option value="噪音扰民"' not in r.text  # mapped now: under its type
    assert client.get("/api/heatmap", params={"type": "no such label"}, headers=auth).status_code == 404


def test_suggestions_for_a_citys_english_labels_rank_shared_words_first(small_city):
    """San Francisco 311's labels: the type whose English name shares the label's words comes first ("Graffiti
    Public Property" is 0208 Graffiti; by characters alone 0105 "Dirty public toilet" came first); Chinese labels
    keep the characters' similarity."""
    from civicgrid.sites.taxonomy import suggest_types

    choices = Store(small_city).sql("SELECT code, name_zh, name_en FROM problem_types")
    for label in ("Graffiti Public Property", "Graffiti Private Property"):
        assert suggest_types(label, choices)[0] == "0208 乱涂乱画 (Graffiti)"
    assert suggest_types("Streetlights", choices)[0] == "0405 路灯不亮 (Street light out)"
    # a shared "not" is no likeness (0305 "Vehicles not yielding to pedestrians" was second)
    assert suggest_types("Not_Offensive Graffiti on Private Property", choices) == ["0208 乱涂乱画 (Graffiti)"]
    assert suggest_types("占道经营啊", choices)[0] == "0201 占道经营 (Street occupation)"
    assert suggest_types("暴露垃圾", choices)[0] == "0101 暴露垃圾 (Exposed garbage)"


def _brute_force_rebounds(store: Store, *, radius_m: float = 50.0, days: float = 30.0) -> dict[int, int]:
    """The rebound rule by brute force over every pair of cases: same kind (the problem type, else the event's own
    label, written here as a pair), within ``radius_m`` (haversine, the store's sphere), found after the other
    was closed and at most ``days`` later; the latest closure wins (ties: the larger case id)."""
    c = store.sql("SELECT c.case_id, c.problem_type, e.source_type, c.found_at, c.closed_at, e.lng, e.lat "
                  "FROM cases c JOIN events e ON e.event_id = c.event_id "
                  "WHERE (c.problem_type IS NOT NULL OR e.source_type IS NOT NULL) AND e.lng IS NOT NULL")
    c["kind"] = [("type", t) if isinstance(t, str) else ("label", s) for t, s in zip(c.problem_type, c.source_type,
                                                                                   strict=True)]
    pairs = c.merge(c, on="kind", suffixes=("", "_o"))
    pairs = pairs[(pairs.case_id != pairs.case_id_o) & pairs.closed_at_o.notna()
                  & (pairs.found_at > pairs.closed_at_o)
                  & (pairs.found_at <= pairs.closed_at_o + pd.Timedelta(days=days))]
    la1, la2 = np.radians(pairs.lat), np.radians(pairs.lat_o)
    h = np.sin((la2 - la1) / 2) ** 2 + np.cos(la1) * np.cos(la2) * np.sin(np.radians(pairs.lng_o - pairs.lng) / 2) ** 2
    pairs = pairs[2 * 6_371_008.8 * np.arcsin(np.sqrt(h)) <= radius_m]
    best = pairs.sort_values(["case_id", "closed_at_o", "case_id_o"]).groupby("case_id").tail(1)
    return dict(zip(best.case_id.astype(int), best.case_id_o.astype(int), strict=True))


def test_mapping_a_label_links_the_rebounds_its_cases_now_have(tmp_path, monkeypatch, shared):
    """San Francisco 311: nearly every row carries a label of the city's own. Rebounds (回头看) compared types
    only, so the import linked none of those cases; they now compare the labels of cases without a type, and the
    import's links equal a brute-force search by kind. Mapping ``Sidewalk_Cleaning`` to 0103 gives its cases a
    type and keeps the links equal to the brute force; moving the label to another type undoes the links it no
    longer satisfies and links again."""
    from civicgrid.grids.areas import import_areas

    sf = shared / "us_sf311"
    db = tmp_path / "sf.duckdb"
    monkeypatch.setenv("CIVICGRID_TIMEZONE", "America/Los_Angeles")
    import_areas(sf / "sf_census_tracts_with_neighborhood.geojson", db=db, level="community",
                 mapping={"code": "geoid", "name": "nhood"}, progress=False)
    rep = import_events(sf / "sf311_cases_sample_10000.csv", db=db, mapping={"closed": "Closed"}, date_order="mdy",
                        progress=False)
    assert rep.loaded == 9_871 and rep.columns["point"] == "Point"
    store = Store(db)
    linked = "SELECT case_id, rebound_of FROM cases WHERE rebound_of IS NOT NULL"
    imported = dict(store.sql(linked).itertuples(index=False))
    assert imported == _brute_force_rebounds(store) and rep.rebounds_linked == len(imported) >= 50
    label_cases = set(store.sql("SELECT event_id FROM events WHERE source_type = 'Sidewalk_Cleaning'").event_id)
    assert sum(case in label_cases for case in imported) >= 15  # linked at import, by their label

    done = map_label(db, "Sidewalk_Cleaning", "0103")
    assert done["cases"] == 1_137
    want = _brute_force_rebounds(store)
    got = dict(store.sql(linked).itertuples(index=False))
    assert got == want
    assert done["rebounds"] == sum(case in label_cases for case in want) > 0
    assert dict(store.sql("SELECT event_id, rebound_of FROM events WHERE rebound_of IS NOT NULL")
                .itertuples(index=False)) == want  # the events carry the links too

    moved = map_label(db, "Sidewalk_Cleaning", "0201")  # another type: links across the two types are undone
    got = dict(store.sql(linked).itertuples(index=False))
    assert got == _brute_force_rebounds(store) and moved["cases"] == 1_137
    kinds = store.sql("SELECT coalesce(c.problem_type, e.source_type) AS a, "
                      "coalesce(o.problem_type, f.source_type) AS b "
                      "FROM cases c JOIN cases o ON o.case_id = c.rebound_of "
                      "JOIN events e ON e.event_id = c.event_id JOIN events f ON f.event_id = o.event_id")
    assert len(kinds) and (kinds.a == kinds.b).all()


def test_cases_without_a_type_rebound_by_their_label_on_every_path(tmp_path, monkeypatch, shared):
    """The label rule holds on each path that links rebounds, checked against the brute force by kind on San
    Francisco 311: a few cases linked again (the direct search of a case or two), all of them (the bulk search),
    and a case opened for an event of a label (a user's, through the group commit)."""
    from civicgrid.geo.store import writing
    from civicgrid.sites.cases import create_case, get_case, link_rebounds

    db = tmp_path / "sf.duckdb"
    monkeypatch.setenv("CIVICGRID_TIMEZONE", "America/Los_Angeles")
    import_events(shared / "us_sf311" / "sf311_cases_sample_10000.csv", db=db, mapping={"closed": "Closed"},
                  date_order="mdy", progress=False)
    store = Store(db)
    want = _brute_force_rebounds(store)
    untyped = set(store.sql("SELECT case_id FROM cases WHERE problem_type IS NULL")["case_id"])
    by_label = sorted(c for c in want if c in untyped)
    assert len(by_label) >= 50
    linked = "SELECT case_id, rebound_of FROM cases WHERE rebound_of IS NOT NULL"

    def unlink(ids) -> None:
        with writing(db) as con:
            con.execute("UPDATE cases SET rebound_of = NULL WHERE list_contains(?, case_id)", [list(ids)])
            con.execute("UPDATE events SET rebound_of = NULL WHERE list_contains(?, event_id)", [list(ids)])

    few = by_label[:40]
    unlink(few)
    with writing(db) as con:
        assert link_rebounds(con, case_ids=few) == len(few)  # the direct search (up to FEW_CASES)
    assert dict(store.sql(linked).itertuples(index=False)) == want
    unlink(list(want))
    with writing(db) as con:
        assert link_rebounds(con) == len(want)  # the bulk search
    assert dict(store.sql(linked).itertuples(index=False)) == want
    case = by_label[-1]
    with writing(db) as con:  # the event keeps no case: one is opened for it as a user would
        con.execute("DELETE FROM case_log WHERE case_id = ?", [case])
        con.execute("DELETE FROM cases WHERE case_id = ?", [case])
    opened = create_case(db, actor="tester", event_id=case)
    assert opened["rebound_of"] == get_case(store, case)["rebound_of"] == want[case]


def test_a_map_file_links_the_rebounds_of_all_its_labels_at_once(tmp_path, monkeypatch, shared):
    """Two of San Francisco's labels mapped to one type by one file: the rebounds are linked once all of the
    file's cases have their type, so each case repeats the latest closure of either label (brute force)."""
    sf = shared / "us_sf311"
    db = tmp_path / "sf.duckdb"
    monkeypatch.setenv("CIVICGRID_TIMEZONE", "America/Los_Angeles")
    import_events(sf / "sf311_cases_sample_10000.csv", db=db, mapping={"closed": "Closed"}, date_order="mdy",
                  progress=False)
    f = tmp_path / "map.csv"
    f.write_text("source,label,code\n,Sidewalk_Cleaning,0103\n,General Cleaning,0103\n,Bulky Items,0103\n",
                 encoding="utf-8")
    done = import_map(db, f)
    store = Store(db)
    want = _brute_force_rebounds(store)
    assert dict(store.sql("SELECT case_id, rebound_of FROM cases WHERE rebound_of IS NOT NULL")
                .itertuples(index=False)) == want
    labels = store.sql("SELECT event_id, source_type FROM events").set_index("event_id")["source_type"]
    per_label = pd.Series([labels[c] for c in want]).value_counts()
    assert {d["label"]: d["rebounds"] for d in done} == {d["label"]: int(per_label.get(d["label"], 0)) for d in done}
    assert sum(d["rebounds"] for d in done) > 20


def test_a_case_without_a_type_is_listed_and_shown_by_the_citys_label(small_city, tmp_path):
    """Cases whose events carry only the city's own label were listed and shown with type "-" (nearly every San
    Francisco case): the list, one case over the API and the CLI now give that label (``source_type``); a typed
    case keeps its type (and no label lookup). ``get_case`` stays the case as the writes answer it."""
    from civicgrid.api.app import create_app
    from civicgrid.sites.cases import get_case, list_cases
    from fastapi.testclient import TestClient

    import_events(_write(tmp_path, HOTLINE), db=small_city, progress=False)
    store = Store(small_city)
    ev = store.sql("SELECT event_id, external_id, problem_type, source_type FROM events").set_index("event_id")
    page = list_cases(store, limit=100).set_index("event_id")
    assert len(page) == len(ev)
    for event_id, row in ev.iterrows():
        want = row["source_type"] if pd.isna(row["problem_type"]) and pd.notna(row["source_type"]) else None
        got = page.loc[event_id, "source_type"]
        assert (pd.isna(got) and want is None) or got == want, row["external_id"]
        assert "source_type" not in get_case(store, int(page.loc[event_id, "case_id"]))  # as the writes answer
    from civicgrid.geo.users import add_user

    noise = int(ev.index[ev["external_id"] == "G3"][0])
    _, token = add_user(small_city, "viewer1", role="viewer")
    client = TestClient(create_app(small_city), headers={"Authorization": f"Bearer {token}"})
    cases = client.get("/api/cases", params={"limit": 100}).json()["cases"]
    by_event = {c["event_id"]: c["source_type"] for c in cases}
    assert by_event[noise] == "噪音扰民" and by_event[int(ev.index[ev["external_id"] == "G1"][0])] is None
    assert client.get(f"/api/cases/{int(page.loc[noise, 'case_id'])}").json()["source_type"] == "噪音扰民"
    out = CliRunner().invoke(main, ["cases", "list", "--db", str(small_city), "--limit", "100"]).output
    line = next(x for x in out.splitlines() if x.split()[0] == str(int(page.loc[noise, "case_id"])))
    assert " 噪音扰民 " in line
    shown = CliRunner().invoke(main, ["cases", "show", str(int(page.loc[noise, "case_id"])), "--db", str(small_city)])
    assert "type 噪音扰民" in shown.output


def test_suggestions_leave_out_types_of_another_meaning(small_city):
    """New York 311's labels with no type of their meaning in the taxonomy (noise, heating) were offered types
    such as "Piled materials" and "Dog waste" by a character similarity of 0.41-0.52. Suggestions now need 0.6 for
    a label in Latin letters (or a shared word) and 0.4 for one in Chinese characters, else none are offered."""
    from civicgrid.sites.taxonomy import suggest_types

    choices = Store(small_city).sql("SELECT code, name_zh, name_en FROM problem_types")
    assert suggest_types("Noise - Residential", choices) == []
    assert suggest_types("HEAT/HOT WATER", choices) == []
    assert suggest_types("Illegal Parking", choices)[0] == "0301 机动车乱停放 (Illegal car parking)"
    assert suggest_types("Streetlights", choices)[0] == "0405 路灯不亮 (Street light out)"
    assert "0101 暴露垃圾 (Exposed garbage)" in suggest_types("垃圾乱堆", choices)
    assert suggest_types("噪音扰民", choices) == []
