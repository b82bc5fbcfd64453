"""The patrol problem's data: inspectors and their shifts, candidate sites, and the plan a solver returns."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.sites.patrol.network import SPEEDS_KMH

#: Default minutes on site when ``service_min`` is missing.
DEFAULT_SERVICE_MIN = 12.0

#: Solver time unit: one second. Travel and service minutes are rounded *up* and time-window ends and shift
#: ends *down* to whole seconds, so a route the solver finds feasible is feasible in real (float) minutes.
UNIT_PER_MIN = 60


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
