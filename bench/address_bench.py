"""Benchmark: offline address matching (issue 13) on the real 311 files of ../shared/data.

For each file, the rows with coordinates and an address are split at random (seed 0): 80 % are imported with
their coordinates (what the store holds), the other 20 % are imported with their coordinates hidden, so that only
their address can place them (:class:`civicgrid.sites.event_places.AddressGazetteer`). A placed row is correct
when it lands within 100 m of its hidden coordinates. Precision = correct / placed, recall = correct / held out.

    .venv/bin/python bench/address_bench.py [--work DIR]
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

#: file, id, time, lat, lng, point (instead of lat/lng), address
FILES = [
    ("us_sf311/sf311_cases_sample_10000.csv", "CaseID", "Opened", None, None, "Point", "Address"),
    ("us_sf311/sf311_cases_sample_geo_4984.csv", "CaseID", "Opened", "Lat", "Long", None, "Address"),
    ("us_nyc311_small/nyc311_2023-12_sample.csv", "unique_key", "created_date", "latitude", "longitude", None,
     "incident_address"),
    ("us_nyc311_small/nyc311_2024-04_sample.csv", "unique_key", "created_date", "latitude", "longitude", None,
     "incident_address"),
]
TOLERANCE_M = 100.0


def _coords(frame: pd.DataFrame, lat: str | None, lng: str | None, point: str | None) -> tuple[np.ndarray, np.ndarray]:
    if point:
        xy = frame[point].str.extract(r"\(\s*([-\d.]+)\s*,\s*([-\d.]+)\s*\)").astype(float)
        return xy[1].to_numpy(), xy[0].to_numpy()
    return pd.to_numeric(frame[lng], errors="coerce").to_numpy(), pd.to_numeric(frame[lat], errors="coerce").to_numpy()


def run(work: Path) -> list[str]:
    from civicgrid.geo.store import Store
    from civicgrid.sites.events import import_events

    lines = []
    for name, id_col, time_col, lat, lng, point, addr in FILES:
        with open(SHARED / name, encoding="utf-8", newline="") as fh:
            frame = pd.DataFrame(list(csv.DictReader(fh))).replace("", None)
        x, y = _coords(frame, lat, lng, point)
        usable = np.isfinite(x) & np.isfinite(y) & frame[addr].notna().to_numpy()
        frame = frame[usable].drop_duplicates(id_col).reset_index(drop=True)
        x, y = _coords(frame, lat, lng, point)
        held = np.random.default_rng(0).random(len(frame)) < 0.2
        db = work / (Path(name).stem + ".duckdb")
        known, hidden = work / "known.csv", work / "hidden.csv"
        frame[~held].to_csv(known, index=False)
        frame[held].drop(columns=[c for c in (lat, lng, point) if c]).to_csv(hidden, index=False)
        mapping = {"id": id_col, "time": time_col, "address": addr}
        coords = {"lat": lat, "lng": lng} if lat else {}
        import_events(known, db=db, progress=False, point=point, mapping={**mapping, **coords})
        rep = import_events(hidden, db=db, progress=False, mapping=mapping)
        got = Store(db).sql(f"SELECT external_id, lng, lat, location_confidence FROM events "
                            f"WHERE import_id = {rep.import_id} AND located_by = 'address'")
        truth = pd.DataFrame({"external_id": frame.loc[held, id_col].astype(str).to_numpy(),
                              "x": x[held], "y": y[held]})
        m = got.merge(truth, on="external_id")
        dist = np.hypot((m["lng"] - m["x"]) * 111320 * np.cos(np.radians(m["y"])), (m["lat"] - m["y"]) * 110540)
        correct = int((dist <= TOLERANCE_M).sum())
        n_held = int(held.sum())
        precision = correct / len(m) if len(m) else float("nan")
        lines.append(f"{name}: held out {n_held:,} of {len(frame):,} rows with coordinates and an address; placed by "
                     f"address {len(m):,} ({rep.located_by_address:,} in the report), within {TOLERANCE_M:.0f} m "
                     f"{correct:,}: precision {precision:.3f}, recall {correct / n_held:.3f}; median error "
                     f"{float(np.median(dist)) if len(m) else float('nan'):.1f} m")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="civicgrid-address-"))
    work.mkdir(parents=True, exist_ok=True)
    for line in run(work):
        print(line)


if __name__ == "__main__":
    main()
