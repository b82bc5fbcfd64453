"""Prize-collecting patrol routes for inspectors."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from sites.network import DETOUR_FACTOR, SPEEDS_KMH, RoadNetwork, straight_line_minutes

#: Default minutes on site when ``service_min`` is missing.
DEFAULT_SERVICE_MIN = 12.0

#: Solver time unit: one second. Travel and service minutes are rounded *up* and time-window ends and shift
#: ends *down* to whole seconds, so a route the solver finds feasible is feasible in real (float) minutes.
UNIT_PER_MIN = 60

SOLVERS = ("pyvrp", "ortools")
_ORTOOLS_EXTRA: dict = {}

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
            raise ValueError(msg)
        if not self.shift_minutes > 0:
            msg = f"inspector {self.name!r}: shift_minutes must be positive, got {self.shift_minutes}"
            raise ValueError(msg)


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
    """A must-visit site left out of the plan, with the reason."""

    site_id: object
    reason: str


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
        raise ValueError(msg)
    names = [i.name for i in out]
    if len(set(names)) != len(names):
        msg = f"inspector names must be unique, got {names}"
        raise ValueError(msg)
    return out


def prepare_candidates(candidates: pd.DataFrame) -> pd.DataFrame:
    """Candidates with defaults filled in and checked.

    Adds ``service_min`` (12), ``must_visit`` (False), ``tw_start_min`` and ``tw_end_min`` (NaN) when missing.
    """
    missing = [c for c in ("site_id", "lng", "lat", "prize") if c not in candidates.columns]
    if missing:
        msg = f"candidates need columns {missing}"
        raise ValueError(msg)
    df = candidates.reset_index(drop=True).copy()
    if df["site_id"].duplicated().any():
        msg = f"duplicate site_id in candidates: {df.loc[df['site_id'].duplicated(), 'site_id'].tolist()[:5]}"
        raise ValueError(msg)
    for col in ("lng", "lat", "prize"):
        df[col] = pd.to_numeric(df[col], errors="raise").astype("float64")
    if df[["lng", "lat"]].isna().any().any():
        msg = "candidates with missing lng/lat"
        raise ValueError(msg)
    if (df["prize"].isna() | (df["prize"] < 0)).any():
        msg = "prize must be a number >= 0"
        raise ValueError(msg)
    df["service_min"] = (pd.to_numeric(df["service_min"], errors="raise").fillna(DEFAULT_SERVICE_MIN)
                         if "service_min" in df else DEFAULT_SERVICE_MIN)
    df["must_visit"] = df["must_visit"].fillna(False).astype(bool) if "must_visit" in df else False
    for col in ("tw_start_min", "tw_end_min"):
        df[col] = pd.to_numeric(df[col], errors="raise").astype("float64") if col in df else np.nan
    if (df["service_min"] < 0).any():
        msg = "service_min must be >= 0"
        raise ValueError(msg)
    bad = df["tw_start_min"] > df["tw_end_min"]
    if bad.any():
        msg = f"time window starts after it ends for sites {df.loc[bad, 'site_id'].tolist()[:5]}"
        raise ValueError(msg)
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
    if network is not None:
        return {m: network.travel_minutes(lng, lat, mode=m) for m in modes}, network.source
    return ({m: straight_line_minutes(lng, lat, mode=m, detour=detour) for m in modes},
            f"straight line × {detour:g}")


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
            raise ValueError(msg)
    else:
        mat = np.asarray(travel, dtype="float64")
        out = {m: mat for m in modes}
    for m, mat in out.items():
        if mat.shape != (n, n):
            msg = (f"travel matrix for {m} has shape {mat.shape}; expected ({n}, {n}) over [start_0, end_0, ..., "
                   f"sites...] for {len(insp)} inspectors and {len(candidates)} sites")
            raise ValueError(msg)
        if not np.isfinite(mat).all() or (mat < 0).any():
            msg = f"travel matrix for {m} has negative, NaN or infinite minutes"
            raise ValueError(msg)
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
                          wait_min=float(begin - arrival), start_min=float(begin - off), service_min=float(row["service_min"]),
                          prize=float(row["prize"]), must_visit=bool(row["must_visit"]),
                          arrival=None if ins.shift_start is None else ins.shift_start + timedelta(
                              minutes=arrival - off)))
        t = begin + float(row["service_min"])
        prev = m2 + j
    back = float(mat[prev, 2 * k + 1]) if order else 0.0
    return Route(inspector=ins.name, mode=ins.mode, stops=stops, return_travel_min=back,
                 end_min=float(t + back - off) if order else 0.0, shift_minutes=float(ins.shift_minutes),
                 shift_start=ins.shift_start)


def _solo_fit(j: int, cand: pd.DataFrame, insp: list[Inspector], mats: dict[str, np.ndarray],
              offsets: np.ndarray) -> tuple[bool, str]:
    """Whether some inspector can visit site j alone (start → j → end); if not, why, for the closest one."""
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
            return True, ""
        key = (go, k)
        if best is None or key < best[0]:
            if begin > twe + TOLERANCE_MIN:
                why = (f"cannot fit: its time window closes at minute {twe:g} but the nearest inspector "
                       f"{ins.name} ({ins.mode}) needs {go:.0f} min travel and arrives at minute {arrival:.0f} "
                       f"at the earliest")
            else:
                why = (f"cannot fit: nearest inspector {ins.name} ({ins.mode}) needs {go:.0f} min travel + "
                       f"{serv:.0f} min service + {back:.0f} min back"
                       + (f" (after waiting until minute {tws:g})" if begin > arrival + TOLERANCE_MIN else "")
                       + f", shift has {ins.shift_minutes:.0f} min")
            best = (key, why)
    return False, best[1]


def _dropped_reason(j: int, routes: list[Route], cand: pd.DataFrame, insp: list[Inspector],
                    mats: dict[str, np.ndarray]) -> str:
    """Why a must-visit that fits alone was left out: cheapest extra time against the time left per route."""
    m2 = 2 * len(insp)
    serv = float(cand.iloc[j]["service_min"])
    sid_pos = {sid: i for i, sid in enumerate(cand["site_id"])}
    best = None
    for k, (ins, r) in enumerate(zip(insp, routes, strict=True)):
        mat = mats[ins.mode]
        seq = [2 * k] + [m2 + sid_pos[s.site_id] for s in r.stops] + [2 * k + 1]
        extra = min(mat[a, m2 + j] + serv + mat[m2 + j, b] - mat[a, b] for a, b in zip(seq[:-1], seq[1:]))
        left = ins.shift_minutes - (r.end_min if r.stops else 0.0)
        if best is None or extra - left < best[0]:
            best = (extra - left, f"does not fit together with the other must-visit sites: the cheapest insertion "
                                  f"(into {ins.name}'s route) needs {extra:.0f} min more travel + service, the "
                                  f"route has {left:.0f} min of shift left")
    return best[1]


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
        scale = min(100.0 * travel_bound / pmin, 1e14 / max(prize.sum(), 1e-9) / max(len(prize), 1))
        travel_weight = UNIT_PER_MIN / scale
    else:
        if travel_weight <= 0:
            msg = f"travel_weight must be positive, got {travel_weight}"
            raise ValueError(msg)
        scale = UNIT_PER_MIN / travel_weight
    prize_int = np.round(prize * scale).astype(np.int64)
    big = int(prize_int[~required].sum()) + travel_bound + 1
    return _Model(cand=cand, insp=insp, mats=mats, offsets=offsets, sites=sites, required=required,
                  prize_int=prize_int, big_prize=big, dur=dur, service=service, tw_early=tw_early,
                  tw_late=tw_late, shift_start=shift_start, shift_end=shift_end, travel_weight=travel_weight)


def _solve_pyvrp(mod: _Model, *, time_limit_s: float, seed: int, soft_must: bool) -> list[list[int]] | None:
    import pyvrp
    from pyvrp import Client, Depot, Location, ProblemData, VehicleType
    from pyvrp.exceptions import PenaltyBoundWarning
    from pyvrp.PenaltyManager import PenaltyParams
    from pyvrp.stop import MaxRuntime

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
        prize = mod.big_prize if (mod.required[i] and soft_must) else int(mod.prize_int[i])
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
        res = pyvrp.solve(data, stop=MaxRuntime(time_limit_s), seed=seed, display=False, collect_stats=False,
                          params=params)
    best = res.best
    if not best.is_feasible():
        return None
    routes: list[list[int]] = [[] for _ in insp]
    for r in best.routes():
        routes[r.vehicle_type()] = [a.idx for a in r.schedule() if a.is_client()]  # client index
    return routes


def _solve_ortools(mod: _Model, *, time_limit_s: float, seed: int, soft_must: bool) -> list[list[int]] | None:
    from ortools.constraint_solver import pywrapcp, routing_enums_pb2

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
                routing.AddDisjunction([idx], mod.big_prize)
        else:
            routing.AddDisjunction([idx], int(mod.prize_int[i]))
    params = pywrapcp.DefaultRoutingSearchParameters()
    params.first_solution_strategy = routing_enums_pb2.FirstSolutionStrategy.PARALLEL_CHEAPEST_INSERTION
    params.local_search_metaheuristic = routing_enums_pb2.LocalSearchMetaheuristic.GUIDED_LOCAL_SEARCH
    params.time_limit.FromMilliseconds(max(1, int(time_limit_s * 1000)))
    for k, v in _ORTOOLS_EXTRA.items():
        setattr(params, k, v)
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


def plan_patrols(candidates: pd.DataFrame, inspectors: Sequence[Inspector | Mapping], *,
                 travel_minutes: TravelInput | None = None, network: RoadNetwork | None = None,
                 time_limit_s: float = 5.0, solver: str = "pyvrp", seed: int = 0,
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
        ``"pyvrp"`` (hybrid genetic search / iterated local search) or ``"ortools"`` (routing library, parallel
        cheapest insertion then guided local search).
    seed
        Random seed (PyVRP; OR-Tools' routing search is deterministic).
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
    out and reported in ``unvisited_must`` with the numbers. PyVRP gets the others as required clients; when
    they cannot all fit together, and always with OR-Tools, they are optional with a prize larger than all other
    prizes and travel together, so the solver leaves out as few as it can; those left out are reported.
    Optional sites with prize 0, and sites no inspector can fit alone, are not given to the solver.
    """
    if solver not in SOLVERS:
        msg = f"unknown solver {solver!r}; expected one of {SOLVERS}"
        raise ValueError(msg)
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
    usable = []
    for j in range(len(cand)):
        must = bool(cand.at[j, "must_visit"])
        if not must and cand.at[j, "prize"] <= 0:
            continue
        ok, why = _solo_fit(j, cand, insp, mats, offsets)
        if ok:
            usable.append(j)
        elif must:
            unvisited[j] = why
    sites = np.array(usable, dtype=np.int64)
    orders: list[list[int]] = [[] for _ in insp]
    travel_weight_used = travel_weight if travel_weight is not None else 0.0
    if len(sites):
        mod = _build(cand, insp, mats, offsets, sites, travel_weight)
        travel_weight_used = mod.travel_weight
        run = _solve_pyvrp if solver == "pyvrp" else _solve_ortools
        soft = solver == "ortools"
        found = run(mod, time_limit_s=time_limit_s, seed=seed, soft_must=soft)
        if found is None and not soft:
            notes.append("the must-visit sites do not all fit together; solved again with them optional "
                         "(each worth more than all other sites)")
            found = run(mod, time_limit_s=time_limit_s, seed=seed, soft_must=True)
        if found is None:
            msg = f"{solver} found no feasible plan in {time_limit_s} s; raise time_limit_s"
            raise RuntimeError(msg)
        orders = [[int(sites[i]) for i in order] for order in found]
    routes = [_schedule(order, k, cand, insp, mats, offsets) for k, order in enumerate(orders)]
    planned = {j for order in orders for j in order}
    for j in np.flatnonzero(cand["must_visit"].to_numpy()):
        if j not in planned and j not in unvisited:
            unvisited[j] = _dropped_reason(j, routes, cand, insp, mats)
    prize = sum(r.prize for r in routes)
    travel = sum(r.travel_min for r in routes)
    return PatrolPlan(routes=routes,
                      unvisited_must=[UnvisitedMust(cand.at[j, "site_id"], why) for j, why in sorted(unvisited.items())],
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
        raise ValueError(msg)
    if max_days < 0:
        msg = f"max_days must be >= 0, got {max_days}"
        raise ValueError(msg)
    df = candidates.copy()
    df["must_visit"] = df["must_visit"].fillna(False).astype(bool) if "must_visit" in df else False
    df["coverage"] = False
    days = df["grid_code"].map(lambda g: last_visit_days_by_grid.get(g, math.inf))
    stale = df["grid_code"].notna() & (days >= max_days)
    if boost is not None:
        if boost <= 1:
            msg = f"boost must be > 1, got {boost}"
            raise ValueError(msg)
        df.loc[stale, "prize"] = df.loc[stale, "prize"] * boost
    covered = set(df.loc[df["must_visit"], "grid_code"])
    pick = (df[stale & ~df["grid_code"].isin(covered)]
            .sort_values("prize", ascending=False, kind="stable")   # stable: input order breaks ties
            .drop_duplicates("grid_code"))
    df.loc[pick.index, "must_visit"] = True
    df.loc[pick.index, "coverage"] = True
    return df
