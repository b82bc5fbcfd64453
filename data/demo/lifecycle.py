"""How a demo problem is handled: deadline, rectification, closure, rework; and how problems build up at a site."""

from __future__ import annotations

import numpy as np
from civicgrid.data.demo.calendar import DAY_S, END, START, deadlines

#: Share of stuck (long-overdue) problems that are never closed; the others are escalated and closed
#: on average :data:`ESCALATION_DAYS` days after their deadline (at least 14).
STUCK_FOR_GOOD = 0.15
ESCALATION_DAYS = 45.0

#: Problems build up at a site between inspections: a visit finds ``ACCUMULATION_FLOOR`` of the site's rate
#: right after the previous one, rising toward ``ACCUMULATION_FLOOR + ACCUMULATION_RISE`` with this time scale
#: (days); a first visit finds the full build-up.
ACCUMULATION_DAYS = 21.0
ACCUMULATION_FLOOR = 0.55
ACCUMULATION_RISE = 0.9


def accumulation(site: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Hit-rate factor of each inspection from the days since the previous inspection of the same site."""
    order = np.lexsort((t, site))
    gap = np.full(len(t), np.inf)
    s, ts = site[order], t[order]
    same = np.r_[False, s[1:] == s[:-1]]
    gap_sorted = np.where(same, (ts - np.r_[ts[:1], ts[:-1]]) / DAY_S, np.inf)
    gap[order] = gap_sorted
    return ACCUMULATION_FLOOR + ACCUMULATION_RISE * (1 - np.exp(-gap / ACCUMULATION_DAYS))


def lifecycle(rng, t, typ, perf, dl_value, dl_hours, late_factor, never_factor):
    """Deadline, rectification, closure, rework count and status of each case (seconds since START)."""
    n = len(t)
    deadline = deadlines(t, dl_value[typ], dl_hours[typ])
    span = np.maximum(deadline - t, 1800)
    u = rng.random(n)
    p_never = 0.012 * never_factor[typ] * perf
    p_rework = 0.06 * perf
    p_late = np.minimum(0.10 * late_factor[typ] * perf ** 1.5, 0.6)
    stuck = u < p_never
    rework = (~stuck) & (u < p_never + p_rework)
    late = (~stuck) & (~rework) & (u < p_never + p_rework + p_late)
    ontime = ~(stuck | rework | late)
    closed = np.zeros(n, dtype=np.int64)
    f = rng.beta(2.2, 2.0, n)
    closed[ontime] = t[ontime] + (span[ontime] * (0.12 + 0.86 * f[ontime])).astype(np.int64)
    extra = rng.exponential(1.0, n) * np.maximum(span * 0.6, 3 * 3600) + rng.exponential(2 * DAY_S, n)
    closed[late] = deadline[late] + extra[late].astype(np.int64)
    # A stuck problem is escalated (督办) and closed weeks to months after its deadline; a few stay open for
    # good (老大难). So the backlog of long-overdue problems at the end is small and mostly recent, as in an
    # office that works its overdue list, instead of every stuck problem of two years still open.
    escalated = stuck & (rng.random(n) >= STUCK_FOR_GOOD)
    delay = (14 + rng.exponential(ESCALATION_DAYS - 14, n)) * DAY_S
    closed[escalated] = deadline[escalated] + delay[escalated].astype(np.int64)
    never = stuck & ~escalated
    reopened = np.zeros(n, dtype=np.int32)
    reopened[rework] = 1 + (rng.random(int(rework.sum())) < 0.2)
    closed[rework] = (t[rework] + span[rework] * rng.uniform(0.6, 1.6, int(rework.sum()))
                      + reopened[rework] * rng.exponential(1.5 * DAY_S, int(rework.sum()))).astype(np.int64)
    # Rectified before verification: a few hours (quick jobs) to a day before closure.
    gap = np.minimum(rng.uniform(0.1, 0.5, n) * (closed - t), rng.uniform(1800, DAY_S, n)).astype(np.int64)
    rectified = np.maximum(closed - gap, t + 600)
    closed = np.maximum(closed, rectified + 300)
    end_s = int((END - START).astype(int)) * DAY_S
    rect_null = never | (rectified >= end_s)
    closed_null = never | (closed >= end_s)
    status_open = closed_null
    return deadline, rectified, rect_null, closed, closed_null, reopened, status_open
