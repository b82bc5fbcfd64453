"""Prize-collecting patrol routes for inspectors."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise

import numpy as np
import pandas as pd
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.sites.network import DETOUR_FACTOR, SPEEDS_KMH, RoadNetwork, straight_line_minutes

#: Default minutes on site when ``service_min`` is missing.
DEFAULT_SERVICE_MIN = 12.0

#: Solver time unit: one second. Travel and service minutes are rounded *up* and time-window ends and shift
#: ends *down* to whole seconds, so a route the solver finds feasible is feasible in real (float) minutes.
UNIT_PER_MIN = 60

SOLVERS = ("pyvrp", "ortools")
_ORTOOLS_EXTRA: dict = {}

#: Largest share of the time limit spent first on the must-visits alone (see :func:`plan_patrols`).
MUST_PHASE_SHARE = 0.3

#: Tolerance (minutes) of :func:`check_plan`.
TOLERANCE_MIN = 1e-6

TravelInput = np.ndarray | Mapping[str, np.ndarray] | Callable[[np.ndarray, np.ndarray, str], np.ndarray]


@dataclass
class Inspector:
    """An inspector's shift: where it starts and ends, when, how long, and how the inspector travels.

    ``end_lng``/``end_lat`` default to the start; ``shift_start`` may be None when only minutes matter.
    """

    name: str
    start_lng: float
    start_lat: float
    end_lng: float | None = None
    end_lat: float | None = None
    shift_start: datetime | None = None
    shift_minutes: float = 240.0
    mode: str = "walk"

    def __post_init__(self) -> None:
        if self.end_lng is None or self.end_lat is None:
            self.end_lng, self.end_lat = self.start_lng, self.start_lat
        if self.mode not in SPEEDS_KMH:
            msg = f"inspector {self.name!r}: unknown mode {self.mode!r}; expected one of {sorted(SPEEDS_KMH)}"
            raise InvalidParameterError(msg)
        if not self.shift_minutes > 0:
            msg = f"inspector {self.name!r}: shift_minutes must be positive, got {self.shift_minutes}"
            raise InvalidParameterError(msg)


@dataclass
class Stop:
    """One visit on a route; times in minutes from the inspector's shift start."""

    site_id: object
    arrival_min: float
    travel_min: float
    wait_min: float
    start_min: float
    service_min: float
    prize: float
    must_visit: bool = False
    arrival: datetime | None = None


@dataclass
class Route:
    """An inspector's ordered stops, the return to the end point and the totals."""

    inspector: str
    mode: str
    stops: list[Stop]
    return_travel_min: float
    end_min: float
    shift_minutes: float
    shift_start: datetime | None = None

    @property
    def prize(self) -> float:
        """Total prize (risk) collected."""
        return float(sum(s.prize for s in self.stops))

    @property
    def travel_min(self) -> float:
        """Total travel minutes including the return."""
        return float(sum(s.travel_min for s in self.stops) + self.return_travel_min)

    @property
    def service_min(self) -> float:
        """Total minutes on site."""
        return float(sum(s.service_min for s in self.stops))

    @property
    def wait_min(self) -> float:
        """Total minutes waiting for time windows to open."""
        return float(sum(s.wait_min for s in self.stops))

    @property
    def shift_used_min(self) -> float:
        """Minutes from shift start to return (0 for an empty route)."""
        return float(self.end_min) if self.stops else 0.0

    @property
    def end_time(self) -> datetime | None:
        """Return time, when the shift start is known."""
        return None if self.shift_start is None else self.shift_start + timedelta(minutes=self.shift_used_min)


@dataclass
class UnvisitedMust:
    """A must-visit site left out of the plan, with the reason (English and Chinese)."""

    site_id: object
    reason: str
    reason_zh: str = ""


@dataclass
class PatrolPlan:
    """Patrol routes for all inspectors.

    Attributes
    ----------
    routes
        One :class:`Route` per inspector, in input order (possibly without stops).
    unvisited_must
        Must-visit sites that could not be planned, each with a concrete reason.
    solver
        ``"pyvrp"`` or ``"ortools"``.
    travel_source
        ``"road network: <file>"`` or ``"straight line × 1.3"`` (or ``"given matrix"``).
    objective
        Collected prize minus ``travel_weight`` × travel minutes.
    travel_weight
        Prize units charged per travel minute (tiny by default: travel only breaks ties).
    solve_seconds
        Wall time of the solver (model building included).
    travel_minutes
        The travel matrices used, by mode, over ``[start_0, end_0, start_1, end_1, ..., sites...]``.
    """

    routes: list[Route]
    unvisited_must: list[UnvisitedMust]
    solver: str
    travel_source: str
    objective: float
    travel_weight: float
    solve_seconds: float
    travel_minutes: dict[str, np.ndarray] = field(repr=False, default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def total_prize(self) -> float:
        """Prize collected by all inspectors."""
        return float(sum(r.prize for r in self.routes))

    @property
    def total_travel_min(self) -> float:
        """Travel minutes of all inspectors."""
        return float(sum(r.travel_min for r in self.routes))

    @property
    def total_shift_used_min(self) -> float:
        """Shift minutes used by all inspectors."""
        return float(sum(r.shift_used_min for r in self.routes))

    @property
    def visited(self) -> list:
        """Site ids in the plan."""
        return [s.site_id for r in self.routes for s in r.stops]

    def to_frame(self) -> pd.DataFrame:
        """One row per stop: inspector, sequence number and the :class:`Stop` fields."""
        rows = [{"inspector": r.inspector, "seq": i + 1, **asdict(s)} for r in self.routes
                for i, s in enumerate(r.stops)]
        cols = ["inspector", "seq", *Stop.__dataclass_fields__]
        return pd.DataFrame(rows, columns=cols)

    def summary(self) -> str:
        """A few lines for people: per inspector stops, prize, travel and shift used."""
        lines = [f"{self.solver}: prize {self.total_prize:g}, travel {self.total_travel_min:.0f} min, "
                 f"{len(self.visited)} sites, {self.solve_seconds:.1f} s ({self.travel_source})"]
        for r in self.routes:
            lines.append(f"  {r.inspector} ({r.mode}): {len(r.stops)} stops, prize {r.prize:g}, travel "
                         f"{r.travel_min:.0f} min, shift used {r.shift_used_min:.0f}/{r.shift_minutes:g} min")
        lines += [f"  must-visit {u.site_id} not planned: {u.reason}" for u in self.unvisited_must]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- inputs


def as_inspectors(inspectors: Sequence[Inspector | Mapping]) -> list[Inspector]:
    """Inspectors from :class:`Inspector` objects or dicts with the same keys."""
    out = [i if isinstance(i, Inspector) else Inspector(**dict(i)) for i in inspectors]
    if not out:
        msg = "at least one inspector is needed"
        raise InvalidParameterError(msg)
    names = [i.name for i in out]
    if len(set(names)) != len(names):
        msg = f"inspector names must be unique, got {names}"
        raise InvalidParameterError(msg)
    return out


def prepare_candidates(candidates: pd.DataFrame) -> pd.DataFrame:
    """Candidates with defaults filled in and checked.

    Adds ``service_min`` (12), ``must_visit`` (False), ``tw_start_min`` and ``tw_end_min`` (NaN) when missing.
    """
    missing = [c for c in ("site_id", "lng", "lat", "prize") if c not in candidates.columns]
    if missing:
        msg = f"candidates need columns {missing}"
        raise InvalidParameterError(msg)
    df = candidates.reset_index(drop=True).copy()
    if df["site_id"].duplicated().any():
        msg = f"duplicate site_id in candidates: {df.loc[df['site_id'].duplicated(), 'site_id'].tolist()[:5]}"
        raise InvalidParameterError(msg)
    for col in ("lng", "lat", "prize"):
        df[col] = pd.to_numeric(df[col], errors="raise").astype("float64")
    if df[["lng", "lat"]].isna().any().any():
        msg = "candidates with missing lng/lat"
        raise InvalidParameterError(msg)
    if (df["prize"].isna() | (df["prize"] < 0)).any():
        msg = "prize must be a number >= 0"
        raise InvalidParameterError(msg)
    df["service_min"] = (pd.to_numeric(df["service_min"], errors="raise").fillna(DEFAULT_SERVICE_MIN)
                         if "service_min" in df else DEFAULT_SERVICE_MIN)
    df["must_visit"] = df["must_visit"].fillna(False).astype(bool) if "must_visit" in df else False
    for col in ("tw_start_min", "tw_end_min"):
        df[col] = pd.to_numeric(df[col], errors="raise").astype("float64") if col in df else np.nan
    if (df["service_min"] < 0).any():
        msg = "service_min must be >= 0"
        raise InvalidParameterError(msg)
    bad = df["tw_start_min"] > df["tw_end_min"]
    if bad.any():
        msg = f"time window starts after it ends for sites {df.loc[bad, 'site_id'].tolist()[:5]}"
        raise InvalidParameterError(msg)
    return df


def patrol_points(candidates: pd.DataFrame, inspectors: Sequence[Inspector | Mapping]
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates in travel-matrix order: ``[start_0, end_0, start_1, end_1, ..., site_0, site_1, ...]``."""
    insp = as_inspectors(inspectors)
    dlng = [c for i in insp for c in (i.start_lng, i.end_lng)]
    dlat = [c for i in insp for c in (i.start_lat, i.end_lat)]
    return (np.r_[np.asarray(dlng, float), candidates["lng"].to_numpy(float)],
            np.r_[np.asarray(dlat, float), candidates["lat"].to_numpy(float)])


def travel_matrices(candidates: pd.DataFrame, inspectors: Sequence[Inspector | Mapping], *,
                    network: RoadNetwork | None = None, detour: float = DETOUR_FACTOR
                    ) -> tuple[dict[str, np.ndarray], str]:
    """Travel minutes by mode over :func:`patrol_points`, and their source.

    Uses the road network when given (``network.travel_minutes``), else straight line × ``detour``.
    """
    insp = as_inspectors(inspectors)
    lng, lat = patrol_points(candidates, insp)
    modes = sorted({i.mode for i in insp})
    if network is None:
        return ({m: straight_line_minutes(lng, lat, mode=m, detour=detour) for m in modes},
                f"straight line × {detour:g}")
    mats, far = {}, 0
    for m in modes:
        mats[m] = network.travel_minutes(lng, lat, mode=m, detour=detour)
        far = max(far, network.last_report.far_points)
    source = network.source
    if far:
        source += (f" ({far} of {len(lng)} points more than {network.last_report.max_snap_m:g} m from it: "
                   f"straight line × {detour:g})")
    return mats, source


def _as_matrices(travel: TravelInput, candidates: pd.DataFrame, insp: list[Inspector]) -> dict[str, np.ndarray]:
    n = 2 * len(insp) + len(candidates)
    modes = {i.mode for i in insp}
    if callable(travel):
        lng, lat = patrol_points(candidates, insp)
        travel = {m: np.asarray(travel(lng, lat, m), dtype="float64") for m in modes}
    if isinstance(travel, Mapping):
        out = {m: np.asarray(travel[m], dtype="float64") for m in modes if m in travel}
        lost = modes - set(out)
        if lost:
            msg = f"travel_minutes has no matrix for modes {sorted(lost)}"
            raise InvalidParameterError(msg)
    else:
        mat = np.asarray(travel, dtype="float64")
        out = {m: mat for m in modes}
    for m, mat in out.items():
        if mat.shape != (n, n):
            msg = (f"travel matrix for {m} has shape {mat.shape}; expected ({n}, {n}) over [start_0, end_0, ..., "
                   f"sites...] for {len(insp)} inspectors and {len(candidates)} sites")
            raise InvalidParameterError(msg)
        if not np.isfinite(mat).all() or (mat < 0).any():
            msg = f"travel matrix for {m} has negative, NaN or infinite minutes"
            raise InvalidParameterError(msg)
    return out


def _offsets(insp: list[Inspector]) -> np.ndarray:
    """Shift start of each inspector in minutes after the earliest one (0 when shift starts are unknown)."""
    starts = [i.shift_start for i in insp]
    if any(s is None for s in starts):
        return np.zeros(len(insp))
    t0 = min(starts)
    return np.array([(s - t0).total_seconds() / 60 for s in starts])


# ---------------------------------------------------------------------------------------------- schedule


def _schedule(order: list[int], k: int, cand: pd.DataFrame, insp: list[Inspector], mats: dict[str, np.ndarray],
              offsets: np.ndarray) -> Route:
    """Float schedule of one route: leave at shift start, wait for windows to open."""
    ins = insp[k]
    mat = mats[ins.mode]
    m2 = 2 * len(insp)
    off = offsets[k]
    t, prev = off, 2 * k
    stops = []
    for j in order:
        row = cand.iloc[j]
        travel = float(mat[prev, m2 + j])
        arrival = t + travel
        tws = row["tw_start_min"]
        begin = max(arrival, tws) if not np.isnan(tws) else arrival
        stops.append(Stop(site_id=row["site_id"], arrival_min=float(arrival - off), travel_min=travel,
                          wait_min=float(begin - arrival), start_min=float(begin - off),
                          service_min=float(row["service_min"]),
                          prize=float(row["prize"]), must_visit=bool(row["must_visit"]),
                          arrival=None if ins.shift_start is None else ins.shift_start + timedelta(
                              minutes=arrival - off)))
        t = begin + float(row["service_min"])
        prev = m2 + j
    back = float(mat[prev, 2 * k + 1]) if order else 0.0
    return Route(inspector=ins.name, mode=ins.mode, stops=stops, return_travel_min=back,
                 end_min=float(t + back - off) if order else 0.0, shift_minutes=float(ins.shift_minutes),
                 shift_start=ins.shift_start)


_MODE_ZH = {"walk": "步行", "bike": "骑行", "car": "驾车"}


def _when(minute: float, insp: list[Inspector]) -> tuple[str, str]:
    """A minute from the earliest shift start as (en, zh) text: ``16:00`` when shift starts are known."""
    starts = [i.shift_start for i in insp]
    if any(s is None for s in starts):
        return f"minute {minute:g}", f"第 {minute:g} 分钟"
    clock = (min(starts) + timedelta(minutes=float(minute))).strftime("%H:%M")
    return clock, clock


def _shift_text(ins: Inspector) -> tuple[str, str]:
    """An inspector's shift as (en, zh) text: ``08:30–11:30 (180 min)`` when its start is known."""
    if ins.shift_start is None:
        return f"{ins.shift_minutes:.0f} min", f"{ins.shift_minutes:.0f} 分钟"
    a, b = ins.shift_start, ins.shift_start + timedelta(minutes=ins.shift_minutes)
    span = f"{a:%H:%M}–{b:%H:%M}"
    return f"{span} ({ins.shift_minutes:.0f} min)", f"{span}（{ins.shift_minutes:.0f} 分钟）"


def _solo_fit(j: int, cand: pd.DataFrame, insp: list[Inspector], mats: dict[str, np.ndarray],
              offsets: np.ndarray) -> tuple[bool, tuple[str, str]]:
    """Whether some inspector can visit site j alone (start → j → end); if not, why (en, zh), for the closest.

    Times are clock times when the inspectors' shift starts are known, else minutes from the earliest start.
    """
    m2 = 2 * len(insp)
    row = cand.iloc[j]
    tws = 0.0 if np.isnan(row["tw_start_min"]) else row["tw_start_min"]
    twe = math.inf if np.isnan(row["tw_end_min"]) else row["tw_end_min"]
    serv = float(row["service_min"])
    best = None
    for k, ins in enumerate(insp):
        mat = mats[ins.mode]
        go, back = float(mat[2 * k, m2 + j]), float(mat[m2 + j, 2 * k + 1])
        arrival = offsets[k] + go
        begin = max(arrival, tws)
        end = begin + serv + back
        limit = offsets[k] + ins.shift_minutes
        if begin <= twe + TOLERANCE_MIN and end <= limit + TOLERANCE_MIN:
            return True, ("", "")
        key = (go, k)
        if best is None or key < best[0]:
            shift_en, shift_zh = _shift_text(ins)
            if begin > twe + TOLERANCE_MIN:
                close_en, close_zh = _when(twe, insp)
                arr_en, arr_zh = _when(round(arrival), insp)
                why = (f"cannot fit: its time window closes at {close_en} but the nearest inspector "
                       f"{ins.name} ({ins.mode}) needs {go:.0f} min travel and arrives at {arr_en} at the earliest")
                zh = (f"无法安排：时间窗 {close_zh} 关闭，最近的巡查员 {ins.name}（{_MODE_ZH.get(ins.mode, ins.mode)}）"
                      f"路程 {go:.0f} 分钟，最早 {arr_zh} 到达")
            else:
                waits = begin > arrival + TOLERANCE_MIN
                open_en, open_zh = _when(tws, insp)
                why = (f"cannot fit: nearest inspector {ins.name} ({ins.mode}) needs {go:.0f} min travel + "
                       f"{serv:.0f} min service + {back:.0f} min back"
                       + (f" (after waiting until its window opens at {open_en})" if waits else "")
                       + f", shift is {shift_en}")
                zh = (f"无法安排：最近的巡查员 {ins.name}（{_MODE_ZH.get(ins.mode, ins.mode)}）需路程 {go:.0f} 分钟 + "
                      f"检查 {serv:.0f} 分钟 + 返回 {back:.0f} 分钟"
                      + (f"（需等到 {open_zh} 时间窗开始）" if waits else "")
                      + f"，班次为 {shift_zh}")
            best = (key, (why, zh))
    return False, best[1]


def _fits_alone(cand: pd.DataFrame, insp: list[Inspector], mats: dict[str, np.ndarray],
                offsets: np.ndarray) -> np.ndarray:
    """Per site: can some inspector go start → site → end within the shift and the site's window."""
    m2 = 2 * len(insp)
    tws = np.nan_to_num(cand["tw_start_min"].to_numpy(float), nan=-np.inf)
    twe = np.nan_to_num(cand["tw_end_min"].to_numpy(float), nan=np.inf)
    serv = cand["service_min"].to_numpy(float)
    ok = np.zeros(len(cand), dtype=bool)
    for k, ins in enumerate(insp):
        mat = mats[ins.mode]
        arrival = offsets[k] + mat[2 * k, m2:]
        begin = np.maximum(arrival, tws)
        end = begin + serv + mat[m2:, 2 * k + 1]
        ok |= (begin <= twe + TOLERANCE_MIN) & (end <= offsets[k] + ins.shift_minutes + TOLERANCE_MIN)
    return ok


def _greedy(mod: _Model) -> list[list[int]]:
    """Feasible plan by best-ratio insertion (prize per extra second), used when a solver returns nothing."""
    m = len(mod.insp)
    routes: list[list[int]] = [[] for _ in range(m)]
    value = mod.prize_int + np.where(mod.required, mod.big_prize, 0)
    left = set(range(len(mod.sites)))

    def times(k: int, seq: list[int]) -> int | None:
        dur = mod.dur[mod.insp[k].mode]
        t, prev = int(mod.shift_start[k]), 2 * k
        for i in seq:
            t = max(t + int(dur[prev, 2 * m + i]), int(mod.tw_early[i]))
            if t > mod.tw_late[i]:
                return None
            t += int(mod.service[i])
            prev = 2 * m + i
        t += int(dur[prev, 2 * k + 1])
        return t if t <= mod.shift_end[k] else None

    while left:
        best = None
        for k in range(m):
            base = times(k, routes[k])
            for i in left:
                for pos in range(len(routes[k]) + 1):
                    seq = [*routes[k][:pos], i, *routes[k][pos:]]
                    t = times(k, seq)
                    if t is not None:
                        ratio = value[i] / max(t - base, 1)
                        if best is None or ratio > best[0]:
                            best = (ratio, k, seq, i)
        if best is None:
            break
        _, k, routes[k], i = best
        left.discard(i)
    return routes


def _dropped_reason(j: int, routes: list[Route], cand: pd.DataFrame, insp: list[Inspector],
                    mats: dict[str, np.ndarray]) -> tuple[str, str]:
    """Why a must-visit that fits alone was left out (en, zh): cheapest extra time against the time left."""
    m2 = 2 * len(insp)
    serv = float(cand.iloc[j]["service_min"])
    sid_pos = {sid: i for i, sid in enumerate(cand["site_id"])}
    best = None
    for k, (ins, r) in enumerate(zip(insp, routes, strict=True)):
        mat = mats[ins.mode]
        seq = [2 * k] + [m2 + sid_pos[s.site_id] for s in r.stops] + [2 * k + 1]
        extra = min(mat[a, m2 + j] + serv + mat[m2 + j, b] - mat[a, b] for a, b in pairwise(seq))
        left = ins.shift_minutes - (r.end_min if r.stops else 0.0)
        if best is None or extra - left < best[0]:
            best = (extra - left, f"does not fit together with the other must-visit sites: the cheapest insertion "
                                  f"(into {ins.name}'s route) needs {extra:.0f} min more travel + service, the "
                                  f"route has {left:.0f} min of shift left",
                                  f"与其他必查点位无法同时安排：插入 {ins.name} 的路线最少需多用 {extra:.0f} 分钟"
                                  f"（路程 + 检查），该路线班次只剩 {left:.0f} 分钟")
    return best[1], best[2]


# ---------------------------------------------------------------------------------------------- solvers


@dataclass
class _Model:
    cand: pd.DataFrame
    insp: list[Inspector]
    mats: dict[str, np.ndarray]
    offsets: np.ndarray
    sites: np.ndarray            # candidate positions in the model
    required: np.ndarray         # per model site
    prize_int: np.ndarray        # per model site
    big_prize: int               # prize of a soft must-visit (dominates everything else)
    dur: dict[str, np.ndarray]   # integer seconds over [depots..., model sites...]
    service: np.ndarray
    tw_early: np.ndarray
    tw_late: np.ndarray
    shift_start: np.ndarray
    shift_end: np.ndarray
    travel_weight: float


def _build(cand: pd.DataFrame, insp: list[Inspector], mats: dict[str, np.ndarray], offsets: np.ndarray,
           sites: np.ndarray, travel_weight: float | None) -> _Model:
    m2 = 2 * len(insp)
    loc = np.r_[np.arange(m2), m2 + sites]
    dur = {m: np.ceil(mat[np.ix_(loc, loc)] * UNIT_PER_MIN - 1e-6).astype(np.int64) for m, mat in mats.items()}
    sub = cand.iloc[sites]
    service = np.ceil(sub["service_min"].to_numpy() * UNIT_PER_MIN - 1e-6).astype(np.int64)
    shift_start = np.ceil(offsets * UNIT_PER_MIN - 1e-6).astype(np.int64)
    shift_end = np.floor((offsets + np.array([i.shift_minutes for i in insp])) * UNIT_PER_MIN + 1e-6
                         ).astype(np.int64)
    horizon = int(shift_end.max())
    tws, twe = sub["tw_start_min"].to_numpy(), sub["tw_end_min"].to_numpy()
    tw_early = np.where(np.isnan(tws), 0, np.ceil(np.nan_to_num(tws) * UNIT_PER_MIN - 1e-6)).astype(np.int64)
    tw_late = np.where(np.isnan(twe), horizon, np.floor(np.nan_to_num(twe) * UNIT_PER_MIN + 1e-6)).astype(np.int64)
    tw_early = np.clip(tw_early, 0, horizon)
    tw_late = np.clip(tw_late, 0, horizon)
    prize = sub["prize"].to_numpy()
    required = sub["must_visit"].to_numpy(bool)
    travel_bound = int((shift_end - shift_start).sum()) + 1   # no plan travels longer than all shifts together
    if travel_weight is None:
        positive = prize[(prize > 0) & ~required]
        pmin = positive.min() if len(positive) else 1.0
        # all travel together costs at most 1% of the smallest prize, capped to keep sums far below 2**63
        scale = min(100.0 * travel_bound / pmin, 1e12 / max(prize.sum(), 1e-9))
        travel_weight = UNIT_PER_MIN / scale
    else:
        if travel_weight <= 0:
            msg = f"travel_weight must be positive, got {travel_weight}"
            raise InvalidParameterError(msg)
        scale = UNIT_PER_MIN / travel_weight
    prize_int = np.round(prize * scale).astype(np.int64)
    # a must-visit is worth more than every other prize (must-visits included) and all travel together: a plan
    # with more must-visits always beats one with fewer, whatever their risk
    big = int(prize_int.sum()) + travel_bound + 1
    return _Model(cand=cand, insp=insp, mats=mats, offsets=offsets, sites=sites, required=required,
                  prize_int=prize_int, big_prize=big, dur=dur, service=service, tw_early=tw_early,
                  tw_late=tw_late, shift_start=shift_start, shift_end=shift_end, travel_weight=travel_weight)


class _Stop:
    """Stop at a CPU or wall-clock deadline, or as soon as the best cost is below ``done_below`` (PyVRP calls it
    with the best cost; its cost is travel plus the prizes left out, so a cost below one must-visit's prize means
    that every site is planned)."""

    def __init__(self, seconds: float, *, cpu_time: bool, done_below: float | None = None) -> None:
        self.clock = time.process_time if cpu_time else time.perf_counter
        self.end = self.clock() + seconds
        self.done_below = done_below

    def __call__(self, best_cost: float | None = None) -> bool:
        if self.done_below is not None and best_cost is not None and best_cost < self.done_below:
            return True
        return self.clock() >= self.end


def _solve_pyvrp(mod: _Model, *, time_limit_s: float, seed: int, soft_must: bool, cpu_time: bool = False,
                 initial: list[list[int]] | None = None, until_all: bool = False) -> list[list[int]] | None:
    import pyvrp
    from pyvrp import Client, Depot, Location, ProblemData, VehicleType
    from pyvrp.exceptions import PenaltyBoundWarning
    from pyvrp.PenaltyManager import PenaltyParams

    insp = mod.insp
    m2 = 2 * len(insp)
    modes = sorted(mod.dur)
    profile = {m: p for p, m in enumerate(modes)}
    lng, lat = patrol_points(mod.cand.iloc[mod.sites], insp)
    locations = [Location(x=float(x), y=float(y)) for x, y in zip(lng, lat, strict=True)]
    depots = [Depot(location=d) for d in range(m2)]
    clients = []
    for i in range(len(mod.sites)):
        req = bool(mod.required[i]) and not soft_must
        prize = int(mod.prize_int[i]) + (mod.big_prize if (mod.required[i] and soft_must) else 0)
        clients.append(Client(location=m2 + i, service_duration=int(mod.service[i]), tw_early=int(mod.tw_early[i]),
                              tw_late=int(mod.tw_late[i]), prize=prize, required=req))
    vtypes = [VehicleType(num_available=1, start_depot=2 * k, end_depot=2 * k + 1, tw_early=int(mod.shift_start[k]),
                          tw_late=int(mod.shift_end[k]), shift_duration=int(mod.shift_end[k] - mod.shift_start[k]),
                          unit_distance_cost=1, profile=profile[ins.mode], name=ins.name)
              for k, ins in enumerate(insp)]
    data = ProblemData(locations, clients, depots, vtypes, [mod.dur[m] for m in modes], [mod.dur[m] for m in modes])
    top = max(int(mod.prize_int.max(initial=1)), mod.big_prize if soft_must else 1)
    params = pyvrp.SolveParams(penalty=PenaltyParams(max_penalty=float(max(100_000, top))))
    with warnings.catch_warnings():
        # PyVRP warns when required clients cannot all fit; the caller then retries with them optional
        warnings.simplefilter("ignore", PenaltyBoundWarning)
        stop = _Stop(time_limit_s, cpu_time=cpu_time, done_below=mod.big_prize if until_all else None)
        init = None
        if initial is not None and any(initial):
            init = pyvrp.Solution(data, [pyvrp.Route(data, visits, k) for k, visits in enumerate(initial) if visits])
        res = pyvrp.solve(data, stop=stop, seed=seed, display=False, collect_stats=False,
                          params=params, initial_solution=init)
    best = res.best
    if not best.is_feasible():
        return None
    routes: list[list[int]] = [[] for _ in insp]
    for r in best.routes():
        routes[r.vehicle_type()] = [a.idx for a in r.schedule() if a.is_client()]  # client index
    return routes


def _solve_ortools(mod: _Model, *, time_limit_s: float, seed: int, soft_must: bool, cpu_time: bool = False,
                   initial: list[list[int]] | None = None, until_all: bool = False) -> list[list[int]] | None:
    from ortools.constraint_solver import pywrapcp, routing_enums_pb2
    from ortools.util import optional_boolean_pb2

    insp = mod.insp
    m = len(insp)
    m2 = 2 * m
    n = m2 + len(mod.sites)
    manager = pywrapcp.RoutingIndexManager(n, m, [2 * k for k in range(m)], [2 * k + 1 for k in range(m)])
    routing = pywrapcp.RoutingModel(manager)
    service = np.r_[np.zeros(m2, np.int64), mod.service]
    transit, cost = {}, {}
    for mode, dur in mod.dur.items():
        cost[mode] = routing.RegisterTransitMatrix(dur.tolist())
        transit[mode] = routing.RegisterTransitMatrix((dur + service[:, None]).tolist())
    for k, ins in enumerate(insp):
        routing.SetArcCostEvaluatorOfVehicle(cost[ins.mode], k)
    horizon = int(mod.shift_end.max())
    routing.AddDimensionWithVehicleTransits([transit[i.mode] for i in insp], horizon, horizon, False, "time")
    tdim = routing.GetDimensionOrDie("time")
    for k in range(m):
        tdim.CumulVar(routing.Start(k)).SetRange(int(mod.shift_start[k]), int(mod.shift_start[k]))
        tdim.CumulVar(routing.End(k)).SetRange(int(mod.shift_start[k]), int(mod.shift_end[k]))
    for i in range(len(mod.sites)):
        idx = manager.NodeToIndex(m2 + i)
        tdim.CumulVar(idx).SetRange(int(mod.tw_early[i]), int(mod.tw_late[i]))
        if mod.required[i]:
            if soft_must:
                routing.AddDisjunction([idx], mod.big_prize + int(mod.prize_int[i]))
        else:
            routing.AddDisjunction([idx], int(mod.prize_int[i]))
    params = pywrapcp.DefaultRoutingSearchParameters()
    params.first_solution_strategy = routing_enums_pb2.FirstSolutionStrategy.PARALLEL_CHEAPEST_INSERTION
    params.local_search_metaheuristic = routing_enums_pb2.LocalSearchMetaheuristic.GUIDED_LOCAL_SEARCH
    # large-neighbourhood moves that re-insert left-out sites: without them guided local search can stay on a plan
    # that swapping two sites for two others would beat (a 9-site instance of tests/test_patrol.py shows it)
    params.local_search_operators.use_inactive_lns = optional_boolean_pb2.BOOL_TRUE
    done = [False]
    if until_all:
        # every site planned: nothing left to gain in this phase (its cost is then travel only)
        def seen() -> None:
            done[0] = done[0] or routing.CostVar().Max() < mod.big_prize

        routing.AddAtSolutionCallback(seen)
    if cpu_time or until_all:
        deadline = _Stop(time_limit_s, cpu_time=cpu_time)
        routing.AddSearchMonitor(routing.solver().CustomLimit(lambda: done[0] or deadline()))
    if cpu_time:
        params.time_limit.FromSeconds(int(100 * time_limit_s) + 60)   # a wall-clock backstop only
    else:
        params.time_limit.FromMilliseconds(max(1, int(time_limit_s * 1000)))
    for k, v in _ORTOOLS_EXTRA.items():
        if k.startswith("use_"):
            setattr(params.local_search_operators, k, v)
        else:
            setattr(params, k, v)
    start = None
    if initial is not None and any(initial):
        routing.CloseModelWithParameters(params)
        start = routing.ReadAssignmentFromRoutes([[manager.NodeToIndex(m2 + i) for i in r] for r in initial], True)
    if start is not None:
        sol = routing.SolveFromAssignmentWithParameters(start, params)
    else:
        sol = routing.SolveWithParameters(params)
    if sol is None:
        return None
    routes = []
    for k in range(m):
        idx, order = sol.Value(routing.NextVar(routing.Start(k))), []
        while not routing.IsEnd(idx):
            order.append(manager.IndexToNode(idx) - m2)
            idx = sol.Value(routing.NextVar(idx))
        routes.append(order)
    return routes


def _must_and_prize(mod: _Model, routes: list[list[int]]) -> tuple[int, int]:
    """The planner's order of plans: must-visits planned, then prize."""
    visited = [i for order in routes for i in order]
    return int(mod.required[visited].sum()), int(mod.prize_int[visited].sum())


def plan_patrols(candidates: pd.DataFrame, inspectors: Sequence[Inspector | Mapping], *,
                 travel_minutes: TravelInput | None = None, network: RoadNetwork | None = None,
                 time_limit_s: float = 5.0, solver: str = "pyvrp", seed: int = 0, cpu_time: bool = False,
                 travel_weight: float | None = None, travel_source: str | None = None) -> PatrolPlan:
    """Choose and order the sites each inspector visits to collect the most risk within the shifts.

    A prize-collecting vehicle routing problem with time windows: each inspector is a vehicle with its own start
    and end point and shift length; each site pays its ``prize`` when visited; must-visit sites are required.

    Parameters
    ----------
    candidates
        Columns ``site_id, lng, lat, prize`` (risk ≥ 0), optional ``service_min`` (default 12), ``must_visit``,
        ``tw_start_min``/``tw_end_min`` (minutes from the shift start — from the earliest ``shift_start`` when
        inspectors start at different times; NaN = no window; the window bounds the *start* of service, waiting
        for it to open is allowed) and ``grid_code``.
    inspectors
        :class:`Inspector` objects or dicts (``name, start_lng, start_lat, end_lng, end_lat, shift_start,
        shift_minutes, mode``).
    travel_minutes
        Minutes over ``[start_0, end_0, start_1, end_1, ..., site_0, ...]`` (see :func:`patrol_points`): one
        matrix for all inspectors, a ``{mode: matrix}`` dict, or a callable ``f(lng, lat, mode)``. When None,
        built from ``network`` or, without one, straight line × :data:`~sites.network.DETOUR_FACTOR`.
    network
        Road network for the travel matrix when ``travel_minutes`` is None.
    time_limit_s
        Solver time limit in seconds.
    solver
        ``"pyvrp"`` (PyVRP's iterated local search) or ``"ortools"`` (routing library, parallel
        cheapest insertion then guided local search).
    seed
        Random seed (PyVRP; OR-Tools' routing search is deterministic).
    cpu_time
        Count ``time_limit_s`` in CPU seconds of this process instead of wall-clock seconds (for benchmarks on a
        busy machine, where wall time says little about the solver).
    travel_weight
        Prize units lost per minute of travel. None (default): travel only breaks ties — all travel together
        costs less than 1% of the smallest positive prize.
    travel_source
        Label for a given ``travel_minutes`` (default ``"given matrix"``).

    Returns
    -------
    PatrolPlan

    Notes
    -----
    Must-visit sites that no inspector can reach, serve and return from within the shift (and window) are left
    out and reported in ``unvisited_must`` with the numbers. Both solvers get the others as optional sites whose
    prize (their risk plus a bonus larger than all prizes and all travel together) makes the solver keep as many
    as fit — and the higher-risk ones first — while it always has a feasible plan to return within the time
    limit; those left out are reported with the cheapest insertion they would need. When there are both
    must-visit and other sites, the solver first plans the must-visits alone (until all fit, or for
    :data:`MUST_PHASE_SHARE` of the time limit), then the whole problem from that plan. Optional sites with
    prize 0, and sites no inspector can fit alone, are not given to the solver. Should a solver return no
    feasible plan at all, a greedy insertion plan is returned with a note.

    Prizes are scaled to integers so that all travel together costs less than 1 % of the smallest positive
    prize (with ``travel_weight=None``); times are whole seconds, rounded so that a plan feasible for the solver
    is feasible in exact minutes (see :data:`UNIT_PER_MIN`).
    """
    if solver not in SOLVERS:
        msg = f"unknown solver {solver!r}; expected one of {SOLVERS}"
        raise InvalidParameterError(msg)
    started = time.perf_counter()
    cand = prepare_candidates(candidates)
    insp = as_inspectors(inspectors)
    if travel_minutes is None:
        mats, source = travel_matrices(cand, insp, network=network)
    else:
        mats, source = _as_matrices(travel_minutes, cand, insp), travel_source or "given matrix"
    offsets = _offsets(insp)
    notes: list[str] = []
    unvisited: dict[int, str] = {}
    must = cand["must_visit"].to_numpy(bool)
    fits = _fits_alone(cand, insp, mats, offsets)
    for j in np.flatnonzero(must & ~fits):
        unvisited[int(j)] = _solo_fit(int(j), cand, insp, mats, offsets)[1]
    sites = np.flatnonzero(fits & (must | (cand["prize"].to_numpy() > 0))).astype(np.int64)
    orders: list[list[int]] = [[] for _ in insp]
    travel_weight_used = travel_weight if travel_weight is not None else 0.0
    if len(sites):
        mod = _build(cand, insp, mats, offsets, sites, travel_weight)
        travel_weight_used = mod.travel_weight
        run = _solve_pyvrp if solver == "pyvrp" else _solve_ortools
        # must-visits are optional with a prize above all other prizes and all travel together, so the solver
        # keeps as many as fit and always has a feasible plan (possibly without some must-visits, reported)
        initial, left = None, time_limit_s
        if MUST_PHASE_SHARE > 0 and mod.required.any() and not mod.required.all():
            # phase 1: the must-visits alone, to fit as many as possible (in a short time the whole problem's search
            # can settle for fewer: other sites crowd them out), until all fit or MUST_PHASE_SHARE of the time is
            # used. When they do not all fit, phase 2 starts from that plan, which it can only improve; when they
            # do, the solver builds its own start (a warm start from a sparse plan costs risk), and the phase-1
            # plan is kept should phase 2 end with fewer must-visits.
            clock = time.process_time if cpu_time else time.perf_counter
            t1 = clock()
            sub = np.flatnonzero(mod.required)
            first = run(_build(cand, insp, mats, offsets, sites[sub], travel_weight),
                        time_limit_s=MUST_PHASE_SHARE * time_limit_s, seed=seed, soft_must=True, cpu_time=cpu_time,
                        until_all=True)
            if first is not None:
                initial = [[int(sub[i]) for i in order] for order in first]
            left = max(time_limit_s - (clock() - t1), 0.1 * time_limit_s)
        all_fit = initial is not None and sum(map(len, initial)) == int(mod.required.sum())
        found = run(mod, time_limit_s=left, seed=seed, soft_must=True, cpu_time=cpu_time,
                    initial=None if all_fit else initial)
        if initial is not None and (found is None or _must_and_prize(mod, found) < _must_and_prize(mod, initial)):
            found = initial
        if found is None:
            notes.append(f"{solver} found no feasible plan within {time_limit_s:g} s; the plan is a greedy "
                         "insertion instead (raise the time limit)")
            found = _greedy(mod)
        orders = [[int(sites[i]) for i in order] for order in found]
    routes = [_schedule(order, k, cand, insp, mats, offsets) for k, order in enumerate(orders)]
    planned = {j for order in orders for j in order}
    for j in np.flatnonzero(cand["must_visit"].to_numpy()):
        if j not in planned and j not in unvisited:
            unvisited[j] = _dropped_reason(j, routes, cand, insp, mats)
    prize = sum(r.prize for r in routes)
    travel = sum(r.travel_min for r in routes)
    return PatrolPlan(routes=routes,
                      unvisited_must=[UnvisitedMust(cand.at[j, "site_id"], *why)
                                      for j, why in sorted(unvisited.items())],
                      solver=solver, travel_source=source, objective=float(prize - travel_weight_used * travel),
                      travel_weight=float(travel_weight_used), solve_seconds=time.perf_counter() - started,
                      travel_minutes=mats, notes=notes)


# ---------------------------------------------------------------------------------------------- checks


def check_plan(plan: PatrolPlan, candidates: pd.DataFrame, inspectors: Sequence[Inspector | Mapping],
               travel_minutes: TravelInput | None = None, *, tolerance_min: float = TOLERANCE_MIN) -> list[str]:
    """Check a plan independently of the solver: recompute every arrival from the travel matrix.

    Checks that each route belongs to a known inspector, every site exists and is visited at most once, arrival
    times match the matrix (leaving at shift start, waiting for windows to open), every visit starts before its
    window closes, every shift including the return fits its length, and every must-visit site is visited or
    reported in ``unvisited_must``.

    Parameters
    ----------
    plan
        The plan to check.
    candidates, inspectors
        The inputs of :func:`plan_patrols`.
    travel_minutes
        Matrix (or ``{mode: matrix}``) over :func:`patrol_points`; default the plan's own matrices.
    tolerance_min
        Slack in minutes for float comparisons.

    Returns
    -------
    list of str
        Violations; empty when the plan is feasible.
    """
    cand = prepare_candidates(candidates)
    insp = as_inspectors(inspectors)
    mats = _as_matrices(plan.travel_minutes if travel_minutes is None else travel_minutes, cand, insp)
    pos = {sid: j for j, sid in enumerate(cand["site_id"])}
    by_name = {ins.name: k for k, ins in enumerate(insp)}
    starts = [ins.shift_start for ins in insp]
    t0 = None if any(s is None for s in starts) else min(starts)
    m2 = 2 * len(insp)
    out: list[str] = []
    seen: dict = {}
    used_inspectors: set[str] = set()
    for r in plan.routes:
        if r.inspector not in by_name:
            out.append(f"route for unknown inspector {r.inspector!r}")
            continue
        if r.inspector in used_inspectors:
            out.append(f"inspector {r.inspector} has more than one route")
        used_inspectors.add(r.inspector)
        k = by_name[r.inspector]
        ins = insp[k]
        mat = mats[ins.mode]
        off = 0.0 if t0 is None else (ins.shift_start - t0).total_seconds() / 60
        clock, prev = 0.0, 2 * k   # minutes from this inspector's shift start
        for s in r.stops:
            if s.site_id not in pos:
                out.append(f"{r.inspector}: unknown site {s.site_id!r}")
                continue
            if s.site_id in seen:
                out.append(f"site {s.site_id!r} visited twice ({seen[s.site_id]} and {r.inspector})")
            seen[s.site_id] = r.inspector
            j = pos[s.site_id]
            clock += mat[prev, m2 + j]
            if abs(clock - s.arrival_min) > 0.01:
                out.append(f"{r.inspector}: reported arrival at {s.site_id!r} minute {s.arrival_min:.2f}, "
                           f"the matrix gives {clock:.2f}")
            tws, twe = cand.at[j, "tw_start_min"], cand.at[j, "tw_end_min"]
            if not np.isnan(tws):
                clock = max(clock, tws - off)
            if not np.isnan(twe) and clock > twe - off + tolerance_min:
                out.append(f"{r.inspector}: visit to {s.site_id!r} starts at minute {clock + off:.2f}, after its "
                           f"window closes at {twe:g}")
            clock += cand.at[j, "service_min"]
            prev = m2 + j
        if r.stops:
            clock += mat[prev, 2 * k + 1]
            if clock > ins.shift_minutes + tolerance_min:
                out.append(f"{r.inspector}: back at minute {clock:.2f}, shift is {ins.shift_minutes:g} min")
    reported = {u.site_id for u in plan.unvisited_must}
    for sid in cand.loc[cand["must_visit"], "site_id"]:
        if sid not in seen and sid not in reported:
            out.append(f"must-visit site {sid!r} neither visited nor reported")
        if sid in seen and sid in reported:
            out.append(f"must-visit site {sid!r} visited but also reported unvisited")
    return out


# ---------------------------------------------------------------------------------------------- coverage


def apply_coverage(candidates: pd.DataFrame, last_visit_days_by_grid: Mapping[str, float], *, max_days: int,
                   boost: float | None = None) -> pd.DataFrame:
    """Make sure no grid goes unvisited longer than ``max_days``: mark one site per stale grid as must-visit.

    A grid is stale when its last visit was ``max_days`` or more days ago (today is its last chance), or when it
    has no entry in ``last_visit_days_by_grid`` (never visited). In each stale grid the site with the highest
    prize (first in input order on ties) becomes ``must_visit``, unless the grid already has a must-visit site.
    With ``boost``, the prize of every site in a stale grid is also multiplied by ``boost`` so the solver prefers
    them even beyond the one required visit.

    Parameters
    ----------
    candidates
        Candidate sites with a ``grid_code`` column.
    last_visit_days_by_grid
        ``{grid_code: days since the last visit}``.
    max_days
        Longest allowed gap in days.
    boost
        Optional prize multiplier (> 1) for the sites of stale grids.

    Returns
    -------
    pandas.DataFrame
        A copy with ``must_visit`` updated and a boolean ``coverage`` column marking the sites made must-visit.
    """
    if "grid_code" not in candidates.columns:
        msg = "apply_coverage needs a grid_code column in candidates"
        raise InvalidParameterError(msg)
    if max_days < 0:
        msg = f"max_days must be >= 0, got {max_days}"
        raise InvalidParameterError(msg)
    df = candidates.copy()
    df["must_visit"] = df["must_visit"].fillna(False).astype(bool) if "must_visit" in df else False
    df["coverage"] = False
    days = df["grid_code"].map(lambda g: last_visit_days_by_grid.get(g, math.inf))
    stale = df["grid_code"].notna() & (days >= max_days)
    if boost is not None:
        if boost <= 1:
            msg = f"boost must be > 1, got {boost}"
            raise InvalidParameterError(msg)
        df.loc[stale, "prize"] = df.loc[stale, "prize"] * boost
    covered = set(df.loc[df["must_visit"], "grid_code"])
    pick = (df[stale & ~df["grid_code"].isin(covered)]
            .sort_values("prize", ascending=False, kind="stable")   # stable: input order breaks ties
            .drop_duplicates("grid_code"))
    df.loc[pick.index, "must_visit"] = True
    df.loc[pick.index, "coverage"] = True
    return df


# ---------------------------------------------------------------------------------------------- from the store

#: Visiting windows by site category code (``data/site_categories.csv``): ``(from, to, label_zh, label_en)`` in
#: local wall-clock time, bounding the *start* of the visit. Planning assumptions for the default taxonomy, not
#: rules from an assessment manual; a city edits them here (or passes ``windows=`` to :func:`patrol_candidates`):
#: school surroundings are judged at dismissal, when hawkers and traffic gather (most Chinese primary schools let
#: out between 16:00 and 17:30); campuses are visited in school hours, when staff can receive an inspector; farmers'
#: markets trade mostly in the morning; service halls, banks and counters are seen open (office hours).
CATEGORY_WINDOWS: dict[str, tuple[str, str, str, str]] = {
    "25": ("16:00", "17:30", "放学时段", "school dismissal"),
    "24": ("08:00", "16:00", "在校时段", "school hours"),
    "16": ("06:30", "11:00", "早市时段", "morning market"),
    "02": ("09:00", "17:00", "办公时间", "office hours"),
    "03": ("09:00", "17:00", "营业时间", "opening hours"),
    "04": ("09:00", "17:00", "营业时间", "opening hours"),
}

#: A closed problem at a site is due for its re-check (回头看) from this many days after closing, when the site
#: has not been inspected since it closed ...
RECHECK_AFTER_DAYS = 7
#: ... and stays due until this many days after closing (older closures are left to the risk score).
RECHECK_WITHIN_DAYS = 30

#: Highest-risk sites offered to the solver besides the must-visits (a day's patrol visits a few dozen).
MAX_CANDIDATES = 300

#: Solver used when none is named (see bench/RESULTS.md, "Patrol planning").
DEFAULT_SOLVER = "pyvrp"

_CANDIDATES_SQL = """
SELECT s.site_id, s.name, s.address, s.category_code, c.name_zh AS category_zh, c.name_en AS category_en,
       coalesce(c.service_minutes, $default_service) AS service_min, s.grid_code, s.community_code, s.street_code,
       s.district_code, s.lng, s.lat
FROM sites s LEFT JOIN site_categories c ON c.code = s.category_code
WHERE coalesce(s.active, TRUE) AND s.lng IS NOT NULL AND s.lat IS NOT NULL
  AND ($area IS NULL OR $area IN (s.grid_code, s.community_code, s.street_code, s.district_code))
ORDER BY s.site_id
"""

_MUST_SQL = """
WITH overdue AS (
    SELECT e.site_id, e.event_id, e.problem_type, e.deadline, NULL::TIMESTAMP AS closed_at, 'overdue' AS kind
    FROM events e
    WHERE e.site_id IS NOT NULL AND e.time < $day AND e.deadline < $day
      AND (e.closed_at IS NULL OR e.closed_at >= $day) AND coalesce(e.status, 'open') <> 'cancelled'
),
recheck AS (
    SELECT e.site_id, e.event_id, e.problem_type, e.deadline, e.closed_at, 'recheck' AS kind
    FROM events e
    WHERE e.site_id IS NOT NULL AND e.closed_at < $day - to_days($after)
      AND e.closed_at >= $day - to_days($within)
      AND NOT EXISTS (SELECT 1 FROM inspections i
                      WHERE i.site_id = e.site_id AND i.time > e.closed_at AND i.time < $day)
)
SELECT m.*, p.name_zh AS type_zh, p.name_en AS type_en
FROM (SELECT * FROM overdue UNION ALL SELECT * FROM recheck) m
LEFT JOIN problem_types p ON p.code = m.problem_type
ORDER BY m.site_id, m.kind, m.event_id
"""

_GRID_VISITS_SQL = """
SELECT g.code AS grid_code, date_diff('day', max(i.time)::DATE, $day::DATE) AS days
FROM grids g LEFT JOIN inspections i ON i.grid_code = g.code AND i.time < $day
GROUP BY g.code
"""


def _hhmm(text: str) -> float:
    h, m = str(text).split(":")
    return int(h) * 60 + int(m)


def _day(date) -> datetime:
    from civicgrid.geo.aggregate import parse_time_text

    if isinstance(date, str):
        # year first: 01/07/2025 is refused rather than read as 7 January
        d = parse_time_text(date, "date") if date.strip() else pd.NaT
    else:
        try:
            d = pd.Timestamp(date)
        except (ValueError, TypeError):
            d = pd.NaT
    if pd.isna(d):
        msg = f"date must be a day like 2026-01-05, got {date!r}"
        raise InvalidParameterError(msg)
    return d.normalize().to_pydatetime()


def check_area(store, area: str | None) -> str | None:
    """The area code as given when it names a district, street, community or grid; else NotFoundError."""
    from difflib import get_close_matches

    from civicgrid.geo.errors import NotFoundError

    if area is None or not str(area).strip():
        return None
    code = str(area).strip()
    known = store.sql("SELECT code, name FROM areas UNION ALL SELECT code, coalesce(name, code) FROM grids")
    if code in set(known["code"]):
        return code
    hit = known.loc[known["name"] == code, "code"]
    if len(hit):
        return str(hit.iloc[0])
    close = get_close_matches(code, known["code"].tolist() + known["name"].tolist(), n=5, cutoff=0.5)
    msg = f"unknown area {code!r}; closest: {', '.join(close) if close else 'none'}"
    raise NotFoundError(msg)


def site_risk_frame(store, *, as_of: datetime, sites: Sequence | None = None) -> tuple[pd.DataFrame, str]:
    """Risk in [0, 1] per active site with its components and reason, and which model made it.

    Uses :func:`sites.risk.site_risk` when it is installed (its numeric columns other than ids, coordinates,
    rank and base become the components, with their logit contributions), else the documented rule of
    :func:`sites.simulator.nonconformity_probability` (a site's chance of being found non-conforming from its last
    year of inspections, its open and overdue problems, recent hits and complaints around it).

    Parameters
    ----------
    store
        The database.
    as_of
        Only data before this moment is used.
    sites
        Site ids to score (default all active sites).

    Returns
    -------
    frame, model
        ``site_id, risk, components (dict), reason_zh, reason_en``; ``"civicgrid.sites.risk (<model>)"`` or ``"rule"``.
    """
    import inspect

    try:
        from civicgrid.sites.risk import site_risk
    except ImportError:
        site_risk = None
    if site_risk is not None:
        accepts = inspect.signature(site_risk).parameters
        kw = {"sites": list(sites)} if sites is not None and "sites" in accepts else {}
        frames = {}
        for lang in ("zh", "en"):
            frames[lang] = pd.DataFrame(site_risk(store, as_of=as_of, **kw, **({"lang": lang} if "lang" in accepts
                                                                                else {})))
            if "lang" not in accepts:
                frames["en"] = frames["zh"]
                break
        frame = frames["zh"]
        out = pd.DataFrame({"site_id": frame["site_id"].to_numpy(),
                            "risk": pd.to_numeric(frame["risk"], errors="coerce").fillna(0.0).clip(0, 1)})
        if "components" in frame:
            out["components"] = [_as_dict(c) for c in frame["components"]]
        else:
            skip = {"site_id", "lng", "lat", "risk", "rank", "base"}
            num = [c for c in frame.columns if c not in skip and pd.api.types.is_numeric_dtype(frame[c])]
            vals = frame[num].astype(float).round(4)
            out["components"] = [{k: (None if pd.isna(v) else v) for k, v in r.items()}
                                 for r in vals.to_dict("records")]
        reason = frame["reason"].astype(str) if "reason" in frame else pd.Series([""] * len(frame))
        out["reason_zh"] = reason.to_numpy()
        en = frames["en"].set_index("site_id")["reason"].astype(str) if "reason" in frames["en"] else reason
        out["reason_en"] = out["site_id"].map(en).fillna("").to_numpy()
        model = frame["model"].iloc[0] if "model" in frame and len(frame) else None
        return out, f"civicgrid.sites.risk ({model})" if model else "civicgrid.sites.risk"
    from civicgrid.sites.simulator import nonconformity_probability, site_state

    state = site_state(store, as_of=as_of)
    risk = nonconformity_probability(state)
    cols = ["open", "overdue", "hits", "complaints", "inspections", "nonconforming"]
    comps = state[cols].astype(int).to_dict("records")
    zh, en = [], []
    for c in comps:
        zh.append(f"近一年巡查{c['inspections']}次、不符合{c['nonconforming']}次；未结问题{c['open']}个（超期"
                  f"{c['overdue']}个）；近90天问题{c['hits']}个，周边投诉{c['complaints']}件")
        en.append(f"{c['nonconforming']} of {c['inspections']} checks non-conforming in a year; {c['open']} open "
                  f"problems ({c['overdue']} overdue); {c['hits']} hits in 90 days, {c['complaints']} complaints "
                  "nearby")
    out = pd.DataFrame({"site_id": state["site_id"].to_numpy(), "risk": risk, "components": comps,
                        "reason_zh": zh, "reason_en": en})
    if sites is not None:
        out = out[out["site_id"].isin(list(sites))]
    return out, "rule"


def _as_dict(value) -> dict:
    import json

    if isinstance(value, Mapping):
        return {str(k): (v.item() if hasattr(v, "item") else v) for k, v in value.items()}
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            return json.loads(value)
        except ValueError:
            return {}
    return {}


def patrol_candidates(store, *, date, area: str | None = None, coverage_days: int | None = None,
                      rechecks: bool = True, max_candidates: int = MAX_CANDIDATES,
                      windows: Mapping[str, tuple[str, str, str, str]] | None = None,
                      must_visit: Sequence = (), exclude: Sequence = ()):
    """The sites worth visiting on ``date``, with their risk, must-visit status, window and reasons.

    Parameters
    ----------
    store
        The database (:class:`geo.store.Store`).
    date
        The patrol day; only data before it is used.
    area
        District, street, community or grid code (or name) to plan in; default the whole city.
    coverage_days
        Coverage rule: no grid goes unvisited longer than this. Grids of the area whose last inspection is this
        many days old or more (or that were never inspected) get their highest-risk site as a must-visit.
    rechecks
        Make overdue re-checks must-visits: sites with a problem open past its deadline, and sites with a problem
        closed :data:`RECHECK_AFTER_DAYS`–:data:`RECHECK_WITHIN_DAYS` days ago and not inspected since (回头看).
    max_candidates
        The highest-risk sites offered besides the must-visits.
    windows
        Visiting windows by category code; default :data:`CATEGORY_WINDOWS`.
    must_visit, exclude
        Site ids to visit for certain, or to leave out.

    Returns
    -------
    geopandas.GeoDataFrame
        One row per candidate: ``site_id, name, address, category_code, category_zh, category_en, grid_code,
        lng, lat, risk, prize`` (= risk), ``components``, ``service_min`` (the category's ``service_minutes``),
        ``must_visit``, ``coverage``, ``tw_from``/``tw_to`` (``"16:00"`` or None), ``reasons`` (a list of
        ``{kind, zh, en}``: ``risk``, ``overdue``, ``recheck``, ``coverage``, ``window``, ``requested``), and the
        frame's ``attrs["risk_model"]``.
    """
    import geopandas as gpd

    day = _day(date)
    area = check_area(store, area)
    if max_candidates < 0:
        msg = f"max_candidates must be >= 0, got {max_candidates}"
        raise InvalidParameterError(msg)
    sites = store.sql(_CANDIDATES_SQL, {"area": area, "default_service": DEFAULT_SERVICE_MIN})
    risk, model = site_risk_frame(store, as_of=day, sites=sites["site_id"].tolist() if area else None)
    df = sites.merge(risk, on="site_id", how="left")
    df["risk"] = df["risk"].fillna(0.0).astype(float)
    df["components"] = [c if isinstance(c, dict) else {} for c in df["components"]]
    df["reasons"] = [[{"kind": "risk", "zh": f"风险 {r:.2f}：{z}", "en": f"risk {r:.2f}: {e}"}]
                     for r, z, e in zip(df["risk"], df["reason_zh"].fillna(""), df["reason_en"].fillna(""),
                                        strict=True)]
    df["must_visit"] = False
    ids = set(df["site_id"])
    for sid in must_visit:
        if sid not in ids:
            msg = f"must-visit site {sid!r} is not an active site{' of area ' + area if area else ''}"
            raise InvalidParameterError(msg)
    req = df["site_id"].isin(list(must_visit))
    df.loc[req, "must_visit"] = True
    for i in np.flatnonzero(req.to_numpy()):
        df.at[i, "reasons"].append({"kind": "requested", "zh": "指定必查", "en": "requested must-visit"})
    if rechecks:
        must = store.sql(_MUST_SQL, {"day": day, "after": RECHECK_AFTER_DAYS, "within": RECHECK_WITHIN_DAYS})
        pos = {sid: i for i, sid in enumerate(df["site_id"])}
        for row in must.itertuples(index=False):
            i = pos.get(row.site_id)
            if i is None:
                continue
            df.at[i, "must_visit"] = True
            tz, te = row.type_zh or row.problem_type or "", row.type_en or row.problem_type or ""
            if row.kind == "overdue":
                d = pd.Timestamp(row.deadline).strftime("%Y-%m-%d %H:%M")
                df.at[i, "reasons"].append({"kind": "overdue",
                                            "zh": f"超期未整改：问题 #{row.event_id}（{tz}）期限 {d}",
                                            "en": f"overdue: problem #{row.event_id} ({te}) due {d}"})
            else:
                d = pd.Timestamp(row.closed_at).strftime("%Y-%m-%d")
                df.at[i, "reasons"].append({"kind": "recheck",
                                            "zh": f"回头看：问题 #{row.event_id}（{tz}）{d} 结案后未复查",
                                            "en": f"re-check (回头看): problem #{row.event_id} ({te}) closed {d}, "
                                                  "not inspected since"})
    df["coverage"] = False
    uncovered: list[str] = []
    if coverage_days is not None:
        visits = store.sql(_GRID_VISITS_SQL, {"day": day})
        last = {g: (np.inf if pd.isna(d) else float(d)) for g, d in zip(visits["grid_code"], visits["days"],
                                                                         strict=True)}
        df["prize"] = df["risk"]
        df = apply_coverage(df, last, max_days=int(coverage_days))
        # grids due for a visit that have no active site to send an inspector to: the plan cannot cover them
        in_area = store.sql("SELECT code FROM grids" + (" WHERE ? IN (code, community_code, street_code, "
                                                        "district_code)" if area else ""),
                            [str(area)] if area else None)["code"]
        due = {g for g in in_area if last.get(g, np.inf) >= int(coverage_days)}
        uncovered = sorted(due - set(df["grid_code"].dropna()))
        for i in np.flatnonzero(df["coverage"].to_numpy()):
            d = last.get(df.at[i, "grid_code"], np.inf)
            zh = "从未巡查" if np.isinf(d) else f"已 {d:.0f} 天未巡查"
            en = "never inspected" if np.isinf(d) else f"last inspected {d:.0f} days ago"
            df.at[i, "reasons"].append({"kind": "coverage",
                                        "zh": f"网格覆盖：网格 {df.at[i, 'grid_code']} {zh}"
                                              f"（规则：不超过 {coverage_days} 天）",
                                        "en": f"coverage: grid {df.at[i, 'grid_code']} {en} (rule: at most "
                                              f"{coverage_days} days)"})
    if len(exclude):
        df = df[~df["site_id"].isin(list(exclude))]
    top = df[~df["must_visit"] & (df["risk"] > 0)].sort_values("risk", ascending=False, kind="stable")
    keep = df["must_visit"] | df.index.isin(top.index[:max_candidates])
    df = df[keep].reset_index(drop=True)
    df["prize"] = df["risk"]
    df.attrs["coverage_without_sites"] = uncovered
    rules = CATEGORY_WINDOWS if windows is None else windows
    win = [rules.get(c) for c in df["category_code"]]
    df["tw_from"] = [w[0] if w else None for w in win]
    df["tw_to"] = [w[1] if w else None for w in win]
    for i, w in enumerate(win):
        if w:
            df.at[i, "reasons"].append({"kind": "window", "zh": f"时间窗 {w[0]}–{w[1]}（{w[2]}）",
                                        "en": f"time window {w[0]}–{w[1]} ({w[3]})"})
    df = df.drop(columns=["reason_zh", "reason_en"])
    out = gpd.GeoDataFrame(df, geometry=gpd.points_from_xy(df["lng"], df["lat"]), crs="EPSG:4326")
    out.attrs["risk_model"] = model
    return out


# ---------------------------------------------------------------------------------------------- a day's plan


def parse_inspectors(inspectors: Sequence[Mapping | Inspector], *, date, crs: str | None = None
                     ) -> list[Inspector]:
    """Inspectors from request or file rows, their shift starts placed on ``date``.

    Each row has ``name``, the start as ``start_lng``/``start_lat`` or ``start: [lng, lat]``, optionally the end
    (default the start), ``shift_start`` (``"08:30"`` on ``date``, or a full date-time; default 09:00),
    ``shift_minutes`` (or ``shift_hours``; default 240) and ``mode`` (walk, bike or car; default walk).
    Coordinates in ``crs`` (``gcj02``, ``bd09``, …) are converted to WGS84 with :func:`geo.coords.to_wgs84`.
    """
    from civicgrid.geo.coords import to_wgs84

    day = _day(date)
    out: list[Inspector] = []
    for n, row in enumerate(inspectors, start=1):
        if isinstance(row, Inspector):
            out.append(row)
            continue
        r = {k: v for k, v in dict(row).items() if v is not None and not (isinstance(v, float) and math.isnan(v))
             and not (isinstance(v, str) and not v.strip())}
        where = f"inspector {n} ({r.get('name', 'no name')})"
        if "name" not in r:
            msg = f"{where}: name is missing"
            raise InvalidParameterError(msg)
        pts = {}
        for end in ("start", "end"):
            if end in r:
                try:
                    pts[end] = (float(r[end][0]), float(r[end][1]))
                except (TypeError, ValueError, IndexError, KeyError):
                    msg = f"{where}: {end} must be [lng, lat], got {r[end]!r}"
                    raise InvalidParameterError(msg) from None
            elif f"{end}_lng" in r and f"{end}_lat" in r:
                try:
                    pts[end] = (float(r[f"{end}_lng"]), float(r[f"{end}_lat"]))
                except (TypeError, ValueError):
                    msg = f"{where}: {end}_lng/{end}_lat must be numbers"
                    raise InvalidParameterError(msg) from None
        if "start" not in pts:
            msg = f"{where}: start is missing (start_lng and start_lat, or start: [lng, lat])"
            raise InvalidParameterError(msg)
        pts.setdefault("end", pts["start"])
        for end, (x, y) in pts.items():
            if not (-180 <= x <= 180 and -90 <= y <= 90) or (abs(y) > abs(x) > 0 and abs(x) <= 90 < abs(y)):
                msg = f"{where}: {end} ({x}, {y}) is not a lng, lat pair"
                raise InvalidParameterError(msg)
        if crs and crs.lower() not in ("wgs84", "epsg:4326", "4326"):
            xs, ys = to_wgs84([pts["start"][0], pts["end"][0]], [pts["start"][1], pts["end"][1]], crs)
            pts = {"start": (float(xs[0]), float(ys[0])), "end": (float(xs[1]), float(ys[1]))}
        start = r.get("shift_start", "09:00")
        try:
            if isinstance(start, datetime):
                begin = start
            elif isinstance(start, str) and len(start.strip()) <= 5 and ":" in start:
                begin = day + timedelta(minutes=_hhmm(start.strip()))
            else:
                begin = pd.Timestamp(start).to_pydatetime()
        except (ValueError, TypeError):
            msg = f"{where}: shift_start must be HH:MM or a date-time, got {start!r}"
            raise InvalidParameterError(msg) from None
        try:
            minutes = (float(r["shift_minutes"]) if "shift_minutes" in r
                       else float(r["shift_hours"]) * 60 if "shift_hours" in r else 240.0)
        except (TypeError, ValueError):
            msg = f"{where}: shift_minutes must be a number"
            raise InvalidParameterError(msg) from None
        out.append(Inspector(name=str(r["name"]), start_lng=pts["start"][0], start_lat=pts["start"][1],
                             end_lng=pts["end"][0], end_lat=pts["end"][1], shift_start=begin,
                             shift_minutes=minutes, mode=str(r.get("mode", "walk")).strip().lower()))
    return as_inspectors(out)


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.replace(microsecond=0).isoformat(timespec="minutes")


def _clean(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    if hasattr(v, "item"):
        return v.item()
    return v


def plan_day(store, inspectors: Sequence[Mapping | Inspector], *, date, area: str | None = None,
             coverage_days: int | None = None, rechecks: bool = True, max_candidates: int = MAX_CANDIDATES,
             network: RoadNetwork | None = None, solver: str | None = None, time_limit_s: float = 10.0,
             seed: int = 0, must_visit: Sequence = (), exclude: Sequence = (), crs: str | None = None,
             lang: str = "zh") -> dict:
    """Plan a day's patrols from the store: candidates, must-visits, windows, routes, reasons.

    Parameters
    ----------
    store
        The database.
    inspectors
        Rows for :func:`parse_inspectors` (or :class:`Inspector` objects).
    date
        The patrol day (data before it is used for risk, re-checks and coverage).
    area, coverage_days, rechecks, max_candidates, must_visit, exclude
        See :func:`patrol_candidates`.
    network
        Road network for travel times; default straight line × :data:`~sites.network.DETOUR_FACTOR`.
    solver
        ``"pyvrp"`` or ``"ortools"`` (default :data:`DEFAULT_SOLVER`).
    time_limit_s
        Solver time limit; the best plan found by then is returned.
    seed
        Solver seed.
    crs
        System of the inspectors' coordinates (``wgs84`` default, ``gcj02``, ``bd09``).
    lang
        Language of each stop's ``reason`` text (``zh`` or ``en``; both are kept in ``reasons``).

    Returns
    -------
    dict
        The plan document (JSON-ready): ``date, created_at, solver, travel_source, risk_model, params, totals,
        routes`` (per inspector: ``inspector, mode, shift_start, shift_minutes, start, end, stops`` with ``seq,
        site_id, name, category_code, category, lng, lat, grid_code, arrival, start_time, departure,
        arrival_min, travel_min, wait_min, service_min, risk, must_visit, reason, reasons, components``, and the
        route totals), ``unvisited_must`` (site, reason) and ``notes``.
    """
    solver = solver or DEFAULT_SOLVER
    if lang not in ("zh", "en"):
        msg = f"lang must be zh or en, got {lang!r}"
        raise InvalidParameterError(msg)
    day = _day(date)
    insp = parse_inspectors(inspectors, date=day, crs=crs)
    cand = patrol_candidates(store, date=day, area=area, coverage_days=coverage_days, rechecks=rechecks,
                             max_candidates=max_candidates, must_visit=must_visit, exclude=exclude)
    t0 = min(i.shift_start for i in insp)
    base = (t0 - day).total_seconds() / 60
    frame = pd.DataFrame(cand.drop(columns="geometry"))
    frame["tw_start_min"] = [np.nan if not isinstance(a, str) else _hhmm(a) - base for a in frame["tw_from"]]
    frame["tw_end_min"] = [np.nan if not isinstance(b, str) else _hhmm(b) - base for b in frame["tw_to"]]
    plan = plan_patrols(frame, insp, network=network, solver=solver, time_limit_s=time_limit_s, seed=seed)
    params = {"date": day.date().isoformat(), "area": area, "coverage_days": coverage_days, "rechecks": rechecks,
              "max_candidates": max_candidates, "solver": solver, "time_limit_s": time_limit_s, "seed": seed,
              "must_visit": [_clean(s) for s in must_visit], "exclude": [_clean(s) for s in exclude],
              "lang": lang, "inspectors": [{"name": i.name, "start": [i.start_lng, i.start_lat],
                                            "end": [i.end_lng, i.end_lat], "shift_start": _iso(i.shift_start),
                                            "shift_minutes": i.shift_minutes, "mode": i.mode} for i in insp]}
    doc = plan_document(plan, frame, insp, params=params, lang=lang)
    doc["risk_model"] = cand.attrs.get("risk_model")
    doc["timezone"] = store.meta("timezone") or "Asia/Shanghai"
    doc["candidates"] = {"sites": len(frame), "must_visit": int(frame["must_visit"].sum()),
                         "coverage": int(frame["coverage"].sum()) if "coverage" in frame else 0}
    uncovered = cand.attrs.get("coverage_without_sites") or []
    if uncovered:
        shown = "、".join(uncovered[:5]) if lang == "zh" else ", ".join(uncovered[:5])
        more = "" if len(uncovered) <= 5 else (f" 等 {len(uncovered)} 个" if lang == "zh" else
                                               f" and {len(uncovered) - 5} more")
        doc["notes"].append(
            f"{len(uncovered)} 个网格超过 {coverage_days} 天未巡查，但没有在用的样本框点位，无法安排：{shown}{more}"
            if lang == "zh" else
            f"{len(uncovered)} grids are due for a visit (no inspection in {coverage_days} days) but have no active "
            f"site to visit: {shown}{more}")
    return doc


def plan_document(plan: PatrolPlan, candidates: pd.DataFrame, inspectors: Sequence[Inspector], *,
                  params: Mapping | None = None, lang: str = "zh") -> dict:
    """The JSON-ready document of a plan (see :func:`plan_day`), stops joined with their candidate rows."""
    cand = candidates.reset_index(drop=True)
    pos = {sid: i for i, sid in enumerate(cand["site_id"])}
    insp = {i.name: i for i in inspectors}

    def col(i: int, name: str, default=None):
        return _clean(cand.at[i, name]) if name in cand.columns else default

    routes = []
    for r in plan.routes:
        ins = insp[r.inspector]
        stops = []
        for seq, s in enumerate(r.stops, start=1):
            i = pos[s.site_id]
            reasons = list(col(i, "reasons", None) or [])
            if not reasons:
                reasons = [{"kind": "risk", "zh": f"风险 {s.prize:.2f}", "en": f"risk {s.prize:.2f}"}]
            begin = None if ins.shift_start is None else ins.shift_start + timedelta(minutes=s.start_min)
            stops.append({
                "seq": seq, "site_id": _clean(s.site_id), "name": col(i, "name"), "address": col(i, "address"),
                "category_code": col(i, "category_code"),
                "category": col(i, "category_zh" if lang == "zh" else "category_en"),
                "category_zh": col(i, "category_zh"), "category_en": col(i, "category_en"),
                "grid_code": col(i, "grid_code"), "lng": float(cand.at[i, "lng"]), "lat": float(cand.at[i, "lat"]),
                "arrival": _iso(s.arrival), "start_time": _iso(begin),
                "departure": _iso(None if begin is None else begin + timedelta(minutes=s.service_min)),
                "arrival_min": round(s.arrival_min, 2), "travel_min": round(s.travel_min, 2),
                "wait_min": round(s.wait_min, 2), "service_min": round(s.service_min, 2),
                "risk": round(float(col(i, "risk", s.prize)), 4), "must_visit": bool(s.must_visit),
                "tw_from": col(i, "tw_from"), "tw_to": col(i, "tw_to"),
                "reason": "；".join(x[lang] for x in reasons) if lang == "zh" else "; ".join(x[lang] for x in reasons),
                "reasons": reasons, "components": col(i, "components", None) or {},
            })
        routes.append({
            "inspector": r.inspector, "mode": r.mode, "shift_start": _iso(r.shift_start),
            "shift_minutes": r.shift_minutes, "start": [ins.start_lng, ins.start_lat],
            "end": [ins.end_lng, ins.end_lat], "end_time": _iso(r.end_time), "stops": stops,
            "return_travel_min": round(r.return_travel_min, 2),
            "totals": {"stops": len(stops), "risk": round(sum(x["risk"] for x in stops), 4),
                       "travel_min": round(r.travel_min, 1), "service_min": round(r.service_min, 1),
                       "wait_min": round(r.wait_min, 1), "shift_used_min": round(r.shift_used_min, 1)},
        })
    unvisited = []
    for u in plan.unvisited_must:
        i = pos[u.site_id]
        unvisited.append({"site_id": _clean(u.site_id), "name": col(i, "name"),
                          "reason": u.reason_zh if lang == "zh" and u.reason_zh else u.reason,
                          "reason_en": u.reason, "reason_zh": u.reason_zh or u.reason,
                          "must_reasons": [x for x in (col(i, "reasons", None) or []) if x["kind"] != "risk"]})
    return {
        "plan_id": None, "created_at": datetime.now().replace(microsecond=0).isoformat(),
        "date": (params or {}).get("date"),
        "solver": plan.solver, "travel_source": plan.travel_source, "solve_seconds": round(plan.solve_seconds, 3),
        "objective": plan.objective, "params": dict(params or {}),
        "totals": {"inspectors": len(routes), "stops": sum(len(r["stops"]) for r in routes),
                   "risk": round(sum(r["totals"]["risk"] for r in routes), 4),
                   "must_visits": sum(s["must_visit"] for r in routes for s in r["stops"]),
                   "travel_min": round(plan.total_travel_min, 1),
                   "service_min": round(sum(r.service_min for r in plan.routes), 1),
                   "shift_used_min": round(plan.total_shift_used_min, 1)},
        "routes": routes, "unvisited_must": unvisited, "notes": list(plan.notes),
    }


# ---------------------------------------------------------------------------------------------- stored plans


def save_plan(db, doc: dict) -> str:
    """Store a plan document in the database (one atomic write) and return its new ``plan_id``.

    Parameters
    ----------
    db
        Database file path (or a :class:`geo.store.Store`).
    doc
        A document of :func:`plan_day`; its ``plan_id`` is set.
    """
    import json
    import uuid

    from civicgrid.geo.schema import _V4
    from civicgrid.geo.store import writing

    path = getattr(db, "path", db)
    plan_id = uuid.uuid4().hex[:12]
    doc["plan_id"] = plan_id
    created = pd.Timestamp(doc.get("created_at") or datetime.now()).to_pydatetime()
    with writing(path) as con:
        for statement in _V4:          # a file already at version 4 from before the table existed
            con.execute(statement)
        con.execute("INSERT INTO patrol_plans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [plan_id, created, doc.get("date"), doc.get("solver"), doc.get("travel_source"),
                     doc["totals"]["inspectors"], doc["totals"]["stops"], doc["totals"]["risk"],
                     json.dumps(doc.get("params", {}), ensure_ascii=False), json.dumps(doc, ensure_ascii=False)])
    return plan_id


def load_plan(store, plan_id: str) -> dict:
    """A stored plan document by id; :class:`~geo.errors.NotFoundError` naming the latest ids otherwise."""
    import json

    from civicgrid.geo.errors import NotFoundError

    has = store.sql("SELECT count(*) AS n FROM information_schema.tables WHERE table_name = 'patrol_plans' "
                    "AND table_catalog = current_database()")["n"].iloc[0]
    row = store.sql("SELECT plan_json FROM patrol_plans WHERE plan_id = ?", [str(plan_id)]) if has else None
    if row is None or row.empty:
        latest = list_plans(store, limit=5)["plan_id"].tolist() if has else []
        msg = f"no patrol plan {plan_id!r}; latest: {', '.join(latest) if latest else 'none stored'}"
        raise NotFoundError(msg)
    return json.loads(row["plan_json"].iloc[0])


def list_plans(store, *, limit: int = 50) -> pd.DataFrame:
    """Stored plans, newest first: ``plan_id, created_at, plan_date, solver, travel_source, inspectors, stops,
    total_risk``."""
    has = store.sql("SELECT count(*) AS n FROM information_schema.tables WHERE table_name = 'patrol_plans' "
                    "AND table_catalog = current_database()")["n"].iloc[0]
    cols = "plan_id, created_at, plan_date, solver, travel_source, inspectors, stops, total_risk"
    if not has:
        return pd.DataFrame(columns=cols.split(", "))
    return store.sql(f"SELECT {cols} FROM patrol_plans ORDER BY created_at DESC, plan_id LIMIT ?", [int(limit)])
