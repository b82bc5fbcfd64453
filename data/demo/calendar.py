"""The demo's two years: holidays, campaigns, daily intensity profiles, times of day, working-time deadlines.

Times inside the generator are seconds since :data:`START` (local time).
"""

from __future__ import annotations

import numpy as np

#: Time range of the generated events: 2024-01-01 .. 2025-12-31 (local time, Asia/Shanghai).
START = np.datetime64("2024-01-01")
END = np.datetime64("2026-01-01")
N_DAYS = int((END - START).astype(int))
#: Mock assessments (模拟测评): inspections and complaints surge in the 4 weeks before each.
ASSESSMENTS = [("2024-05-20", "2024-05-24"), ("2024-10-21", "2024-10-25"),
               ("2025-05-19", "2025-05-23"), ("2025-10-20", "2025-10-24")]
#: Public holidays (no routine inspections; working-time deadlines skip them).
HOLIDAYS = np.array([
    *np.arange("2024-01-01", "2024-01-02", dtype="M8[D]"), *np.arange("2024-02-10", "2024-02-18", dtype="M8[D]"),
    *np.arange("2024-04-04", "2024-04-07", dtype="M8[D]"), *np.arange("2024-05-01", "2024-05-06", dtype="M8[D]"),
    *np.arange("2024-06-10", "2024-06-11", dtype="M8[D]"), *np.arange("2024-09-15", "2024-09-18", dtype="M8[D]"),
    *np.arange("2024-10-01", "2024-10-08", dtype="M8[D]"), *np.arange("2025-01-01", "2025-01-02", dtype="M8[D]"),
    *np.arange("2025-01-28", "2025-02-05", dtype="M8[D]"), *np.arange("2025-04-04", "2025-04-07", dtype="M8[D]"),
    *np.arange("2025-05-01", "2025-05-06", dtype="M8[D]"), *np.arange("2025-05-31", "2025-06-03", dtype="M8[D]"),
    *np.arange("2025-10-01", "2025-10-09", dtype="M8[D]"), *np.arange("2026-01-01", "2026-01-04", dtype="M8[D]"),
    *np.arange("2026-02-15", "2026-02-24", dtype="M8[D]"),
], dtype="M8[D]")
#: School holidays (no school-gate hawking, no school-gate patrols).
SCHOOL_VACATIONS = [("2024-01-20", "2024-02-25"), ("2024-07-06", "2024-08-31"),
                    ("2025-01-18", "2025-02-16"), ("2025-07-05", "2025-08-31"), ("2025-12-31", "2026-01-01")]
#: Spring Festival days (fewer complaints: people away).
SPRING_FESTIVALS = ["2024-02-10", "2025-01-29"]

#: Seconds in a day.
DAY_S = 86_400
_DATES = np.arange(START, END, dtype="M8[D]")
#: Complaint profiles: (summer amplitude, peak day of year, weekend factor) per problem class.
_COMPLAINT_SEASONS = [(0.35, 205, 1.15), (0.20, 200, 1.30), (0.05, 100, 1.10), (0.25, 165, 0.80),
                      (0.0, 0, 0.60), (0.15, 170, 0.50), (0.25, 200, 1.50), (0.0, 0, 1.0),
                      (0.0, 0, 0.0), (0.10, 210, 1.60)]


def _in_ranges(ranges, pad_before=0):
    """Days of the demo inside any of the (first, last) date ranges."""
    m = np.zeros(N_DAYS, dtype=bool)
    dates = _DATES
    for a, b in ranges:
        m |= (dates >= np.datetime64(a) - pad_before) & (dates <= np.datetime64(b))
    return m


def _campaign_ramp():
    """0 outside, rising linearly to 1 over the 4 weeks before each mock assessment, 1 during it."""
    r = np.zeros(N_DAYS)
    dates = _DATES
    for a, b in ASSESSMENTS:
        a, b = np.datetime64(a), np.datetime64(b)
        d = (dates - (a - 28)).astype(int)
        up = (d >= 0) & (dates < a)
        r[up] = np.maximum(r[up], (d[up] + 1) / 28)
        r[(dates >= a) & (dates <= b)] = 1.0
    return r


def daily_profiles():
    """Daily weights (10 complaint profiles, 2 inspection profiles) as cumulative sums for sampling."""
    dow = (_DATES.astype("int64") + 3) % 7
    weekend = dow >= 5
    holiday = np.isin(_DATES, HOLIDAYS)
    vacation = _in_ranges(SCHOOL_VACATIONS)
    doy = (_DATES - _DATES.astype("M8[Y]")).astype(int)
    ramp = _campaign_ramp()
    cny = np.zeros(N_DAYS, dtype=bool)
    for d in SPRING_FESTIVALS:
        cny |= np.abs((_DATES - np.datetime64(d)).astype(int)) <= 7
    trend = 1 + 0.12 * np.arange(N_DAYS) / N_DAYS
    comp = np.zeros((len(_COMPLAINT_SEASONS), N_DAYS))
    for p, (amp, peak, wk) in enumerate(_COMPLAINT_SEASONS):
        w = (1 + amp * np.cos(2 * np.pi * (doy - peak) / 365.25)) * np.where(weekend | holiday, wk, 1.0)
        w *= np.where(cny, 0.3 if p == 5 else 0.55, 1.0) * (1 + 0.35 * ramp) * trend
        comp[p] = w
    comp[8] = np.where(weekend | holiday | vacation, 0.01, 1.0) * (1 + 0.35 * ramp)
    comp[9] *= np.where(vacation, 1.8, 1.0)
    summer = np.isin((_DATES.astype("M8[M]").astype(int) % 12) + 1, [7, 8])
    insp = np.where(holiday, 0.02, np.where(weekend, 0.05, 1.0)) * (1 + 1.6 * ramp) * np.where(summer, 0.85, 1.0)
    insp_school = insp * np.where(vacation, 0.0, 1.0)

    def cum(w):
        return np.concatenate([np.zeros((w.shape[0], 1)), np.cumsum(w, axis=1)], axis=1)

    return cum(comp), cum(np.vstack([insp, insp_school])), ramp


def sample_days(cdf, a, b, u):
    """Days in [a, b) drawn from the daily weights whose cumulative sum is ``cdf``."""
    lo, hi = cdf[a], cdf[b]
    d = np.searchsorted(cdf, lo + u * (hi - lo), side="right") - 1
    return np.clip(d, a, np.maximum(b - 1, a))


def quarter_hours(codes):
    """Time-of-day weights in 15-minute bins: one row per problem type (complaints)."""
    hourly = np.array([0.2, 0.1, 0.05, 0.05, 0.05, 0.1, 0.3, 0.8, 1.5, 2.0, 2.0, 1.8,
                       1.2, 1.2, 1.6, 1.8, 1.8, 1.6, 1.4, 1.6, 1.5, 1.2, 0.8, 0.4])
    base = np.repeat(hourly, 4)
    out = np.tile(base, (len(codes), 1))
    h = np.arange(96) / 4
    for i, c in enumerate(codes):
        if c == "0801":  # hawkers at the school gate: dismissal 16:00-17:30, some at 7:00-7:45
            out[i] = np.where((h >= 16) & (h < 17.5), 6.0, 0) + np.where((h >= 7) & (h < 7.75), 3.0, 0) + 0.01
        elif c == "0604":  # muck trucks run at night
            out[i] = base * np.where((h >= 22) | (h < 5), 8.0, 1.0)
        elif c in ("0203", "0201"):
            out[i] = base * np.where(((h >= 11) & (h < 13)) | ((h >= 17) & (h < 22)), 2.0, 1.0)
        elif c == "0701":
            out[i] = base * np.where(((h >= 6) & (h < 8.5)) | ((h >= 19) & (h < 22)), 2.5, 1.0)
        elif c == "0802":
            out[i] = base * np.where((h >= 19) | (h < 2), 3.0, 1.0)
        elif c[:2] in ("04", "05"):
            out[i] = base * np.where((h >= 8) & (h < 18), 1.5, 0.5)
    return out / out.sum(1, keepdims=True)


def inspection_quarters():
    """Time-of-day weights of inspection visits: general, school gates, morning markets."""
    h = np.arange(96) / 4
    work = (((h >= 8.5) & (h < 11.75)) | ((h >= 14.5) & (h < 17.75))).astype(float)
    school = np.where((h >= 16) & (h < 17.5), 7.0, 0) + np.where((h >= 7) & (h < 8), 3.0, 0) + 0.3 * work
    market = work + np.where((h >= 7) & (h < 11), 1.5, 0)
    out = np.vstack([work, school, market])
    return out / out.sum(1, keepdims=True)


def deadlines(t, value, unit_hours):
    """Deadline (seconds since START) from working days or working hours (9:00-18:00, Mon-Fri, not holidays)."""
    day = t // DAY_S
    tod = t - day * DAY_S
    dates = START + day.astype("timedelta64[D]")
    busy = np.is_busday(dates, holidays=HOLIDAYS)
    out = np.empty(len(t), dtype=np.int64)
    wd = ~unit_hours
    if wd.any():
        due = np.busday_offset(dates[wd], value[wd].astype(int), roll="forward", holidays=HOLIDAYS)
        keep = np.where(busy[wd], tod[wd], 18 * 3600)
        out[wd] = (due - START).astype(np.int64) * DAY_S + keep
    wh = unit_hours
    if wh.any():
        d0, s0, b0 = dates[wh], tod[wh], busy[wh]
        in_hours = b0 & (s0 < 18 * 3600)
        start_day = np.where(in_hours, d0, np.busday_offset(d0, np.where(b0, 1, 0), roll="forward",
                                                            holidays=HOLIDAYS))
        start_s = np.where(in_hours, np.maximum(s0, 9 * 3600), 9 * 3600)
        end_s = start_s + (value[wh] * 3600).astype(np.int64)
        over = end_s > 18 * 3600
        nxt = np.busday_offset(start_day, 1, roll="forward", holidays=HOLIDAYS)
        final_day = np.where(over, nxt, start_day)
        final_s = np.where(over, 9 * 3600 + end_s - 18 * 3600, end_s)
        out[wh] = (final_day - START).astype(np.int64) * DAY_S + final_s
    return out


def day_serial(t):
    """1-based serial number of each (time-sorted) record within its day."""
    day = t // DAY_S
    first = np.searchsorted(day, day, side="left")
    return (np.arange(len(t)) - first + 1).astype(np.int32)
