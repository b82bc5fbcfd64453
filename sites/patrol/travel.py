"""Travel minutes between a patrol's points: inspectors' start and end points, then the candidate sites."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.sites.patrol.model import Inspector, as_inspectors
from civicgrid.sites.patrol.network import DETOUR_FACTOR, RoadNetwork, straight_line_minutes

#: Travel minutes as a solver takes them: one matrix for all inspectors, a ``{mode: matrix}`` dict, or a callable
#: ``f(lng, lat, mode)``, over :func:`patrol_points`.
TravelInput = np.ndarray | Mapping[str, np.ndarray] | Callable[[np.ndarray, np.ndarray, str], np.ndarray]


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


def as_matrices(travel: TravelInput, candidates: pd.DataFrame, insp: list[Inspector]) -> dict[str, np.ndarray]:
    """Travel minutes by mode of the inspectors from a :data:`TravelInput`, checked: shape ``(n, n)`` over
    :func:`patrol_points`, finite and not negative."""
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
