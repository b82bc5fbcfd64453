"""Real inspection records in (issue 16): scores with a pass threshold, severities, critical flags, visit kinds,
the city's own site categories, sites with only an address; and a slice of the NYC dev set end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.store import Store, writing
from civicgrid.sites.frame import import_sites
from civicgrid.sites.inspections import import_inspections, parse_fail_when
from click.testing import CliRunner

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "dev_inspections"


def _sites(db, tmp_path) -> None:
    f = tmp_path / "sites.csv"
    f.write_text("id,name,category,address,lng,lat\n"
                 "A,Joe's,Restaurant,1 Main St,112.905,28.205\n"
                 "B,Pie Place,Pizza,2 Main St,112.915,28.205\n"
                 "C,Crumbs,Bakery,3 Main St,112.905,28.215\n"
                 "D,No Coordinates Deli,Pizza,4 Main St,,\n"
                 "E,Nowhere,Pizza,,,\n", encoding="utf-8")
    rep = import_sites(f, db=db, mapping={"id": "id"}, progress=False)
    assert (rep.loaded, rep.rejected) == (4, 1)
    assert rep.rejects == [{"row": 6, "field": "lat/lng", "reason": "missing coordinates"}]
    assert any("2 category labels are not among the known categories" in w for w in rep.warnings)


def test_sites_keep_the_citys_own_categories_and_address_only_sites(small_city, tmp_path):
    _sites(small_city, tmp_path)
    s = Store(small_city).sql("SELECT external_id, category_code, lng, h3 FROM sites ORDER BY external_id")
    assert s["category_code"].tolist() == ["14", "Pizza", "Bakery", "Pizza"]  # Restaurant is the known 14
    assert pd.isna(s["lng"].iloc[3]) and pd.isna(s["h3"].iloc[3])
    own = Store(small_city).sql("SELECT code, name_en FROM site_categories WHERE code IN ('Pizza', 'Bakery') "
                                "ORDER BY code")
    assert own.values.tolist() == [["Bakery", "Bakery"], ["Pizza", "Pizza"]]
    # or every unknown label mapped onto one known category, by a part of its name
    f = tmp_path / "more.csv"
    f.write_text("id,name,category,lng,lat\nF,Noodles,Ramen,112.906,28.206\nG,Tacos,Tex-Mex,112.907,28.207\n",
                 encoding="utf-8")
    rep = import_sites(f, db=small_city, mapping={"id": "id"}, other_category="餐饮", progress=False)
    assert rep.loaded == 2 and any("are in category 14" in w for w in rep.warnings)
    got = Store(small_city).sql("SELECT category_code FROM sites WHERE external_id IN ('F', 'G')")
    assert got["category_code"].tolist() == ["14", "14"]
    with pytest.raises(InvalidParameterError, match="other_category"):
        import_sites(f, db=small_city, mapping={"id": "id"}, other_category="no such thing", progress=False)


def test_scores_severities_critical_flags_and_kinds(small_city, tmp_path):
    _sites(small_city, tmp_path)
    f = tmp_path / "visits.csv"
    f.write_text("id,site,date,score,crit,type,sev,status\n"
                 "1,A,2024-03-01,10,False,Cycle Inspection / Initial Inspection,Minor,Pass\n"
                 "2,A,2024-03-20,14,True,Cycle Inspection / Re-inspection,C - Crucial,Conditional Pass\n"
                 "3,B,2024-03-02,,2,Smoke-Free Air Act,Significant,Pass\n"
                 "4,D,2024-03-03,30,C - Crucial,Cycle Inspection / Initial Inspection,S - Significant,Closed\n"
                 "5,C,2024-03-04,abc,0,,M - Minor,Pass\n"
                 "6,C,2024-03-05,3,maybe,,Minor,Pass\n", encoding="utf-8")
    common = {"id": "id", "site": "site", "time": "date", "critical": "crit", "kind": "type"}
    rep = import_inspections(f, db=small_city, mapping={**common, "result": "score"}, fail_when="score>=14",
                             progress=False)
    why = {r["row"]: r for r in rep.rejects}
    assert rep.loaded == 4 and set(why) == {6, 7}
    assert why[6]["field"] == "score" and "cannot compare 'abc'" in why[6]["reason"]
    assert why[7]["field"] == "critical" and "'maybe'" in why[7]["reason"]
    assert "1 visits have no score and are kept without a result" in rep.warnings
    got = Store(small_city).sql("SELECT external_id, conforming, score, critical, kind, lng FROM inspections "
                                "ORDER BY external_id")
    assert got["conforming"].astype(object).where(got["conforming"].notna(), None).tolist() == [
        True, False, None, False]
    assert got["score"].fillna(-1).tolist() == [10, 14, -1, 30]
    assert got["critical"].tolist() == [False, True, True, True]  # a count > 0 and the top severity are critical
    assert got["kind"].iloc[1] == "Cycle Inspection / Re-inspection"
    assert pd.isna(got["lng"].iloc[3])  # at the site without coordinates

    # a severity alone is refused (not guessed); with a rule it is read by its level
    f2 = tmp_path / "sev.csv"
    f2.write_text("id,site,date,sev\n11,A,2024-04-01,Minor\n12,B,2024-04-01,C - Crucial\n"
                  "13,C,2024-04-01,S - Significant\n14,C,2024-04-02,严重\n", encoding="utf-8")
    m = {"id": "id", "site": "site", "time": "date", "result": "sev"}
    rep = import_inspections(f2, db=small_city, mapping=m, progress=False)
    assert rep.loaded == 0 and all("is a severity" in r["reason"] for r in rep.rejects)
    rep = import_inspections(f2, db=small_city, mapping=m, fail_when="result>=significant", progress=False)
    assert rep.loaded == 4
    sev = Store(small_city).sql("SELECT conforming FROM inspections WHERE external_id IN ('11','12','13','14') "
                                "ORDER BY external_id")
    assert sev["conforming"].tolist() == [True, False, False, False]

    # words of another column: status=Conditional Pass|Closed
    f3 = tmp_path / "status.csv"
    f3.write_text("id,site,date,status\n21,A,2024-05-01,Pass\n22,B,2024-05-01,conditional pass\n"
                  "23,C,2024-05-01,Closed\n", encoding="utf-8")
    rep = import_inspections(f3, db=small_city, mapping={"id": "id", "site": "site", "time": "date"},
                             fail_when="status=Conditional Pass|Closed", progress=False)
    st = Store(small_city).sql("SELECT conforming FROM inspections WHERE external_id IN ('21','22','23') "
                               "ORDER BY external_id")
    assert rep.loaded == 3 and st["conforming"].tolist() == [True, False, False]


def test_fail_when_rules():
    assert str(parse_fail_when("score >= 14")) == "score>=14"
    assert parse_fail_when(" ") is None
    with pytest.raises(InvalidParameterError, match="SUBJECT OP VALUE"):
        parse_fail_when("score")
    rule = parse_fail_when("result>bad")
    with pytest.raises(InvalidParameterError, match="neither a number nor a severity"):
        rule.failed(np.array(["1"], dtype=object))


@pytest.fixture(scope="module")
def nyc_slice(tmp_path_factory):
    """600 NYC restaurants (every 40th) and all their inspections, loaded with the README's commands."""
    from civicgrid.api.cli import main

    if not (DEV / "nyc" / "inspections.csv").exists():
        pytest.skip("the NYC dev set is not here")
    tmp = tmp_path_factory.mktemp("nyc")
    est = pd.read_csv(DEV / "nyc" / "establishments.csv", dtype=str)
    est = est[est["dba"].notna()].iloc[::40].head(600).copy()
    est.loc[est.index[:3], ["zip_lat", "zip_lng"]] = None  # three without coordinates: kept by their address
    ins = pd.read_csv(DEV / "nyc" / "inspections.csv", dtype=str)
    ins = ins[ins["camis"].isin(est["camis"])]
    est.to_csv(tmp / "establishments.csv", index=False)
    ins.to_csv(tmp / "inspections.csv", index=False)
    db = tmp / "nyc.duckdb"
    runner = CliRunner()
    res = runner.invoke(main, ["import", "sites", str(tmp / "establishments.csv"), "--id", "camis", "--name", "dba",
                               "--category", "cuisine_description", "--lat", "zip_lat", "--lng", "zip_lng", "--map",
                               "address=street", "--db", str(db), "--quiet"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["import", "inspections", str(tmp / "inspections.csv"), "--id", "inspection_id",
                               "--site", "camis", "--time", "inspection_date", "--result", "score", "--fail-when",
                               "score>=14", "--map", "critical=any_critical", "--map", "kind=inspection_type",
                               "--tz", "America/New_York", "--db", str(db), "--quiet"])
    assert res.exit_code == 0, res.output
    return db, est, ins


def test_nyc_slice_loads_as_the_files_say(nyc_slice):
    db, est, ins = nyc_slice
    store = Store(db)
    counts = store.sql("SELECT count(*) AS n, count(*) FILTER (WHERE NOT conforming) AS failed, "
                       "count(*) FILTER (WHERE conforming IS NULL) AS unlabelled, "
                       "count(*) FILTER (WHERE critical) AS critical FROM inspections").iloc[0]
    score = pd.to_numeric(ins["score"])
    assert counts["n"] == len(ins)
    assert counts["failed"] == int((score >= 14).sum())
    assert counts["unlabelled"] == int(score.isna().sum())
    assert counts["critical"] == int((ins["any_critical"] == "True").sum())
    sites = store.sql("SELECT count(*) AS n, count(*) FILTER (WHERE lng IS NULL OR isnan(lng)) AS unplaced "
                      "FROM sites").iloc[0]
    assert (sites["n"], sites["unplaced"]) == (len(est), 3)


def test_nyc_slice_scores_without_leakage(nyc_slice, tmp_path):
    """Scores on real records: every site (those without coordinates too), calibrated, reasons of positive
    contributions only, and nothing after as_of moves them (future visits with scores, critical findings and
    follow-up kinds added)."""
    from civicgrid.geo.store_files import copy_store
    from civicgrid.sites.risk import site_risk

    db, est, _ = nyc_slice
    before = site_risk(Store(db), as_of="2015-01-01", model="gbm", lang="en")
    assert len(before) == len(est) and before["risk"].between(0, 1).all()
    assert before.attrs["model"]["kind"] == "gbm" and before.attrs["model"]["n_train"] > 300
    assert before["lng"].isna().sum() == 3  # scored from their record and category
    feats = before.attrs["model"]["features"]
    contrib = before[[f"{c}_contrib" for c in feats]].to_numpy()
    np.testing.assert_allclose(before["base"] + contrib.sum(axis=1),
                               np.log(before["risk"] / (1 - before["risk"])), atol=1e-9)
    # failures in the past raise the risk: sites whose last inspection failed rank higher on average
    last = before["last_failed"]
    assert before.loc[last == 1, "risk"].mean() > before.loc[last == 0, "risk"].mean()
    path = tmp_path / "future.duckdb"
    copy_store(db, path)
    with writing(path) as con:
        con.execute("""INSERT INTO inspections (inspection_id, site_id, time, conforming, score, critical, kind)
                       SELECT 9000000 + inspection_id, site_id, time + INTERVAL 800 DAY, FALSE, 99, TRUE,
                              'Cycle Inspection / Re-inspection'
                       FROM inspections WHERE time + INTERVAL 800 DAY >= TIMESTAMP '2015-01-01'""")
    after = site_risk(Store(path), as_of="2015-01-01", model="gbm", lang="en")
    pd.testing.assert_frame_equal(pd.DataFrame(before.drop(columns="geometry")),
                                  pd.DataFrame(after.drop(columns="geometry")))
