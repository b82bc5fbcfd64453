"""Issue 14's measurements of bad input, as a user meets them over HTTP (the service in-process, TestClient).

    python bench/hardening_bench.py --db demo.duckdb [--json out.json]

On a copy of the store (the original is not written): the answers to the bad values the issue lists (status,
first words), a setting of 1e308 and a case created after it, one event stored as year 1 and the default
``/api/hotspots/emerging`` after it (slices, seconds), a 2 MB case text, a 300 MB upload against the 200 MB limit
(bytes the service read before answering, seconds), and CSVs with an unclosed quote, a wrong field count and a
10 MB field imported (rows read, loaded, rejected, the message). Runs on an older civicgrid too (for the "before"
figures of RESULTS.md): what it lacks is reported, not fatal.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def _short(r) -> str:
    text = r.text.replace("\n", " ")
    return f"{r.status_code} {text[:110]}"


def bad_values(client, h: dict) -> dict:
    """The bad values of the issue: status and the start of the answer."""
    case = {"problem_type": "0201", "lng": 112.94, "lat": 28.23}
    calls = {
        "case time ''": ("POST", "/api/cases", "inspector", {**case, "time": ""}),
        "case time 0001-01-01": ("POST", "/api/cases", "inspector", {**case, "time": "0001-01-01"}),
        "case time 1677-09-22": ("POST", "/api/cases", "inspector", {**case, "time": "1677-09-22"}),
        "case text 2 MB": ("POST", "/api/cases", "inspector", {**case, "text": "x" * 2_000_000}),
        "transition at ''": ("POST", "/api/cases/1/transitions", "inspector", {"to": "register", "at": ""}),
        "case id 2**70": ("GET", f"/api/cases/{2**70}", "viewer", None),
        "heatmap start=0001 end=9999": ("GET", "/api/heatmap?start=0001-01-01&end=9999-12-31", None, None),
        "kpis period=9999": ("GET", "/api/kpis?period=9999", None, None),
        "kpis period=0000-01": ("GET", "/api/kpis?period=0000-01", None, None),
        "flags as_of=0001-01-01": ("GET", "/api/kpis/flags?as_of=0001-01-01", None, None),
        "simulator as_of=0001-01-01": ("GET", "/api/simulator?as_of=0001-01-01&runs=10", None, None),
        "report 9999-12.xlsx": ("GET", "/api/reports/9999-12.xlsx", None, None),
        "events offset=2**63": ("GET", f"/api/events?offset={2**63}", "viewer", None),
        "cases offset=2**63": ("GET", f"/api/cases?offset={2**63}", "viewer", None),
        "setting rebound_days 1e308": ("PUT", "/api/settings/rebound_days", "admin", {"value": 1e308}),
        "no token, bad body: POST /api/cases": ("POST", "/api/cases", None, "{not json"),
        "no token, bad body: PUT /api/settings/holidays": ("PUT", "/api/settings/holidays", None, "{not json"),
        "no token: GET /api/patrols": ("GET", "/api/patrols", None, None),
    }
    out = {}
    for label, (method, url, role, body) in calls.items():
        kw = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, str) else \
            {"json": body}
        if role:
            kw["headers"] = {**kw.get("headers", {}), **h[role]}
        started = time.perf_counter()
        r = client.request(method, url, **kw)
        out[label] = {"answer": _short(r), "ms": round(1000 * (time.perf_counter() - started))}
    r = client.post("/api/cases", json=case, headers=h["inspector"])
    out["a case after PUT 1e308"] = {"answer": _short(r)}
    r = client.get("/api/layers/sites", params={"category": "03"})
    feats = r.json().get("features", []) if r.status_code == 200 else []
    out["site contacts without a token"] = {"answer": f"{sum(bool(f['properties'].get('phone')) for f in feats)} "
                                                      f"of {len(feats)} sites with a phone"}
    for name in ("a\x00b.csv", "a" * 300 + ".csv"):
        r = client.post("/api/imports/grids", files={"file": (name, b"code,name\n", "text/csv")},
                        headers=h["admin"])
        out[f"upload name {name[:8]!r}… ({len(name)} chars)"] = {"answer": _short(r)}
    return out


def emerging_with_an_outlier(path: Path, client) -> dict:
    """One event stored as year 1, then the default emerging-hotspot view."""
    from civicgrid.geo.store import writing

    with writing(path) as con:
        con.execute("INSERT INTO events SELECT * REPLACE (event_id + 100000000 AS event_id, "
                    "TIMESTAMP '0001-01-01 09:00' AS time) FROM events LIMIT 1")
    started = time.perf_counter()
    r = client.get("/api/hotspots/emerging", params={"res": 7})
    seconds = time.perf_counter() - started
    body = r.json() if r.status_code == 200 else {}
    return {"status": r.status_code, "n_slices": body.get("n_slices"), "first_slice": body.get("first_slice"),
            "seconds": round(seconds, 2)}


def big_upload(client, h: dict, mb: int = 300) -> dict:
    """A ``mb`` MB upload streamed to the service: bytes it read before answering, and the answer."""
    sent = 0

    def body():
        nonlocal sent
        head = (b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n'
                b"Content-Type: text/csv\r\n\r\ncode,name\n")
        yield head
        chunk = b"1,x\n" * (1 << 18)  # 1 MB
        for _ in range(mb):
            sent += len(chunk)
            yield chunk
        yield b"\r\n--XyZ--\r\n"

    started = time.perf_counter()
    r = client.post("/api/imports/grids", content=body(),
                    headers={**h["admin"], "content-type": "multipart/form-data; boundary=XyZ"})
    return {"answer": _short(r), "mb_sent_before_the_answer": round(sent / 2**20),
            "seconds": round(time.perf_counter() - started, 2)}


def csv_imports(path: Path, folder: Path) -> dict:
    """Malformed CSVs imported as events: counts and the first reject, or the error."""
    from civicgrid.sites.importers import get_importer

    files = {
        "unclosed quote": 'time,lng,lat,type,text\n2025-03-01 09:00,112.94,28.23,0201,"unclosed\n'
                          "2025-03-02 09:00,112.95,28.22,0201,ok\n",
        "wrong field count": "time,lng,lat,type,text\n2025-03-01 09:00,112.94,28.23,0201,a,extra\n"
                             "2025-03-02 09:00,112.95,28.22,0201,ok\n",
        "10 MB field": "time,lng,lat,type,text\n2025-03-01 09:00,112.94,28.23,0201," + "x" * (10 << 20) + "\n"
                       "2025-03-02 09:00,112.95,28.22,0201,ok\n",
    }
    out = {}
    for label, text in files.items():
        f = folder / f"{label.replace(' ', '_')}.csv"
        f.write_text(text, encoding="utf-8")
        try:
            rep = get_importer("events").run(f, db=path, mapping={}, progress=False, source="complaint")
            first = rep.rejects[0] if rep.rejects else None
            out[label] = {"rows_read": rep.rows_read, "loaded": rep.loaded, "rejected": rep.rejected,
                          "first_reject": first and f"row {first['row']}: {first['field']}: {first['reason'][:90]}"}
        except Exception as exc:
            out[label] = {"error": f"{type(exc).__name__}: {str(exc)[:150]}"}
    f = folder / "u16.csv"
    f.write_bytes("time,lng,lat,type\n2025-03-01 09:00,112.94,28.23,0201\n".encode("utf-16"))
    try:
        rep = get_importer("events").run(f, db=path, mapping={}, progress=False, source="complaint")
        out["UTF-16 file"] = {"rows_read": rep.rows_read, "loaded": rep.loaded, "encoding": rep.encoding}
    except Exception as exc:
        out["UTF-16 file"] = {"error": f"{type(exc).__name__}: {str(exc)[:150]}"}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", required=True, help="a demo store (copied; the original is not written)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    from civicgrid.api.app import create_app
    from civicgrid.geo.store_files import copy_store
    from civicgrid.geo.users import add_user
    from fastapi.testclient import TestClient

    with tempfile.TemporaryDirectory(prefix="hardening-bench-") as tmp:
        path = Path(tmp) / "city.duckdb"
        copy_store(args.db, path)
        tokens = {role: add_user(path, f"bench_{role}", role=role)[1] for role in ("viewer", "inspector", "admin")}
        h = {role: {"Authorization": f"Bearer {t}"} for role, t in tokens.items()}
        client = TestClient(create_app(path), raise_server_exceptions=False)
        figures = {"bad values": bad_values(client, h), "upload of 300 MB": big_upload(client, h),
                   "csv imports": csv_imports(path, Path(tmp)),
                   "emerging hotspots with one event in year 1": emerging_with_an_outlier(path, client)}
    print(json.dumps(figures, ensure_ascii=False, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
