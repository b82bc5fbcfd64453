"""``civicgrid patrol``: plan a day's risk-ranked patrol routes and write every export."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from civicgrid.api.cli import db_option, main, user_errors
from civicgrid.geo.texts import labels, text


def read_inspectors(path: str | Path) -> list[dict]:
    """Inspector rows from a JSON file (a list, or ``{"inspectors": [...]}``) or a CSV file (UTF-8 or GB18030)
    with columns ``name, start_lng, start_lat[, end_lng, end_lat, shift_start, shift_minutes | shift_hours,
    mode]``."""
    import pandas as pd
    from civicgrid.geo.errors import InvalidParameterError

    path = Path(path)
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except ValueError as exc:
            msg = f"{path.name}: not valid JSON ({exc})"
            raise InvalidParameterError(msg) from None
        rows = data.get("inspectors") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            msg = f'{path.name}: expected a list of inspectors or {{"inspectors": [...]}}'
            raise InvalidParameterError(msg)
        return rows
    if path.suffix.lower() in (".csv", ".txt"):
        from civicgrid.geo.readers import read_text

        text = read_text(path)
        import io

        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        frame.columns = [c.strip() for c in frame.columns]
        if "name" not in frame.columns:
            msg = (f"{path.name}: the first line must be a header naming the columns, e.g. "
                   f"name,start_lng,start_lat,shift_start,shift_minutes,mode; it reads {list(frame.columns)}")
            raise InvalidParameterError(msg)
        return frame.to_dict("records")
    msg = f"{path.name}: inspectors file must be .json or .csv"
    raise InvalidParameterError(msg)


@main.command()
@db_option
@click.option("--inspectors", "inspectors_file", type=click.Path(exists=True, dir_okay=False), required=True,
              help="JSON, or CSV with a header line: name, start_lng, start_lat, [end_lng, end_lat,] shift_start "
                   "(HH:MM), shift_minutes, mode (walk/bike/car)")
@click.option("--date", "day", required=True, help="the patrol day, e.g. 2025-12-20 (data before it is used)")
@click.option("--network", "network_file", type=click.Path(exists=True, dir_okay=False),
              help="road network for travel times: .osm.pbf, OSMnx .graphml, or a line layer (.geojson, .shp, "
                   ".gpkg); default the store's own street network (table roads; the demo city has one), else "
                   "straight line × 1.3")
@click.option("--straight-line", is_flag=True, help="ignore the store's street network: straight line × 1.3")
@click.option("--days", type=click.IntRange(min=1, max=60),
              help="working days to plan the must-visits over, today included: today takes what fits, the rest "
                   "is ranked by urgency and planned on the next working days (default: until all are planned)")
@click.option("--solver", type=click.Choice(["pyvrp", "ortools"]), default=None,
              help="routing solver (default: the one measured best, see bench/RESULTS.md)")
@click.option("--time-limit", "time_limit", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="solver time limit in seconds; the best plan found by then is used")
@click.option("--area", help="district, street, community or grid code (or name) to plan in (default: the city)")
@click.option("--coverage-days", type=click.IntRange(min=0),
              help="coverage rule: every grid of the area whose last inspection is this many days old gets a "
                   "must-visit")
@click.option("--no-rechecks", is_flag=True, help="do not make overdue problems and due re-checks (回头看) "
                                                  "must-visits")
@click.option("--max-candidates", type=click.IntRange(min=0), default=300, show_default=True,
              help="highest-risk sites offered to the solver besides the must-visits")
@click.option("--crs", type=click.Choice(["wgs84", "gcj02", "bd09"]), default="wgs84", show_default=True,
              help="system of the inspectors' coordinates")
@click.option("--lang", type=click.Choice(["zh", "en"]), default="zh", show_default=True,
              help="language of the printed plan and the exports")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="write JSON, GeoJSON, GPX, HTML and "
                                                                          "XLSX here")
@click.option("--no-save", is_flag=True, help="do not store the plan in the database (no plan id)")
@click.option("--public-url", help="address phones reach `civicgrid serve` at (e.g. http://10.1.2.3:8000; default "
                                   "$CIVICGRID_PUBLIC_URL): the inspectors' field links start with it and the "
                                   "printed stop list gets their QR codes")
@user_errors
def patrol(db: str, inspectors_file, day, network_file, straight_line, days, solver, time_limit, area,
           coverage_days, no_rechecks, max_candidates, crs, lang, out_dir, no_save, public_url):
    """Plan a day's patrol routes: which sites each inspector visits, in which order.

    Maximises the risk reached within every shift (a prize-collecting vehicle
    routing problem), with must-visits (overdue problems and re-checks, 回头看),
    visiting windows per site category, service minutes per category and an
    optional grid coverage rule. Prints a summary per inspector; with --out,
    writes the plan as JSON, GeoJSON, GPX (phones), HTML and XLSX stop lists.
    The plan is stored in the database (see GET /map/patrol/PLAN_ID), and each
    inspector gets a field link (/field/PLAN_ID/NAME?key=..., valid until the
    end of the plan's day): printed here, listed by the exports, with a QR code
    on the printed stop list when --public-url is given.

    \b
    Example:
      civicgrid patrol --db demo.duckdb --inspectors team.csv --date 2025-12-20 \\
          --area 430105001 --coverage-days 30 --out plans/
    """
    from civicgrid.geo.errors import CivicgridError
    from civicgrid.geo.settings import get_settings
    from civicgrid.geo.store import Store
    from civicgrid.geo.times import store_now
    from civicgrid.sites.patrol import plan_day, save_plan
    from civicgrid.sites.patrol.export import write_exports
    from civicgrid.sites.patrol.field import field_links
    from civicgrid.sites.patrol.network import load_network, store_network

    try:
        store = Store(db)
        rows = read_inspectors(inspectors_file)
        network = (load_network(network_file) if network_file else None if straight_line
                   else store_network(store))
        doc = plan_day(store, rows, date=day, area=area, coverage_days=coverage_days, rechecks=not no_rechecks,
                       max_candidates=max_candidates, network=network, solver=solver, time_limit_s=time_limit,
                       crs=crs, lang=lang, days=days)
        links = None
        if not no_save:
            save_plan(store.path, doc)
            links = field_links(store.path, doc, base_url=public_url or get_settings().public_url or None, lang=lang)
    except CivicgridError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(summary(doc, lang=lang))
    if links:
        head = labels("field", lang)["link"]
        click.echo(f"{head}:" + "".join(f"\n  {name}: {url}" for name, url in links.items()))
        if str(doc["date"]) < f"{store_now(store):%Y-%m-%d}":  # a day past in the store's zone: links already dead
            click.echo(text("field.expired", lang, day=doc["date"]), err=True)
    if out_dir:
        files = write_exports(doc, out_dir, lang=lang, links=links)
        click.echo(f"written to {out_dir}: " + ", ".join(p.name for p in files))


def summary(doc: dict, *, lang: str = "zh") -> str:
    """A few lines: the plan, each inspector's stops and totals, and must-visits left out (``lang`` zh or en)."""
    from civicgrid.sites.patrol.export import travel_source_text

    txt = labels("patrol.summary", lang)
    tot = doc["totals"]
    lines = [txt["head"].format(id=doc.get("plan_id") or txt["unsaved"], date=doc["date"], stops=tot["stops"],
                                risk=tot["risk"], must=tot["must_visits"], travel=tot["travel_min"],
                                solver=doc["solver"], secs=doc["solve_seconds"],
                                source=travel_source_text(doc["travel_source"], lang),
                                model=doc.get("risk_model"))]
    cands = doc.get("candidates")
    if cands:
        lines.append(txt["cands"].format(sites=cands["sites"], must=cands["must_visit"], coverage=cands["coverage"]))
    any_must = False
    for r in doc["routes"]:
        t = r["totals"]
        lines.append(txt["route"].format(name=r["inspector"], mode=r["mode"],
                                         start=r["shift_start"][11:16] if r["shift_start"] else "",
                                         minutes=r["shift_minutes"], stops=t["stops"], risk=t["risk"],
                                         travel=t["travel_min"], service=t["service_min"],
                                         back=(r["end_time"] or "")[11:16]))
        for s in r["stops"]:
            any_must = any_must or bool(s["must_visit"])
            lines.append(txt["stop"].format(seq=s["seq"], time=s["arrival"][11:16] if s["arrival"] else "",
                                            name=s["name"] or s["site_id"], category=s["category"], risk=s["risk"],
                                            must=" *" if s["must_visit"] else ""))
    if any_must:
        lines.append(txt["key"])
    backlog = doc.get("backlog")
    if backlog and backlog["must_visits"]:
        today = backlog["per_day"][0]["must_visits"]
        lines.append(text("patrol.backlog.summary", lang, n=backlog["must_visits"], today=today,
                          later=backlog["planned"] - today, days=len(backlog["days"]) - 1,
                          last=backlog["days"][-1], left=backlog["unplanned"]))
        b = labels("patrol.backlog", lang)
        for p in backlog["per_day"]:
            lines.append(f"    {p['date']}: {p['stops']} · {p['shift_used_min']:.0f}/{p['capacity_min']:.0f} "
                         f"{b['capacity']}")
        later = [it for it in backlog["items"] if it["planned_date"] != doc["date"]]
        for it in later[:20]:
            when = it["planned_date"] or f"{b['unplanned']}: {it['reason']}"
            lines.append(f"    #{it['rank']} {it['site_id']} {it.get('name') or ''} ({it['urgency']}) → {when}")
        if len(later) > 20:
            lines.append(txt["more"].format(n=len(later) - 20))
    elif doc["unvisited_must"]:
        lines.append(txt["left"].format(n=len(doc["unvisited_must"])))
        lines += [f"    {u['site_id']} {u.get('name') or ''}: {u['reason']}" for u in doc["unvisited_must"][:20]]
        if len(doc["unvisited_must"]) > 20:
            lines.append(txt["more"].format(n=len(doc["unvisited_must"]) - 20))
    lines += [txt["note"].format(note=n) for n in doc.get("notes", [])]
    return "\n".join(lines)
