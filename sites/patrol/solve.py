"""Prize-collecting patrol routes: choose and order each inspector's sites (:func:`plan_patrols`) and check a plan
independently of the solver (:func:`check_plan`)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from itertools import pairwise

import numpy as np
import pandas as pd
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.texts import LANGS, bilingual, labels, text
from civicgrid.sites.patrol._solvers import (
    Model,
    build_model,
    greedy_routes,
    must_and_prize,
    solve_ortools,
    solve_pyvrp,
)
from civicgrid.sites.patrol.model import (
    Inspector,
    PatrolPlan,
    Route,
    Stop,
    UnvisitedMust,
    as_inspectors,
    prepare_candidates,
)
from civicgrid.sites.patrol.network import RoadNetwork
from civicgrid.sites.patrol.travel import TravelInput, as_matrices, travel_matrices

SOLVERS = ("pyvrp", "ortools")

#: Solver used when none is named (see bench/RESULTS.md, "Patrol planning").
DEFAULT_SOLVER = "pyvrp"

#: Largest share of the time limit spent first on the must-visits alone (see :func:`plan_patrols`).
MUST_PHASE_SHARE = 0.3

#: Tolerance (minutes) of :func:`check_plan`.
TOLERANCE_MIN = 1e-6


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


def _when(minute: float, insp: list[Inspector], lang: str) -> str:
    """A minute from the earliest shift start as text: ``16:00`` when shift starts are known."""
    starts = [i.shift_start for i in insp]
    if any(s is None for s in starts):
        return text("patrol.unfit.at_minute", lang, minute=minute)
    return (min(starts) + timedelta(minutes=float(minute))).strftime("%H:%M")


def _shift_text(ins: Inspector, lang: str) -> str:
    """An inspector's shift as text: ``08:30–11:30 (180 min)`` when its start is known."""
    if ins.shift_start is None:
        return text("patrol.unfit.shift", lang, minutes=ins.shift_minutes)
    a, b = ins.shift_start, ins.shift_start + timedelta(minutes=ins.shift_minutes)
    return text("patrol.unfit.shift_span", lang, span=f"{a:%H:%M}–{b:%H:%M}", minutes=ins.shift_minutes)


def _unfit_text(key: str, ins: Inspector, lang: str, **fields) -> str:
    """A ``[patrol.unfit]`` reason naming the inspector and their mode of travel."""
    return text(f"patrol.unfit.{key}", lang, name=ins.name, mode=labels("patrol.mode", lang).get(ins.mode, ins.mode),
                **fields)


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
            if begin > twe + TOLERANCE_MIN:
                why = {lang: _unfit_text("window_closed", ins, lang, close=_when(twe, insp, lang), travel=go,
                                         arrival=_when(round(arrival), insp, lang)) for lang in LANGS}
            else:
                waits = begin > arrival + TOLERANCE_MIN
                why = {lang: _unfit_text("too_far", ins, lang, travel=go, service=serv, back=back,
                                         wait=text("patrol.unfit.wait", lang, open=_when(tws, insp, lang))
                                         if waits else "", shift=_shift_text(ins, lang)) for lang in LANGS}
            best = (key, (why["en"], why["zh"]))
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
            why = bilingual("patrol.unfit.crowded", name=ins.name, extra=extra, left=left)
            best = (extra - left, why["en"], why["zh"])
    return best[1], best[2]


def unfit_sites(candidates: pd.DataFrame, inspectors: Sequence[Inspector | Mapping], *,
                network: RoadNetwork | None = None) -> dict:
    """The sites no inspector can visit even alone (start → site → end within the shift and the site's window),
    each with the reason for the closest inspector: ``{site_id: {"en": ..., "zh": ...}}``."""
    cand = prepare_candidates(candidates)
    insp = as_inspectors(inspectors)
    mats, _ = travel_matrices(cand, insp, network=network)
    offsets = _offsets(insp)
    fits = _fits_alone(cand, insp, mats, offsets)
    out = {}
    for j in np.flatnonzero(~fits):
        en, zh = _solo_fit(int(j), cand, insp, mats, offsets)[1]
        out[cand.at[j, "site_id"]] = {"en": en, "zh": zh}
    return out


# ---------------------------------------------------------------------------------------------- plans


# Long for its docstring (the whole contract of the solvers, about 60 lines); the body is about 40 lines of steps.
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
        built from ``network`` or, without one, straight line ×
        :data:`~civicgrid.sites.patrol.network.DETOUR_FACTOR`.
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
        mats, source = as_matrices(travel_minutes, cand, insp), travel_source or "given matrix"
    offsets = _offsets(insp)
    notes: list[str] = []
    unvisited: dict[int, tuple[str, str]] = {}
    must = cand["must_visit"].to_numpy(bool)
    fits = _fits_alone(cand, insp, mats, offsets)
    for j in np.flatnonzero(must & ~fits):
        unvisited[int(j)] = _solo_fit(int(j), cand, insp, mats, offsets)[1]
    sites = np.flatnonzero(fits & (must | (cand["prize"].to_numpy() > 0))).astype(np.int64)
    orders: list[list[int]] = [[] for _ in insp]
    travel_weight_used = travel_weight if travel_weight is not None else 0.0
    if len(sites):
        mod = build_model(cand, insp, mats, offsets, sites, travel_weight)
        travel_weight_used = mod.travel_weight
        found = _solve_model(mod, solver=solver, time_limit_s=time_limit_s, seed=seed, cpu_time=cpu_time,
                             travel_weight=travel_weight, notes=notes)
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


def _solve_model(mod: Model, *, solver: str, time_limit_s: float, seed: int, cpu_time: bool,
                 travel_weight: float | None, notes: list[str]) -> list[list[int]]:
    """Routes over the model's sites: must-visits first (phase 1), then the whole problem; greedy when the solver
    finds nothing (noted in ``notes``)."""
    run = solve_pyvrp if solver == "pyvrp" else solve_ortools
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
        first = run(build_model(mod.cand, mod.insp, mod.mats, mod.offsets, mod.sites[sub], travel_weight),
                    time_limit_s=MUST_PHASE_SHARE * time_limit_s, seed=seed, soft_must=True, cpu_time=cpu_time,
                    until_all=True)
        if first is not None:
            initial = [[int(sub[i]) for i in order] for order in first]
        left = max(time_limit_s - (clock() - t1), 0.1 * time_limit_s)
    all_fit = initial is not None and sum(map(len, initial)) == int(mod.required.sum())
    found = run(mod, time_limit_s=left, seed=seed, soft_must=True, cpu_time=cpu_time,
                initial=None if all_fit else initial)
    if initial is not None and (found is None or must_and_prize(mod, found) < must_and_prize(mod, initial)):
        found = initial
    if found is None:
        notes.append(f"{solver} found no feasible plan within {time_limit_s:g} s; the plan is a greedy "
                     "insertion instead (raise the time limit)")
        found = greedy_routes(mod)
    return found


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
    mats = as_matrices(plan.travel_minutes if travel_minutes is None else travel_minutes, cand, insp)
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
