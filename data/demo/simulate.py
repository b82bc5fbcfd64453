"""The demo's two years of activity: inspections and the problems they find, re-checks, complaints (12345)."""

from __future__ import annotations

import numpy as np
from civicgrid.data.demo.calendar import (
    DAY_S,
    HOLIDAYS,
    N_DAYS,
    START,
    daily_profiles,
    day_serial,
    inspection_quarters,
    quarter_hours,
    sample_days,
)
from civicgrid.data.demo.lifecycle import accumulation, lifecycle

#: Number of inspectors (督查员) and the share of them who detect about 1.5x more problems.
N_INSPECTORS = 20

#: Complaint attraction of one site, per category (relative; categories not listed: 0.5).
SITE_COMPLAINT_WEIGHT = {
    "16": 40, "25": 14, "30": 9, "38": 25, "14": 1.2, "05": 1.2, "09": 2, "36": 4, "28": 8, "29": 10,
    "31": 2, "37": 20, "27": 1, "11": 5, "10": 4, "12": 4, "08": 15, "17": 5, "15": 2, "06": 2,
}
#: Inspection visit frequency of one site, per category (relative; not listed: 1).
SITE_VISIT_WEIGHT = {
    "16": 14, "25": 8, "38": 9, "30": 5, "28": 5, "29": 6, "37": 6, "08": 6, "05": 1.2, "14": 0.8,
    "36": 2, "09": 2, "11": 3, "10": 3, "12": 3, "31": 3, "06": 3, "17": 2, "24": 2,
}
#: Mean problems found per visit, per category, before scaling (not listed: 0.35).
SITE_RISK = {
    "16": 1.7, "38": 1.4, "30": 1.3, "37": 1.5, "25": 1.0, "28": 1.0, "29": 1.0, "08": 1.0, "36": 0.7,
    "31": 0.7, "05": 0.6, "09": 0.6, "11": 0.6, "10": 0.6, "12": 0.6, "14": 0.6, "06": 0.6,
}
#: Problem types found at each category (relative weights); categories not listed use DEFAULT_SITE_PROFILE.
SITE_PROFILES = {
    "16": {"0201": 5, "0203": 4, "0101": 4, "0104": 2, "0102": 1, "0103": 2, "0202": 2, "0301": 1, "0302": 1},
    "25": {"0801": 7, "0203": 2, "0301": 2, "0302": 1, "0207": 1},
    "24": {"0501": 2, "0502": 1, "0404": 1, "0303": 1, "0301": 1},
    "30": {"0204": 4, "0209": 3, "0102": 4, "0407": 3, "0205": 2, "0207": 2, "0208": 1, "0106": 1, "0402": 1},
    "38": {"0601": 5, "0604": 5, "0603": 3, "0602": 2, "0103": 1},
    "14": {"0202": 3, "0101": 2, "0104": 1, "0206": 1, "0301": 1},
    "05": {"0302": 3, "0207": 2, "0404": 2, "0502": 1, "0501": 1, "0703": 0.3},
    "09": {"0105": 6, "0404": 1, "0406": 1},
    "36": {"0301": 3, "0303": 3, "0106": 2, "0701": 2, "0205": 1, "0204": 1, "0104": 2, "0209": 1, "0302": 1},
    "28": {"0401": 2, "0402": 2, "0403": 2, "0405": 2, "0103": 2, "0301": 2, "0302": 2, "0304": 1,
           "0305": 1, "0501": 2, "0206": 1},
    "29": {"0202": 3, "0201": 2, "0206": 2, "0302": 2, "0103": 1, "0501": 1, "0203": 1},
    "31": {"0304": 3, "0305": 3, "0302": 1, "0404": 1},
    "37": {"0102": 4, "0209": 3, "0101": 2, "0604": 1, "0204": 2},
    "27": {"0802": 4, "0206": 1},
    "11": {"0106": 2, "0701": 3, "0101": 2, "0404": 2, "0105": 1, "0702": 1, "0703": 1, "0203": 1, "0501": 1},
    "10": {"0106": 2, "0701": 3, "0101": 2, "0404": 2, "0702": 1, "0703": 1, "0203": 2, "0501": 1},
    "12": {"0101": 2, "0404": 2, "0105": 1, "0702": 1, "0703": 1, "0203": 2, "0501": 1, "0502": 1},
    "08": {"0203": 2, "0301": 2, "0703": 2, "0101": 1, "0702": 1, "0404": 1, "0302": 1},
    "07": {"0301": 2, "0103": 1, "0404": 1},
    "06": {"0502": 1, "0404": 1, "0702": 1, "0501": 1},
    "15": {"0302": 2, "0202": 1, "0206": 1, "0501": 1, "0406": 1},
    "13": {"0206": 1, "0501": 1, "0406": 1, "0301": 1},
    "17": {"0301": 3, "0302": 2, "0203": 1, "0101": 1, "0406": 1},
    "26": {"0206": 2, "0301": 1, "0501": 1},
}
#: Problem profile of sites whose category is not in SITE_PROFILES.
DEFAULT_SITE_PROFILE = {"0501": 2, "0502": 2, "0406": 2, "0404": 1, "0206": 0.5, "0302": 1}
#: Problem types of complaints not tied to a site (spread by households).
BACKGROUND_PROFILE = {
    "0301": 8, "0302": 6, "0101": 5, "0104": 4, "0103": 3, "0106": 3, "0701": 3, "0204": 2, "0205": 1,
    "0207": 2, "0208": 1, "0209": 1, "0303": 2, "0401": 2, "0402": 2, "0403": 1.5, "0404": 2, "0405": 2,
    "0407": 1, "0408": 1, "0702": 0.5, "0703": 0.5, "0203": 2, "0201": 2, "0202": 2, "0105": 0.5,
    "0304": 0.3, "0305": 0.5, "0206": 0.5, "0102": 1.5,
}
#: How readily citizens phone in a problem type (relative; not listed: 1).
COMPLAINT_TYPE_FACTOR = {"0501": 0.05, "0502": 0.1, "0406": 0.3, "0304": 0.2, "0702": 0.3, "0206": 0.4}
#: How readily inspectors record a problem type (relative; not listed: 1).
INSPECTION_TYPE_FACTOR = {"0501": 2.0, "0502": 2.0, "0406": 1.5, "0701": 0.5, "0802": 1.5, "0304": 1.2}
#: Openings of complaint texts.
COMPLAINT_PREFIXES = ["市民反映", "来电反映", "", "群众投诉"]

#: Shares of events: inspection hits (the rest are complaints), and points just outside the grids.
HIT_SHARE = 0.40
OUTSIDE_SHARE = 0.005
#: Share of complaints spread by households rather than drawn to a site.
BACKGROUND_SHARE = 0.52

#: Complaint profile (row of :func:`civicgrid.data.demo.calendar.daily_profiles`) of each problem class.
_PROFILE_OF_MAJOR = {"01": 0, "02": 1, "03": 2, "04": 3, "05": 4, "06": 5, "07": 6, "08": 7}


def _type_matrix(codes, cats, profile_of, factor):
    """Row-normalised problem-type weights per category code."""
    pos = {c: i for i, c in enumerate(codes)}
    m = np.zeros((len(cats), len(codes)))
    for r, c in enumerate(cats):
        for t, w in profile_of(c).items():
            if t in pos:
                m[r, pos[t]] = w * factor.get(t, 1.0)
        if m[r].sum() == 0:
            m[r] = 1.0
    return m / m.sum(1, keepdims=True)


def _choose_by_row(rng, rows, matrix):
    """For each entry of ``rows`` draw a column from ``matrix[row]`` (loop over distinct rows only)."""
    out = np.zeros(len(rows), dtype=np.int16)
    for r in np.unique(rows):
        idx = np.flatnonzero(rows == r)
        out[idx] = rng.choice(matrix.shape[1], len(idx), p=matrix[r])
    return out


def _times_of_day(rng, rows, quarters):
    """Seconds after midnight: a 15-minute bin from ``quarters[row]`` plus a uniform offset."""
    q = _choose_by_row(rng, rows, quarters).astype(np.int64)
    return q * 900 + rng.integers(0, 900, len(rows))


def _scatter(rng, anchors, sigma, who, k=None):
    """Points scattered around anchors[who, k] with per-owner spread ``sigma[who]``."""
    if k is None:
        k = rng.integers(0, anchors.shape[1], len(who))
    xy = anchors[who, k] + rng.normal(0, 1, (len(who), 2)) * sigma[who, None]
    return xy, k


#: Problem types rectified late more often, and left open (overdue) more often.
_LATE_FACTOR = {"0209": 2.2, "0408": 1.6, "0401": 1.4, "0406": 1.6, "0206": 1.3, "0407": 1.3, "0103": 0.7,
                "0104": 0.7, "0105": 0.7}
_NEVER_FACTOR = {"0209": 6.0, "0408": 3.0, "0406": 3.0, "0401": 2.0, "0407": 2.0}
#: Categories whose closed problems rebound more often.
_REBOUND_PRONE = ("16", "30", "25", "38", "37", "29")


def simulate(rng, n_events, city, sm, gm, types):
    """Inspections, hits, rebounds and complaints as numeric arrays (times in seconds since START).

    Parameters
    ----------
    rng : numpy.random.Generator
        The demo's random generator (advanced by the call).
    n_events : int
        Number of events to generate (complaints plus inspection hits).
    city : dict
        The city of :func:`civicgrid.data.demo.city.build_city`.
    sm, gm : dict
        The site and grid models of :func:`civicgrid.data.demo.hotspots.site_model` and
        :func:`~civicgrid.data.demo.hotspots.grid_model`.
    types : pandas.DataFrame
        The store's problem types (code, major_code, deadline_value, deadline_unit), ordered by code.

    Returns
    -------
    ev : dict of numpy.ndarray
        The events in time order (source, time, type, site, inspection, place, lifecycle, rebound_of, serial).
    ins : dict of numpy.ndarray
        The inspections in time order (id, time, site, inspector, problems found, serial).
    counts : dict
        Numbers of complaints, hits (with rebounds) and rebounds.
    """
    model = _Model(rng, city, sm, types)
    visits = _visits(model, sm, n_events)
    hits = _hits(model, sm, visits, n_events)
    rebounds = _rechecks(model, sm, hits, n_events)
    n_comp = n_events - hits["n"] - rebounds["n"]
    comp = _complaints(model, city, sm, gm, n_events, n_comp)
    ev = _collect_events(rng, comp, hits, rebounds, len(visits["t"]))
    del comp, hits["life"], rebounds["life"]  # in ev now (memory at 10M events)
    _sort_events(ev)
    ins = _collect_inspections(rng, ev, visits, hits, rebounds)
    return ev, ins, {"complaints": n_comp, "hits": hits["n"] + rebounds["n"], "rebounds": rebounds["n"]}


class _Model:
    """What the simulation draws from: type profiles and matrices, daily and hourly weights, street performance."""

    def __init__(self, rng, city, sm, types):
        self.rng = rng
        codes = types["code"].tolist()
        self.pos = {c: i for i, c in enumerate(codes)}
        self.prof_of_type = np.array([9 if c == "0802" else 8 if c == "0801" else _PROFILE_OF_MAJOR.get(m, 0)
                                      for c, m in zip(codes, types["major_code"], strict=True)])
        self.dl_value = types["deadline_value"].fillna(1.0).to_numpy(float)
        self.dl_hours = (types["deadline_unit"] == "working_hours").to_numpy()
        self.late_f = np.array([_LATE_FACTOR.get(c, 1.0) for c in codes])
        self.never_f = np.array([_NEVER_FACTOR.get(c, 1.0) for c in codes])
        self.comp_cdf, self.insp_cdf, self.ramp = daily_profiles()
        self.cq = quarter_hours(codes)
        self.iq = inspection_quarters()
        cat_codes = sorted(set(sm["cat"]))
        self.cat_row = np.searchsorted(cat_codes, sm["cat"])
        self.m_comp = _type_matrix(codes, cat_codes, lambda c: SITE_PROFILES.get(c, DEFAULT_SITE_PROFILE),
                                   COMPLAINT_TYPE_FACTOR)
        self.m_hit = _type_matrix(codes, cat_codes, lambda c: SITE_PROFILES.get(c, DEFAULT_SITE_PROFILE),
                                  INSPECTION_TYPE_FACTOR)
        self.m_bg = _type_matrix(codes, ["bg"], lambda c: BACKGROUND_PROFILE, COMPLAINT_TYPE_FACTOR)
        n_streets = int(city["street"].max()) + 1
        self.perf_street = rng.lognormal(0.0, 0.3, n_streets)
        self.perf_street[rng.choice(n_streets, 2, replace=False)] = 1.9  # two lagging (white-flag) streets

    def lifecycle(self, t, typ, street):
        """The lifecycle of cases found at ``t`` of types ``typ`` in streets ``street`` (-1: outside)."""
        perf = np.where(street >= 0, self.perf_street[np.maximum(street, 0)], 1.0)
        return lifecycle(self.rng, t, typ, perf, self.dl_value, self.dl_hours, self.late_f, self.never_f)

    def episode_types(self, ep, n):
        """``n`` problem types drawn from an episode's profile."""
        prof = {k: v for k, v in ep["profile"].items() if k in self.pos}
        keys = list(prof)
        w = np.array([prof[k] for k in keys], float)
        return np.array([self.pos[k] for k in keys], dtype=np.int16)[self.rng.choice(len(keys), n, p=w / w.sum())]

    def days_by_type(self, typ, lo, hi):
        """Days in [lo, hi) drawn from the complaint profile of each problem type."""
        u = self.rng.random(len(typ))
        out = np.zeros(len(typ), dtype=np.int64)
        prof = self.prof_of_type[typ]
        for p in np.unique(prof):
            m = prof == p
            out[m] = sample_days(self.comp_cdf[p], lo[m] if np.ndim(lo) else lo, hi[m] if np.ndim(hi) else hi, u[m])
        return out


def _apply_episodes(mult, episodes, site_i, day_i):
    """Multiply (in place) the hit rate ``mult`` of each inspection by the episodes at its site."""
    for ep in episodes:
        m = site_i == ep["site"]
        d = day_i[m]
        if ep["kind"] == "rectified":
            mult[m] *= np.where(d < ep["b"], 5.0, 1 + 4 * np.exp(-(d - ep["b"]) / 30))
        elif ep["kind"] == "night_market":
            mult[m] *= np.where((d >= ep["a"]) & (d < ep["b"]), 4.0, 1.0)
        else:
            mult[m] *= np.where(d >= ep["a"], 1 + 4 * (d - ep["a"]) / max(ep["b"] - ep["a"], 1), 1.0)


def _visits(model, sm, n_events):
    """Inspection visits: site, day, time, inspector, and the number of problems each finds."""
    rng = model.rng
    cat, a, b, het = sm["cat"], sm["a"], sm["b"], sm["het"]
    insp_cdf = model.insp_cdf
    hit_target = HIT_SHARE * n_events * 0.955
    n_insp = round(hit_target / 0.8)
    school_site = cat == "25"
    mass = np.where(school_site, insp_cdf[1][b] - insp_cdf[1][a], insp_cdf[0][b] - insp_cdf[0][a])
    vis_w = np.array([SITE_VISIT_WEIGHT.get(c, 1.0) for c in cat]) * np.sqrt(het) * mass
    site_i = rng.choice(len(cat), n_insp, p=vis_w / vis_w.sum())
    u = rng.random(n_insp)
    day_i = np.zeros(n_insp, dtype=np.int64)
    school = school_site[site_i]
    for p in (0, 1):
        m = school == p
        day_i[m] = sample_days(insp_cdf[p], a[site_i[m]], b[site_i[m]], u[m])
    qrow = np.where(school, 1, np.where(cat[site_i] == "16", 2, 0))
    t_insp = day_i * DAY_S + _times_of_day(rng, qrow, model.iq)
    activity = rng.uniform(0.6, 1.4, N_INSPECTORS)
    who = rng.choice(N_INSPECTORS, n_insp, p=activity / activity.sum())
    skill = rng.uniform(0.75, 1.1, N_INSPECTORS)
    skill[rng.choice(N_INSPECTORS, 4, replace=False)] = rng.uniform(1.45, 1.6, 4)
    risk = np.array([SITE_RISK.get(c, 0.35) for c in cat]) * het
    mult = 1 + 0.15 * model.ramp[day_i]
    _apply_episodes(mult, sm["episodes"], site_i, day_i)
    mult *= accumulation(site_i, t_insp)
    lam = risk[site_i] * skill[who] * mult
    lam *= hit_target / max(lam.sum(), 1e-9)
    found = rng.poisson(lam)
    return {"site": site_i, "day": day_i, "t": t_insp, "who": who, "found": found}


def _hits(model, sm, visits, n_events):
    """The problems the visits find: type, time, place and lifecycle of each hit."""
    rng = model.rng
    hit_insp = np.repeat(np.arange(len(visits["t"])), visits["found"])
    if len(hit_insp) > n_events:
        hit_insp = hit_insp[:n_events]
    n_hits = len(hit_insp)
    hit_site = visits["site"][hit_insp]
    hit_type = _choose_by_row(rng, model.cat_row[hit_site], model.m_hit)
    hit_day = visits["day"][hit_insp]
    for ep in sm["episodes"]:
        m = (hit_site == ep["site"]) & (hit_day >= ep["a"]) & (hit_day < ep["b"]) & (rng.random(n_hits) < 0.7)
        hit_type[m] = model.episode_types(ep, int(m.sum()))
    hit_t = visits["t"][hit_insp] + rng.integers(60, 1500, n_hits)
    hit_xy, hit_k = _scatter(rng, sm["anchors"], sm["sigma"], hit_site)
    hit_place = sm["place_idx"][hit_site, hit_k]
    hit_life = model.lifecycle(hit_t, hit_type, sm["street"][hit_site])
    return {"n": n_hits, "insp": hit_insp, "site": hit_site, "type": hit_type, "t": hit_t, "xy": hit_xy,
            "place": hit_place, "life": hit_life}


def _recheck_times(rng, base):
    """Times of re-checks 5-30 days after ``base``, on a working day during office hours."""
    day = (base + rng.uniform(5, 30, len(base)) * DAY_S).astype(np.int64) // DAY_S
    dates = np.busday_offset(START + day.astype("timedelta64[D]"), 0, roll="forward", holidays=HOLIDAYS)
    day = np.minimum((dates - START).astype(np.int64), N_DAYS - 1)
    return day * DAY_S + rng.integers(9 * 3600, 17 * 3600, len(base))


def _rechecks(model, sm, hits, n_events):
    """Re-checks (回头看): some closed hits recur at the same site (rebounds), others find nothing."""
    rng = model.rng
    end_s = N_DAYS * DAY_S
    closed, closed_null = hits["life"][3], hits["life"][4]
    eligible = ~closed_null & (closed < end_s - 40 * DAY_S)
    prone = np.isin(sm["cat"][hits["site"]], _REBOUND_PRONE)
    draw = rng.random(hits["n"])
    rebound = eligible & (draw < np.where(prone, 0.10, 0.05))
    src = np.flatnonzero(rebound)[: max(n_events - hits["n"], 0)]
    n_reb = len(src)
    quiet = np.flatnonzero(eligible & ~rebound & (draw > 0.88))  # re-checks that find nothing
    reb_insp_t = _recheck_times(rng, closed[src])
    quiet_t = _recheck_times(rng, closed[quiet])
    reb_t = reb_insp_t + rng.integers(60, 1200, n_reb)
    reb_type = hits["type"][src]
    reb_site = hits["site"][src]
    reb_xy = hits["xy"][src] + rng.normal(0, 8, (n_reb, 2))
    reb_place = hits["place"][src]
    reb_life = model.lifecycle(reb_t, reb_type, sm["street"][reb_site])
    return {"n": n_reb, "src": src, "insp_t": reb_insp_t, "t": reb_t, "type": reb_type, "site": reb_site,
            "xy": reb_xy, "place": reb_place, "life": reb_life, "quiet": quiet, "quiet_t": quiet_t}


def _complaints(model, city, sm, gm, n_events, n_comp):
    """Complaints (12345): at sites, in episodes, spread by households, and just outside the grids."""
    n_out = min(round(OUTSIDE_SHARE * n_events), n_comp)
    rest = n_comp - n_out
    n_ep = [round(ep["share"] * rest) for ep in sm["episodes"]]
    n_bg = round(BACKGROUND_SHARE * rest)
    n_site = max(rest - sum(n_ep) - n_bg, 0)
    n_bg = rest - sum(n_ep) - n_site
    parts = [_site_complaints(model, sm, n_site)]  # (t, typ, xy, place, street)
    parts += [_episode_complaints(model, sm, ep, n) for ep, n in zip(sm["episodes"], n_ep, strict=True)]
    parts.append(_household_complaints(model, city, gm, n_bg))
    parts.append(_outside_complaints(model, gm, n_out))
    c_t = np.concatenate([p[0] for p in parts]).astype(np.int64)
    c_typ = np.concatenate([p[1] for p in parts]).astype(np.int16)
    c_xy = np.concatenate([p[2] for p in parts])
    c_place = np.concatenate([p[3] for p in parts]).astype(np.int32)
    c_life = model.lifecycle(c_t, c_typ, np.concatenate([p[4] for p in parts]))
    return {"n": n_comp, "t": c_t, "type": c_typ, "xy": c_xy, "place": c_place, "life": c_life}


def _site_complaints(model, sm, n):
    """Complaints drawn to sites by their category's attraction."""
    rng = model.rng
    cat, a, b = sm["cat"], sm["a"], sm["b"]
    comp_mass = model.comp_cdf[0][b] - model.comp_cdf[0][a]
    w = np.array([SITE_COMPLAINT_WEIGHT.get(c, 0.5) for c in cat]) * sm["het"] * comp_mass
    s = rng.choice(len(cat), n, p=w / w.sum())
    typ = _choose_by_row(rng, model.cat_row[s], model.m_comp)
    t = model.days_by_type(typ, a[s], b[s]) * DAY_S + _times_of_day(rng, typ, model.cq)
    xy, k = _scatter(rng, sm["anchors"], sm["sigma"], s)
    return t, typ, xy, sm["place_idx"][s, k], sm["street"][s]


def _episode_complaints(model, sm, ep, n):
    """Complaints of one episode: a night market, a rectified site's tail, an emerging problem."""
    rng = model.rng
    s = np.full(n, ep["site"])
    typ = model.episode_types(ep, n)
    if ep["kind"] == "night_market":
        day = model.days_by_type(typ, ep["a"], ep["b"])
        tod = rng.integers(18 * 3600, 23 * 3600 + 1800, n)
    elif ep["kind"] == "rectified":
        day = model.days_by_type(typ, 0, ep["b"])
        tail = rng.random(n) < 0.22
        day[tail] = np.minimum(ep["b"] + rng.exponential(25, int(tail.sum())).astype(np.int64), N_DAYS - 1)
        tod = _times_of_day(rng, typ, model.cq)
    else:
        day = (ep["a"] + (ep["b"] - ep["a"]) * np.sqrt(rng.random(n))).astype(np.int64)
        tod = _times_of_day(rng, typ, model.cq)
    xy, k = _scatter(rng, sm["anchors"], sm["sigma"], s)
    place = np.full(n, ep.get("place", -1)) if "place" in ep else sm["place_idx"][s, k]
    return day * DAY_S + tod, typ, xy, place, sm["street"][s]


def _household_complaints(model, city, gm, n):
    """Complaints not tied to a site, spread over the grids by households."""
    rng = model.rng
    hh = city["households"].astype(float)
    g = rng.choice(len(hh), n, p=hh / hh.sum())
    typ = _choose_by_row(rng, np.zeros(n, dtype=int), model.m_bg)
    t = model.days_by_type(typ, 0, N_DAYS) * DAY_S + _times_of_day(rng, typ, model.cq)
    k = rng.integers(0, gm["anchors"].shape[1], n)
    xy = gm["anchors"][g, k] + rng.normal(0, 15, (n, 2))
    return t, typ, xy, gm["place_idx"][g, k], city["street"][g]


def _outside_complaints(model, gm, n):
    """Complaints just outside the city's grids."""
    rng = model.rng
    j = rng.integers(0, len(gm["out_xy"]), n)
    typ = _choose_by_row(rng, np.zeros(n, dtype=int), model.m_bg)
    t = model.days_by_type(typ, 0, N_DAYS) * DAY_S + _times_of_day(rng, typ, model.cq)
    return t, typ, gm["out_xy"][j] + rng.normal(0, 20, (n, 2)), gm["out_place"][j], np.full(n, -1)


def _collect_events(rng, comp, hits, rebounds, n_visits):
    """All events (complaints, hits, rebounds) as one set of arrays, in that order."""
    n_comp, n_hits, n_reb = comp["n"], hits["n"], rebounds["n"]
    n_all = n_comp + n_hits + n_reb
    ev = {
        "src": np.concatenate([np.zeros(n_comp, np.int8), np.ones(n_hits + n_reb, np.int8)]),
        "t": np.concatenate([comp["t"], hits["t"], rebounds["t"]]),
        "typ": np.concatenate([comp["type"], hits["type"], rebounds["type"]]).astype(np.int16),
        "site": np.concatenate([np.full(n_comp, -1), hits["site"], rebounds["site"]]).astype(np.int64),
        "insp": np.concatenate([np.full(n_comp, -1), hits["insp"], n_visits + np.arange(n_reb)]).astype(np.int64),
        "xy": np.concatenate([comp["xy"], hits["xy"], rebounds["xy"]]),
        "place": np.concatenate([comp["place"], hits["place"], rebounds["place"]]).astype(np.int32),
        "variant": rng.integers(0, 3, n_all).astype(np.int8),
        "prefix": rng.integers(0, len(COMPLAINT_PREFIXES), n_all).astype(np.int8),
        "rebound_src": np.concatenate([np.full(n_comp + n_hits, -1), n_comp + rebounds["src"]]).astype(np.int64),
    }
    names = ["deadline", "rectified", "rect_null", "closed", "closed_null", "reopened", "open"]
    for i, name in enumerate(names):
        ev[name] = np.concatenate([comp["life"][i], hits["life"][i], rebounds["life"][i]])
    return ev


def _sort_events(ev):
    """Put the events in time order (in place): rebound links follow, serial numbers within each day."""
    n_all = len(ev["t"])
    for key in ("t", "deadline", "rectified", "closed", "site", "insp", "rebound_src"):
        ev[key] = ev[key].astype(np.int32)  # seconds since START fit in 32 bits; saves memory at 10M
    order = np.argsort(ev["t"], kind="stable")
    for key in ev:
        ev[key] = ev[key][order]
    new_id = np.empty(n_all, dtype=np.int32)
    new_id[order] = np.arange(1, n_all + 1)
    del order
    ev["rebound_of"] = np.where(ev["rebound_src"] >= 0, new_id[np.maximum(ev["rebound_src"], 0)], -1)
    del ev["rebound_src"]
    ev["serial"] = np.zeros(n_all, dtype=np.int32)
    for sv in (0, 1):
        m = np.flatnonzero(ev["src"] == sv)
        ev["serial"][m] = day_serial(ev["t"][m])


def _collect_inspections(rng, ev, visits, hits, rebounds):
    """All inspections (visits, re-checks that found a rebound, quiet re-checks) in time order.

    Renumbers the inspection of each event in ``ev`` to the inspection's id.
    """
    quiet = rebounds["quiet"]
    ins_t = np.concatenate([visits["t"], rebounds["insp_t"], rebounds["quiet_t"]])
    ins_site = np.concatenate([visits["site"], rebounds["site"], hits["site"][quiet]])
    ins_who = np.concatenate([visits["who"], rng.integers(0, N_INSPECTORS, rebounds["n"] + len(quiet))])
    n_ins = len(ins_t)
    found_all = np.bincount(ev["insp"][ev["insp"] >= 0], minlength=n_ins)
    iorder = np.argsort(ins_t, kind="stable")
    ins_new = np.empty(n_ins, dtype=np.int64)
    ins_new[iorder] = np.arange(1, n_ins + 1)
    ev["insp"] = np.where(ev["insp"] >= 0, ins_new[np.maximum(ev["insp"], 0)], -1).astype(np.int32)
    ins = {"id": np.arange(1, n_ins + 1, dtype=np.int64), "t": ins_t[iorder], "site": ins_site[iorder],
           "who": ins_who[iorder], "found": found_all[iorder].astype(np.int32)}
    ins["serial"] = day_serial(ins["t"])
    return ins
