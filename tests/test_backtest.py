"""Backtest: the three measures by hand, every ordering on a constructed database, and the demo city."""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta

import numpy as np
import pytest
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.store import Store
from civicgrid.sites.backtest import (
    INSPECTOR_ORDERING,
    ORDERINGS,
    backtest,
    monthly_windows,
    order_measures,
    rolling_backtest,
    summarize,
)
from click.testing import CliRunner

from test_risk import AS_OF, build_tiny


def _days(*d):
    return np.array([np.datetime64(AS_OF + timedelta(days=x), "us") for x in d])


def test_measures_by_hand():
    t = _days(0, 1, 2, 3)
    found = [False, False, True, True]
    # risk puts the two problem-finding inspections first: they take days 0 and 1
    m = order_measures(t, found, [0, 0, 1, 1], start=AS_OF, horizon_days=4, k=2)
    assert m["precision_at_k"] == 1.0
    assert m["first_half_share"] == 1.0  # days 0 and 1 are before day 2
    assert m["mean_days_earlier"] == pytest.approx(((2 - 0) + (3 - 1)) / 2)
    assert list(m["assigned"]) == list(_days(2, 3, 0, 1))
    # the actual order: nothing earlier, neither found inspection (days 2, 3) in the first half (before day 2)
    m = order_measures(t, found, [4, 3, 2, 1], start=AS_OF, horizon_days=4, k=2)
    assert (m["precision_at_k"], m["first_half_share"], m["mean_days_earlier"]) == (0.0, 0.0, 0.0)
    # the reverse order: day 3 moves to day 0, day 2 to day 1: ((3 - 0) + (2 - 1)) / 2 = 2 days earlier
    m = order_measures(t, found, [1, 2, 3, 4], start=AS_OF, horizon_days=4, k=1)
    assert m["precision_at_k"] == 1.0 and m["mean_days_earlier"] == pytest.approx(2.0)
    # ties keep the actual order; uneven times: slots are the sorted actual times
    t2 = _days(0, 0.5, 6, 9)
    m = order_measures(t2, [False, True, False, True], [1, 1, 1, 1], start=AS_OF, horizon_days=10, k=1)
    assert m["mean_days_earlier"] == 0.0 and m["first_half_share"] == 0.5 and m["precision_at_k"] == 0.0
    m = order_measures(t2, [False, True, False, True], [0, 1, 0, 1], start=AS_OF, horizon_days=10, k=3)
    # found ones take 0 and 0.5: (0.5 - 0) + (9 - 0.5) = 9 → 4.5 days; first three: T, T, F
    assert m["mean_days_earlier"] == pytest.approx(4.5) and m["precision_at_k"] == pytest.approx(2 / 3)
    assert m["first_half_share"] == 1.0
    with pytest.raises(InvalidParameterError):
        order_measures(t, found, [1, 2], start=AS_OF, horizon_days=4, k=1)


def test_random_permutations_average_to_the_exact_expectation():
    """The measures of a uniformly random order, by enumerating all 5! orders."""
    t = _days(0, 1, 3, 6, 8)
    found = np.array([True, False, False, True, True])
    perms = list(itertools.permutations(range(5)))
    runs = [order_measures(t, found, -np.array(p, float), start=AS_OF, horizon_days=10, k=2) for p in perms]
    exact = {key: np.mean([r[key] for r in runs]) for key in ("precision_at_k", "first_half_share",
                                                              "mean_days_earlier")}
    assert exact["precision_at_k"] == pytest.approx(3 / 5)
    assert exact["mean_days_earlier"] == pytest.approx(np.mean([0, 6, 8]) - np.mean([0, 1, 3, 6, 8]))
    assert exact["first_half_share"] == pytest.approx(3 / 5)  # 3 of 5 slots lie before day 5


@pytest.fixture(scope="module")
def tiny_bt(tmp_path_factory):
    """Sites 1 (cat 16, past 2/2 found), 2 (cat 14, 1/2), 3 (cat 03, 0/2); in the 4-day window:
    site 3 day 0 (nothing), site 2 day 1 (found), site 1 day 2 (found), site 3 day 3 (nothing)."""
    path = tmp_path_factory.mktemp("bt_tiny") / "bt.duckdb"
    sites = [(1, "16", 0, 0), (2, "14", 400, 0), (3, "03", 0, 3000)]
    inspections = [(1, -60, "甲", 1), (1, -30, "甲", 1), (2, -50, "乙", 1), (2, -20, "乙", 0),
                   (3, -40, "甲", 0), (3, -10, "乙", 0),
                   (3, 0.1, "甲", 0), (2, 1.1, "乙", 1), (1, 2.1, "甲", 1), (3, 3.1, "乙", 0)]
    events = [{"source": "complaint", "day": -10, "dx": 5, "dy": 5},
              {"source": "inspection", "day": 1.1, "site_id": 2}, {"source": "inspection", "day": 2.1, "site_id": 1}]
    build_tiny(path, sites=sites, inspections=inspections, events=events)
    return Store(path)


def test_orderings_on_a_constructed_database(tiny_bt):
    r = backtest(tiny_bt, as_of=AS_OF, horizon_days=4, k=1, n_random=200)
    assert (r["n_inspections"], r["n_found"], r["n_sites"], r["k"]) == (4, 2, 3, 1)
    # historical: site 1 (1.0) → day 0.1, site 2 (0.5) → 1.1, site 3 twice → 2.1, 3.1
    assert r["precision_at_k"]["historical"] == 1.0
    assert r["first_half_share"]["historical"] == 1.0
    assert r["mean_days_earlier"]["historical"] == pytest.approx(((2.1 - 0.1) + (1.1 - 1.1)) / 2)
    # actual order: site 2 at 1.1 in the first half (before day 2), site 1 at 2.1 not
    assert r["first_half_share"]["actual"] == 0.5 and r["mean_days_earlier"]["actual"] == 0.0
    assert r["precision_at_k"]["actual"] == 0.0
    # round-robin over categories 03, 14, 16 (each in actual order) is the actual order here
    assert r["mean_days_earlier"]["round_robin"] == 0.0 and r["first_half_share"]["round_robin"] == 0.5
    # risk (default rule: site 1 and 2 have higher category and own rates than site 3) finds both first
    assert r["model"]["kind"] == "default"
    assert r["precision_at_k"]["risk"] == 1.0 and r["first_half_share"]["risk"] == 1.0
    # random: 200 seeded orders average near the exact expectation (precision 1/2, earlier 0, half 1/2)
    assert r["precision_at_k"]["random"] == pytest.approx(0.5, abs=0.1)
    assert r["mean_days_earlier"]["random"] == pytest.approx(0.0, abs=0.3)
    # the default rule: no gbm / logistic orders to compare; the visits name inspectors, but no model knows them
    assert r["orderings"] == ["risk", "historical", "random", "round_robin", "actual"]
    assert set(r["precision_at_k"]) == set(r["orderings"])
    json.dumps(r)
    with pytest.raises(InvalidParameterError, match="no labelled inspections"):
        backtest(tiny_bt, as_of=AS_OF + timedelta(days=30), horizon_days=4)
    with pytest.raises(InvalidParameterError, match="horizon"):
        backtest(tiny_bt, as_of=AS_OF, horizon_days=0)


@pytest.mark.parametrize("as_of", ["2025-04-01", "2025-09-01"])
def test_risk_beats_random_on_the_demo(demo_db, as_of):
    r = backtest(Store(demo_db), as_of=as_of, horizon_days=28)
    assert r["model"]["kind"] in ("gbm", "learnt") and r["n_inspections"] > 200
    assert r["model"]["choice"].startswith(r["model"]["kind"] + " (the higher held-out AUC")
    assert r["orderings"] == ["risk", INSPECTOR_ORDERING, "gbm", "logistic", "historical", "random", "round_robin",
                              "actual"]
    for key in ("precision_at_k", "first_half_share", "mean_days_earlier"):
        assert r[key]["risk"] > r[key]["random"] + 2 * r["random_sd"][key], key
    assert r["mean_days_earlier"]["risk"] > 1.0
    assert r["auc"]["risk"] > 0.6
    # the risk order beats every baseline: failures found earlier than by the historical, random and
    # round-robin orders, and an AUC at least that of the site's past hit rate alone
    for base in ("historical", "random", "round_robin"):
        assert r["mean_days_earlier"]["risk"] > r["mean_days_earlier"][base], base
    assert r["auc"]["risk"] >= r["auc"]["historical"] - 0.01
    # knowing the assigned inspector (the demo's inspectors differ in detection) orders the visits better still
    assert r["auc"][INSPECTOR_ORDERING] > r["auc"]["risk"]


def test_rolling_windows_and_summary(demo_db):
    assert [f"{w:%Y-%m-%d}" for w in monthly_windows("2025-03-15", "2025-06-01")] == [
        "2025-03-15", "2025-04-01", "2025-05-01"]
    assert [f"{w:%Y-%m-%d}" for w in monthly_windows("2025-03-01", "2025-04-01")] == ["2025-03-01"]
    with pytest.raises(InvalidParameterError, match="must end after"):
        monthly_windows("2025-03-01", "2025-03-01")
    table = rolling_backtest(Store(demo_db), windows=monthly_windows("2025-05-01", "2025-07-01"), horizon_days=14,
                             n_random=5)
    assert sorted(table["window"].dt.strftime("%Y-%m-%d").unique()) == ["2025-05-01", "2025-06-01"]
    s = summarize(table)
    wide = table.pivot(index="window", columns="ordering", values="mean_days_earlier")
    assert s["windows"] == 2
    assert s["risk_beats_historical"] == int((wide["risk"] > wide["historical"]).sum())
    assert s["ratio_days_earlier"] == pytest.approx(wide["risk"].mean() / wide["historical"].mean())
    assert sum(s["chosen"].values()) == 2


def test_cli_backtest(demo_db, tmp_path):
    from civicgrid.api.cli import main

    out = tmp_path / "bt.json"
    res = CliRunner().invoke(main, ["backtest", "--db", str(demo_db), "--as-of", "2025-06-01", "--horizon", "21",
                                    "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text(encoding="utf-8"))
    for key in ("precision_at_k", "first_half_share", "mean_days_earlier"):
        assert set(data[key]) == {*ORDERINGS, INSPECTOR_ORDERING}
    assert "round_robin" in res.output and data["as_of"].startswith("2025-06-01")
    assert datetime.fromisoformat(data["end"]) == datetime(2025, 6, 22)
    assert "risk model: " + data["model"]["choice"] in res.output
    res = CliRunner().invoke(main, ["backtest", "--db", str(demo_db), "--as-of", "2025-05-01", "--until", "2025-07-01",
                                    "--rolling", "--horizon", "14"])
    assert res.exit_code == 0, res.output
    assert "2025-05-01" in res.output and "2025-06-01" in res.output and "risk earlier than historical in" in res.output
    res = CliRunner().invoke(main, ["backtest", "--db", str(demo_db), "--as-of", "2025-05-01", "--rolling"])
    assert res.exit_code == 2 and "--until" in res.output
