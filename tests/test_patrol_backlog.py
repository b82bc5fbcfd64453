"""Must-visits as a backlog over working days: today takes what fits, the rest is ranked by urgency and planned on
the next working days of the store's calendar; every must-visit is planned on some day or explained. Checked
against the store's calendar, independently recomputed schedules and a brute-force optimum on a small case."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from civicgrid.sites.patrol.network import straight_line_minutes

from test_patrol import best_sequences

DAY = "2025-12-20"          # a Saturday: the next working days are Monday 22nd, Tuesday 23rd, ...
STREET = "430105001"
ONE_BIKE = [{"name": "王伟", "start": [112.93, 28.22], "shift_start": "09:00", "shift_minutes": 240, "mode": "bike"}]


@pytest.fixture(scope="module")
def backlog_doc(demo_db: Path) -> dict:
    from civicgrid.geo.store import Store
    from civicgrid.sites.patrol import plan_day

    return plan_day(Store(demo_db), ONE_BIKE, date=DAY, area=STREET, coverage_days=30, time_limit_s=2.0)


def _working_days(store, first: date, n: int) -> list[str]:
    """The next n working days after ``first`` from the holidays table, read here (Mon-Fri minus holidays, plus
    make-up working days)."""
    h = store.sql("SELECT date, kind FROM holidays")
    kind = {pd.Timestamp(d).date(): k for d, k in zip(h["date"], h["kind"], strict=True)}
    out, d = [], first
    while len(out) < n:
        d += timedelta(days=1)
        k = kind.get(d)
        if k == "workday" or (k != "holiday" and d.weekday() < 5):
            out.append(d.isoformat())
    return out


def test_every_must_visit_is_planned_on_some_day_or_explained(backlog_doc: dict, demo_db: Path) -> None:
    from civicgrid.geo.store import Store
    from civicgrid.sites.patrol import patrol_candidates

    store = Store(demo_db)
    doc = backlog_doc
    b = doc["backlog"]
    cand = patrol_candidates(store, date=DAY, area=STREET, coverage_days=30)
    must = set(cand.loc[cand["must_visit"], "site_id"])
    items = b["items"]
    assert b["must_visits"] == len(must) == len(items) > 30      # one bike inspector cannot do them in 4 hours
    assert {it["site_id"] for it in items} == must and [it["rank"] for it in items] == list(range(1, len(must) + 1))
    # today's must-visit stops are the items planned today, with the same inspector and order
    today = {s["site_id"]: s["seq"] for r in doc["routes"] for s in r["stops"] if s["must_visit"]}
    assert {it["site_id"]: it["seq"] for it in items if it["planned_date"] == DAY} == today
    assert 10 < len(today) < len(must)
    # each later day's stops are exactly the items planned that day
    for day in b["later"]:
        stops = {s["site_id"]: (r["inspector"], s["seq"]) for r in day["routes"] for s in r["stops"]}
        assert {it["site_id"]: (it["inspector"], it["seq"]) for it in items if it["planned_date"] == day["date"]} \
            == stops
        assert all(s["must_visit"] for r in day["routes"] for s in r["stops"])
    # what is not planned says why: nobody can reach it within the shift and its window (schools 16:00-17:30
    # for a 09:00-13:00 shift), nothing else
    left = [it for it in items if it["planned_date"] is None]
    assert b["unplanned"] == len(left) and b["planned"] == len(items) - len(left)
    assert all(it["reason"].startswith("无法安排") for it in left)
    windows = dict(zip(cand["site_id"], cand["tw_from"], strict=True))
    assert all(windows[it["site_id"]] == "16:00" for it in left)
    # the days are today then the next working days of the store's calendar, without a gap
    assert b["days"] == [DAY, *_working_days(store, date(2025, 12, 20), len(b["days"]) - 1)]
    assert b["days"][1] == "2025-12-22"
    # reasons name only what raises a site's risk: never a zero count such as "未办结问题0件" (issue 15)
    import re

    texts = [x["zh"] for r in doc["routes"] for s in r["stops"] for x in s["reasons"] if x["kind"] == "risk"]
    texts += [x["zh"] for d in b["later"] for r in d["routes"] for s in r["stops"] for x in s["reasons"]
              if x["kind"] == "risk"]
    assert texts and not [t for t in texts if re.search(r"(?<![0-9.])0件", t)]
    # today's unvisited must-visits carry their rank and day
    by_id = {it["site_id"]: it for it in items}
    for u in doc["unvisited_must"]:
        assert u["rank"] == by_id[u["site_id"]]["rank"]
        assert u["planned_date"] == by_id[u["site_id"]]["planned_date"]


def test_each_day_fits_the_shift_when_recomputed(backlog_doc: dict, demo_db: Path) -> None:
    from civicgrid.geo.store import Store

    store = Store(demo_db)
    service = dict(store.sql("SELECT code, service_minutes FROM site_categories").itertuples(index=False))
    b = backlog_doc["backlog"]
    assert len(b["per_day"]) == len(b["days"]) >= 3
    days = [(DAY, backlog_doc["routes"]), *[(d["date"], d["routes"]) for d in b["later"]]]
    for (day, routes), load in zip(days, b["per_day"], strict=True):
        assert load["date"] == day and load["capacity_min"] == 240
        used = 0.0
        for r in routes:
            assert r["shift_start"] == f"{day}T09:00"
            clock = datetime.fromisoformat(r["shift_start"])
            x, y = r["start"]
            for s in r["stops"]:
                travel = straight_line_minutes(np.array([x, s["lng"]]), np.array([y, s["lat"]]), mode="bike")[0, 1]
                assert s["travel_min"] == pytest.approx(travel, abs=0.01)
                begin = max(clock + timedelta(minutes=travel), datetime.fromisoformat(s["start_time"]))
                assert s["service_min"] == service[s["category_code"]]
                clock = begin + timedelta(minutes=s["service_min"])
                x, y = s["lng"], s["lat"]
            back = straight_line_minutes(np.array([x, r["end"][0]]), np.array([y, r["end"][1]]), mode="bike")[0, 1]
            minutes = (clock + timedelta(minutes=back) - datetime.fromisoformat(r["shift_start"])).total_seconds() / 60
            assert minutes <= r["shift_minutes"] + 0.02
            used += minutes if r["stops"] else 0.0
        # the day's load against the team's capacity: all but the last day nearly full
        assert load["shift_used_min"] == pytest.approx(used, abs=0.2)
        assert load["shift_used_min"] <= load["capacity_min"]
        assert load["stops"] == sum(len(r["stops"]) for r in routes)
    assert all(p["shift_used_min"] > 200 for p in b["per_day"][:-1])


def test_urgency_ranks_the_most_late_first(backlog_doc: dict, demo_db: Path) -> None:
    from civicgrid.geo.store import Store

    store = Store(demo_db)
    items = backlog_doc["backlog"]["items"]
    # independent: days past the deadline of each site's open overdue problems
    over = store.sql("""
        SELECT site_id, max(date_diff('second', deadline, TIMESTAMP '2025-12-20 00:00:00')) / 86400.0 AS late
        FROM events
        WHERE site_id IS NOT NULL AND time < TIMESTAMP '2025-12-20' AND deadline < TIMESTAMP '2025-12-20'
          AND (closed_at IS NULL OR closed_at >= TIMESTAMP '2025-12-20') AND coalesce(status, 'open') <> 'cancelled'
        GROUP BY 1""")
    late = dict(zip(over["site_id"], over["late"], strict=True))
    checked = 0
    for it in items:
        if it["site_id"] in late and it["late_days"] is not None and it["late_days"] <= late[it["site_id"]] + 0.1:
            assert it["late_days"] == pytest.approx(late[it["site_id"]], abs=0.05)
            assert it["urgency"] == f"逾期 {late[it['site_id']]:.0f} 天"
            checked += 1
    assert checked >= 5
    keys = [np.inf if it["late_days"] is None else it["late_days"] for it in items]
    assert keys == sorted(keys, reverse=True)          # never-inspected grids first, then days late


def test_days_limit_leaves_the_rest_ranked_and_explained(demo_db: Path) -> None:
    from civicgrid.geo.store import Store
    from civicgrid.sites.patrol import plan_day

    doc = plan_day(Store(demo_db), ONE_BIKE, date=DAY, area=STREET, coverage_days=30, time_limit_s=1.0, days=2)
    b = doc["backlog"]
    assert b["days"] == [DAY, "2025-12-22"] and b["horizon_days"] == 2 and len(b["later"]) == 1
    beyond = [it for it in b["items"] if it["planned_date"] is None and not it["reason"].startswith("无法安排")]
    assert beyond and all(it["reason"] == "2 个工作日内排不下（可加 --days 或增加人手）" for it in beyond)
    assert b["planned"] + b["unplanned"] == b["must_visits"]
    assert all(p["shift_used_min"] > 200 for p in b["per_day"])    # both planned days are full


def test_later_days_take_the_most_must_visits_that_fit_like_brute_force(demo_db: Path) -> None:
    """Seven must-visits, one walker with a 70-minute shift: each day visits as many of what is left as any
    route could (enumerated) and, among those, the most urgent; the days needed are the fewest any split into
    feasible days needs."""
    from civicgrid.geo.store import Store
    from civicgrid.sites.patrol import Inspector, patrol_points, plan_backlog, plan_patrols, urgency_prizes
    from civicgrid.sites.patrol.plan import plan_document

    rng = np.random.default_rng(11)
    n = 7
    cand = pd.DataFrame({
        "site_id": np.arange(1, n + 1), "name": [f"S{i}" for i in range(1, n + 1)],
        "lng": 112.94 + rng.uniform(-0.006, 0.006, n), "lat": 28.23 + rng.uniform(-0.006, 0.006, n),
        "risk": rng.uniform(0.1, 0.9, n), "service_min": 12.0, "must_visit": True,
        "late_days": rng.integers(1, 40, n).astype(float), "grid_code": "g", "grid_name": "第1网格",
        "tw_start_min": np.nan, "tw_end_min": np.nan})
    cand["prize"] = cand["risk"]
    cand["reasons"] = [[] for _ in range(n)]
    insp = [Inspector("A", 112.94, 28.23, shift_start=datetime(2025, 12, 20, 9), shift_minutes=70, mode="walk")]
    today = plan_patrols(urgency_prizes(cand), insp, solver="pyvrp", time_limit_s=1.0, seed=0, cpu_time=True)
    doc = plan_document(today, cand, insp, params={"date": DAY})
    store = Store(demo_db)
    b = plan_backlog(store, doc, cand, insp, day=datetime(2025, 12, 20), days=None, network=None, solver="pyvrp",
                     time_limit_s=1.0, seed=0, lang="zh", document=plan_document)
    lng, lat = patrol_points(cand, insp)
    mat = straight_line_minutes(lng, lat, mode="walk")
    feasible = best_sequences(mat, 0, 1, 2, cand, 70.0)      # {bitmask of sites: best prize} for one shift
    day_sets = []
    for p in b["per_day"]:
        ids = {it["site_id"] for it in b["items"] if it["planned_date"] == p["date"]}
        day_sets.append(sum(1 << (i - 1) for i in ids))
    # urgency: most days late first (then risk), weights 1 + (n - rank) / n
    order = cand.sort_values(["late_days", "risk"], ascending=False)["site_id"].tolist()
    assert [it["site_id"] for it in b["items"]] == order
    weight = {sid: 1 + (n - r) / n for r, sid in enumerate(order, start=1)}

    def key(mask: int) -> tuple[int, float]:
        ids = [i + 1 for i in range(n) if mask >> i & 1]
        return len(ids), round(sum(weight[i] for i in ids), 9)

    left = (1 << n) - 1
    for mask in day_sets:
        assert mask in feasible and mask & left == mask
        assert key(mask) == max(key(m) for m in feasible if m & left == m)
        left &= ~mask
    assert left == 0 and b["unplanned"] == 0
    # fewest days any split needs (dynamic programme over subsets)
    fewest = {0: 0}
    for mask in range(1, 1 << n):
        sub, best = mask, 99
        while sub:
            if sub in feasible:
                best = min(best, 1 + fewest[mask & ~sub])
            sub = (sub - 1) & mask
        fewest[mask] = best
    assert len(day_sets) == fewest[(1 << n) - 1]
    assert all(p["shift_used_min"] <= 70 + 1e-6 for p in b["per_day"])


def _pdf_pages(html_text: str, tmp_path: Path) -> int:
    """Pages of an HTML page printed to PDF by headless Chromium (A4, the page's own @page rule)."""
    import re
    import shutil
    import subprocess

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("printing the stop list needs Debian's chromium (.ci/run installs it)")
    page, pdf = tmp_path / "list.html", tmp_path / "list.pdf"
    page.write_text(html_text, encoding="utf-8")
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'p'}",
                    "--no-pdf-header-footer", f"--print-to-pdf={pdf}", page.as_uri()],
                   check=True, capture_output=True, timeout=120)
    return len(re.findall(rb"/Type\s*/Page[^s]", pdf.read_bytes()))


def test_printed_stop_list_is_one_a4_page_per_inspector_day(backlog_doc: dict, tmp_path: Path) -> None:
    import copy

    from civicgrid.sites.patrol.export import to_html

    b = backlog_doc["backlog"]
    inspector_days = 1 + sum(1 for d in b["later"] for r in d["routes"] if r["stops"])
    assert inspector_days == len(b["days"]) >= 3
    routes_only = copy.deepcopy(backlog_doc)
    routes_only["backlog"]["items"] = []          # leave out the backlog table: only the inspector-days
    assert _pdf_pages(to_html(routes_only), tmp_path) == inspector_days
    # a long day (a car, 8 hours: many stops) still prints on one page, a line per stop
    long = copy.deepcopy(routes_only)
    r = long["routes"][0]
    r["stops"] = [dict(r["stops"][i % len(r["stops"])], seq=i + 1) for i in range(46)]
    long["backlog"]["later"] = []
    assert _pdf_pages(to_html(long), tmp_path) == 1
    # the whole list: the inspector-days, then the backlog table (what is not planned today, most urgent first)
    html = to_html(backlog_doc)
    later = [it for it in b["items"] if it["planned_date"] != DAY]
    assert html.count('<section class="page route') == inspector_days
    assert html.index(f">{later[0]['rank']}</td>") < html.index(f">{later[-1]['rank']}</td>")
    assert _pdf_pages(html, tmp_path) <= inspector_days + 2
