"""The assessment simulator against exact expectations, brute-force enumeration, and the demo city."""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from civicgrid.geo.errors import InvalidParameterError, NotFoundError
from civicgrid.geo.store import Store
from civicgrid.sites import simulator as sim
from civicgrid.sites.simulator import visits as sim_visits

# --- brute force on tiny frames ------------------------------------------------------------------------------


def tiny_frame() -> pd.DataFrame:
    """Two categories: A with 5 sites (k=3), B with 3 sites (k=2), plus C with 2 sites and k=4 (drawn in full)."""
    return pd.DataFrame({
        "site_id": range(1, 11),
        "category_code": ["A"] * 5 + ["B"] * 3 + ["C"] * 2,
        "p": [0.1, 0.5, 0.9, 0.3, 0.0, 0.7, 0.2, 0.45, 0.6, 0.05],
    })


TINY_K = {"A": 3, "B": 2, "C": 4}


def brute_category(p: np.ndarray, k: int) -> dict[int, float]:
    """P(conforming count = c) by enumerating every k-subset and every outcome of the drawn sites."""
    n = len(p)
    k = min(k, n)
    subsets = list(itertools.combinations(range(n), k))
    dist: dict[int, float] = {}
    for sub in subsets:
        for outcome in itertools.product((0, 1), repeat=k):  # 1 = non-conforming
            prob = 1.0 / len(subsets)
            for site, bad in zip(sub, outcome, strict=True):
                prob *= p[site] if bad else 1 - p[site]
            conf = k - sum(outcome)
            dist[conf] = dist.get(conf, 0.0) + prob
    return dist


def brute_overall(frame: pd.DataFrame, k: dict, aggregate: str) -> dict[float, float]:
    """Distribution of the overall rate: the product of the categories' enumerated distributions."""
    parts = []
    for code, group in frame.groupby("category_code"):
        kk = min(k[code], len(group))
        parts.append((kk, brute_category(group["p"].to_numpy(), kk)))
    total_k = sum(kk for kk, _ in parts)
    out: dict[float, float] = {}
    for combo in itertools.product(*[list(d.items()) for _, d in parts]):
        prob = float(np.prod([pr for _, pr in combo]))
        if aggregate == "pooled":
            rate = sum(c for c, _ in combo) / total_k
        else:
            rate = float(np.mean([c / kk for (c, _), (kk, _) in zip(combo, parts, strict=True)]))
        key = round(rate, 12)
        out[key] = out.get(key, 0.0) + prob
    return out


@pytest.mark.parametrize("threshold", [0.5, 0.6, 2 / 3, 0.9, 1.0])
def test_exact_matches_enumeration_per_category(threshold):
    frame = tiny_frame()
    exact = sim.exact_assessment(frame, TINY_K, threshold=threshold)["categories"].set_index("category_code")
    for code, group in frame.groupby("category_code"):
        kk = min(TINY_K[code], len(group))
        dist = brute_category(group["p"].to_numpy(), kk)
        mean = sum(c / kk * pr for c, pr in dist.items())
        below = sum(pr for c, pr in dist.items() if c / kk < threshold - 1e-12)
        assert exact.loc[code, "k"] == kk
        assert exact.loc[code, "expected"] == pytest.approx(mean, abs=1e-12)
        assert exact.loc[code, "expected"] == pytest.approx(1 - group["p"].mean(), abs=1e-12)
        assert exact.loc[code, "p_below"] == pytest.approx(below, abs=1e-12)


@pytest.mark.parametrize("aggregate", ["pooled", "mean"])
@pytest.mark.parametrize("threshold", [0.5, 0.6, 0.75, 0.9])
def test_exact_overall_matches_enumeration(aggregate, threshold):
    frame = tiny_frame()
    exact = sim.exact_assessment(frame, TINY_K, threshold=threshold, aggregate=aggregate)["overall"]
    dist = brute_overall(frame, TINY_K, aggregate)
    assert sum(dist.values()) == pytest.approx(1.0)
    assert exact["expected"] == pytest.approx(sum(r * pr for r, pr in dist.items()), abs=1e-12)
    assert exact["p_below"] == pytest.approx(sum(pr for r, pr in dist.items() if r < threshold - 1e-12), abs=1e-12)


def test_overall_aggregation_rules():
    frame = tiny_frame()
    means = frame.groupby("category_code")["p"].mean()
    ks = pd.Series({"A": 3, "B": 2, "C": 2})  # C has 2 sites: k=4 draws both
    pooled = sim.exact_assessment(frame, TINY_K, aggregate="pooled")["overall"]["expected"]
    assert pooled == pytest.approx(((1 - means) * ks).sum() / ks.sum())
    mean = sim.exact_assessment(frame, TINY_K, aggregate="mean")["overall"]["expected"]
    assert mean == pytest.approx((1 - means).mean())


def test_simulation_agrees_with_exact():
    frame = tiny_frame()
    runs = 40_000
    res = sim.simulate_assessment(frame, TINY_K, runs=runs, threshold=0.7, seed=3)
    cats = res["categories"].set_index("category_code")
    for code, row in cats.iterrows():
        se_mean = 0.5 / np.sqrt(runs)  # a rate's sd is at most 0.5
        assert abs(row["simulated"] - row["expected"]) < 5 * se_mean, code
        se_p = np.sqrt(max(row["p_below_exact"] * (1 - row["p_below_exact"]), 1e-4) / runs)
        assert abs(row["p_below"] - row["p_below_exact"]) < 5 * se_p, code
        assert row["low"] <= row["expected"] <= row["high"]
    o = res["overall"]
    assert abs(o["simulated"] - o["expected"]) < 5 * 0.5 / np.sqrt(runs)
    assert abs(o["p_below"] - o["p_below_exact"]) < 5 * np.sqrt(o["p_below_exact"] * (1 - o["p_below_exact"]) / runs)
    # the interval is a central 90 % of the simulated rates
    assert o["low"] < o["expected"] < o["high"]


@pytest.mark.parametrize("n", [8, 40])  # 8: k smallest of uniform keys; 40: Floyd's algorithm (k² <= n)
def test_simulated_draws_are_uniform_subsets_without_replacement(n):
    """With p = 1 for one site only, the share of runs failing once is the chance that site is drawn, k/n."""
    frame = pd.DataFrame({"category_code": ["A"] * n, "p": [0.0] * (n - 1) + [1.0]})
    s = sim.simulate_visits(frame, {"A": 3}, runs=50_000, seed=1)
    fails = 3 - s.conforming[:, 0]
    assert set(np.unique(fails)) <= {0, 1}  # never drawn twice
    assert fails.mean() == pytest.approx(3 / n, abs=4 * np.sqrt(3 / n / 50_000))


def test_floyd_subsets_are_uniform():
    rng = np.random.default_rng(5)
    n, k, runs = 12, 3, 60_000
    sub = sim_visits._floyd_sample(rng, n, k, runs)
    assert ((sub >= 0) & (sub < n)).all()
    assert (np.sort(sub, axis=1)[:, 1:] != np.sort(sub, axis=1)[:, :-1]).all()  # distinct within a run
    counts = np.bincount(sub.ravel(), minlength=n) / runs
    assert np.abs(counts - k / n).max() < 4 * np.sqrt(k / n / runs)
    # every one of the C(12, 3) = 220 subsets about equally often (chi-square, 219 dof: 99.9 % bound ~ 300)
    keys = np.sort(sub, axis=1) @ np.array([n * n, n, 1])
    freq = np.unique(keys, return_counts=True)[1]
    assert len(freq) == 220
    expected = runs / 220
    assert ((freq - expected) ** 2 / expected).sum() < 300


def test_category_smaller_than_k_is_drawn_in_full_and_k0_is_left_out():
    frame = tiny_frame()
    exact = sim.exact_assessment(frame, {"A": 0, "B": 2, "C": 4})
    assert list(exact["categories"]["category_code"]) == ["B", "C"]
    c = exact["categories"].set_index("category_code").loc["C"]
    assert c["k"] == 2 and c["n_sites"] == 2
    s = sim.simulate_visits(frame, {"C": 4}, runs=20_000, seed=0)
    # both sites drawn every time: P(2 conforming) = 0.4 * 0.95
    assert (s.conforming[:, 0] == 2).mean() == pytest.approx(0.4 * 0.95, abs=0.015)


def overall_expected_after(frame: pd.DataFrame, k: dict, fixed: tuple[int, ...], aggregate: str) -> float:
    changed = frame.copy()
    changed.loc[list(fixed), "p"] = 0.0
    return sim.exact_assessment(changed, k, aggregate=aggregate)["overall"]["expected"]


@pytest.mark.parametrize("aggregate", ["pooled", "mean"])
@pytest.mark.parametrize("n_fix", [1, 2, 3])
def test_fix_first_is_the_brute_force_best(aggregate, n_fix):
    frame = tiny_frame()
    base = sim.exact_assessment(frame, TINY_K, aggregate=aggregate)["overall"]["expected"]
    best = max(overall_expected_after(frame, TINY_K, combo, aggregate)
               for combo in itertools.combinations(range(len(frame)), n_fix))
    top = sim.fix_first(frame, TINY_K, n=n_fix, aggregate=aggregate)
    assert len(top) == n_fix
    chosen = tuple(frame.index[frame["site_id"].isin(top["site_id"])])
    after = overall_expected_after(frame, TINY_K, chosen, aggregate)
    assert after == pytest.approx(best, abs=1e-12)
    assert top["cumulative_gain"].iloc[-1] == pytest.approx(best - base, abs=1e-12)
    # each single gain is exact too, in the overall and in the category rate
    for row in top.itertuples():
        idx = frame.index[frame["site_id"] == row.site_id][0]
        assert row.gain == pytest.approx(overall_expected_after(frame, TINY_K, (idx,), aggregate) - base, abs=1e-12)
        cat = frame.loc[idx, "category_code"]
        assert row.gain_category == pytest.approx(frame.loc[idx, "p"] / (frame["category_code"] == cat).sum())
    assert list(top["gain"]) == sorted(top["gain"], reverse=True)


def test_fix_first_skips_sites_with_nothing_to_gain():
    frame = tiny_frame()
    top = sim.fix_first(frame, TINY_K, n=50)
    assert len(top) == (frame["p"] > 0).sum()


def test_bad_inputs_are_refused_with_clear_errors():
    frame = tiny_frame()
    with pytest.raises(InvalidParameterError, match="threshold"):
        sim.exact_assessment(frame, TINY_K, threshold=1.5)
    with pytest.raises(InvalidParameterError, match="aggregate"):
        sim.exact_assessment(frame, TINY_K, aggregate="median")
    bad = frame.copy()
    bad.loc[3, "p"] = 1.2
    with pytest.raises(InvalidParameterError, match="row 3"):
        sim.simulate_visits(bad, TINY_K)
    with pytest.raises(InvalidParameterError, match="nothing to assess"):
        sim.exact_assessment(frame, {"Z": 3})
    with pytest.raises(InvalidParameterError, match="CATEGORY=K"):
        sim.parse_k_options(["03:5"])
    with pytest.raises(InvalidParameterError, match="whole number"):
        sim.parse_k_options(["03=-1"])
    with pytest.raises(NotFoundError, match="公园"):
        sim.assessment_sizes(overrides={"公圆": 2})


def test_assessment_sizes_table_and_overrides():
    k = sim.assessment_sizes(overrides={"公园": 7, "bank branch": 1, "5": 9})
    table = pd.read_csv(sim.ASSESSMENT_CSV, dtype=str, comment="#")
    assert len(k) == 38 and len(table) == 38
    assert k["11"] == 7 and k["03"] == 1 and k["05"] == 9
    assert k["28"] == int(table.set_index("category_code").loc["28", "k"])


# --- the demo city ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(demo_db) -> Store:
    return Store(demo_db)


def test_site_state_matches_an_independent_count(store):
    as_of = datetime(2024, 9, 30, 23, 59, 59)
    state = sim.site_state(store, as_of=as_of).set_index("site_id")
    sites = store.sql("SELECT site_id, active, h3 FROM sites")
    ev = store.sql("SELECT site_id, source, time, closed_at, deadline, h3 FROM events")
    assert len(state) == int(sites["active"].fillna(True).sum())
    at = ev[(ev["time"] <= as_of) & ev["site_id"].notna()]
    is_open = at["closed_at"].isna() | (at["closed_at"] > as_of)
    open_n = at[is_open].groupby("site_id").size()
    overdue_n = at[is_open & (at["deadline"] < as_of)].groupby("site_id").size()
    since = as_of - timedelta(days=sim.WINDOW_DAYS)
    hits_n = at[(at["source"] == "inspection") & (at["time"] > since)].groupby("site_id").size()
    for col, expected in (("open", open_n), ("overdue", overdue_n), ("hits", hits_n)):
        got = state[col]
        want = expected.reindex(got.index).fillna(0).astype(int)
        assert (got == want).all(), col
    assert state["open"].sum() > 0 and state["overdue"].sum() > 0
    # complaints: same H3 res-9 parent, computed with the h3 library
    import h3

    comp = ev[(ev["source"] == "complaint") & (ev["time"] > since) & (ev["time"] <= as_of) & ev["h3"].notna()]
    parents = pd.Series([h3.cell_to_parent(h3.int_to_str(int(c)), 9) for c in comp["h3"]]).value_counts()
    sample = sites.set_index("site_id").loc[state.index[:200], "h3"]
    want = [int(parents.get(h3.cell_to_parent(h3.int_to_str(int(c)), 9), 0)) for c in sample]
    assert list(state.loc[sample.index, "complaints"]) == want


def test_rule_probabilities_are_bounded_and_monotone(store):
    state = sim.site_state(store)
    p = sim.nonconformity_probability(state)
    assert ((p > 0) & (p < 1)).all()
    for col in ("open", "overdue", "hits", "complaints"):
        more = state.copy()
        more[col] = more[col] + 1
        q = sim.nonconformity_probability(more)
        capped = (state[col] >= 3).to_numpy() if col in ("open", "overdue") else np.zeros(len(state), bool)
        assert (q[~capped] > p[~capped]).all(), col
        assert np.allclose(q[capped], p[capped]), col  # open / overdue count up to 3
    # a worse inspection record raises p
    worse = state.copy()
    worse["nonconforming"] = np.minimum(worse["nonconforming"] + 1, worse["inspections"] + 1)
    worse["inspections"] = np.maximum(worse["inspections"], worse["nonconforming"])
    assert (sim.nonconformity_probability(worse) >= p - 1e-12).all()
    # sites with overdue problems look worse than the rest
    assert p[state["overdue"] > 0].mean() > p[state["open"] == 0].mean()


def test_assess_on_the_demo_city(store):
    res = sim.assess(store, as_of="2024-06-30", runs=4000, fix=5, k={"05": 8})
    assert res["as_of"].startswith("2024-06-30 23:59:59")
    cats = pd.DataFrame(res["categories"]).set_index("category_code")
    assert cats.loc["05", "k"] == 8 and cats.loc["08", "k"] == min(3, cats.loc["08", "n_sites"])
    probs = sim.site_probabilities(store, as_of="2024-06-30")
    assert cats.loc["05", "expected"] == pytest.approx(1 - probs.loc[probs["category_code"] == "05", "p"].mean())
    assert cats["n_sites"].sum() == len(probs) == res["overall"]["n_sites"]
    assert ((cats["p_below"] - cats["p_below_exact"]).abs() < 0.05).all()
    fix = pd.DataFrame(res["fix"])
    assert list(fix["rank"]) == [1, 2, 3, 4, 5]
    assert res["overall_after_fix"]["expected"] == pytest.approx(res["overall"]["expected"] + fix["gain"].sum())
    # the best 5 by brute reasoning: no other site has a larger gain than the 5th
    gains = sim.fix_gains(probs, sim.assessment_sizes(store, overrides={"05": 8}))
    assert gains["gain"].nlargest(5).to_numpy() == pytest.approx(fix["gain"].to_numpy())
    json.dumps(res, allow_nan=False)


def test_cli_simulate(demo_db, tmp_path):
    from civicgrid.api.cli import main
    from click.testing import CliRunner

    out = tmp_path / "sim.json"
    result = CliRunner().invoke(main, ["simulate", "--db", str(demo_db), "--runs", "2000", "--fix", "3",
                                       "--k", "公园=2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "overall" in result.output and "fix first" in result.output
    data = json.loads(out.read_text(encoding="utf-8"))
    assert len(data["fix"]) == 3
    assert {c["category_code"]: c["k"] for c in data["categories"]}["11"] == 2
    bad = CliRunner().invoke(main, ["simulate", "--db", str(demo_db), "--k", "公圆=2"])
    assert bad.exit_code == 2 and "公园" in bad.output
    rule = CliRunner().invoke(main, ["simulate", "--db", str(demo_db), "--runs", "500", "--fix", "1", "--method",
                                     "rule", "--as-of", "2024-06-30", "--json", str(out)])
    assert rule.exit_code == 0, rule.output
    assert "probabilities: rule" in rule.output
    data = json.loads(out.read_text(encoding="utf-8"))
    probs = sim.site_probabilities(Store(demo_db), as_of="2024-06-30", method="rule")
    assert data["method"] == "rule" and data["fix"][0]["p"] == pytest.approx(
        probs.set_index("site_id").loc[data["fix"][0]["site_id"], "p"])


def test_api_simulator(demo_db):
    from civicgrid.api.app import create_app
    from fastapi.testclient import TestClient

    client = TestClient(create_app(demo_db))
    r = client.get("/api/simulator", params={"runs": 2000, "fix": 4, "threshold": 0.8, "k": "03=5,公园=2",
                                             "lang": "en"})
    assert r.status_code == 200, r.text
    body = r.json()
    cats = {c["category_code"]: c for c in body["categories"]}
    assert cats["03"]["k"] == 5 and cats["11"]["name"] == "Park"
    assert len(body["fix"]) == 4 and body["threshold"] == 0.8
    assert client.get("/api/simulator", params={"k": "公圆=2"}).status_code == 404
    assert client.get("/api/simulator", params={"as_of": "yesterday-ish"}).status_code == 422
    assert client.get("/api/simulator", params={"aggregate": "max"}).status_code == 422
    assert client.get("/api/simulator", params={"method": "magic"}).status_code == 422
    r = client.get("/api/simulator", params={"runs": 200, "method": "rule", "as_of": "2024-06-30"})
    assert r.status_code == 200 and r.json()["method"] == "rule"  # a read: no token needed


def test_probabilities_from_the_risk_model(store):
    risk = pytest.importorskip("civicgrid.sites.risk")
    as_of = datetime(2025, 6, 30, 23, 59, 59)
    probs = sim.site_probabilities(store, as_of=as_of, method="risk")
    assert (probs["method"] == "risk").all()
    scored = risk.site_risk(store, as_of=as_of).set_index("site_id")["risk"]
    assert probs.set_index("site_id")["p"].to_numpy() == pytest.approx(scored.reindex(probs["site_id"]).to_numpy())
    rule = sim.site_probabilities(store, as_of=as_of, method="rule")
    assert (rule["method"] == "rule").all()
    # both rank the sites alike
    assert np.corrcoef(rule["p"], probs["p"])[0, 1] > 0.5


def test_cli_names_a_citys_own_category_once(small_city, tmp_path):
    """A category the city's file brought (its label is its code) is printed once ("Bakery"), a known one with
    its code ("14 Restaurant"); it read "Bakery Bakery"."""
    import pandas as pd
    from civicgrid.api.cli import main
    from civicgrid.sites.frame import import_sites
    from click.testing import CliRunner

    sites = pd.DataFrame({"id": [f"S{i}" for i in range(8)], "name": [f"shop {i}" for i in range(8)],
                          "category": ["Bakery"] * 4 + ["餐馆、餐饮店"] * 4,
                          "lng": [112.905 + 0.001 * i for i in range(8)], "lat": [28.205] * 8})
    sites.to_csv(tmp_path / "sites.csv", index=False)
    import_sites(tmp_path / "sites.csv", db=small_city, progress=False)
    result = CliRunner().invoke(main, ["simulate", "--db", str(small_city), "--runs", "200", "--lang", "en"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("category"))
    rows = lines[head + 1:next(i for i, line in enumerate(lines) if line.startswith("overall"))]
    assert len(rows) == 2, result.output
    assert rows[0].startswith("14 Restaurant") and rows[1].startswith("Bakery ") and "Bakery Bakery" not in rows[1]
