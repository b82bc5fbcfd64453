"""GET /api/simulator: the assessment simulator (expected 符合率 per category and overall) and what to fix first."""

from __future__ import annotations

from civicgrid.api.auth import AuthFirstRoute
from civicgrid.api.deps import get_store, lang_param
from civicgrid.api.models import Assessment
from civicgrid.api.responses import json_response
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.store import Store
from civicgrid.sites.simulator import AGGREGATES, assess, parse_k_options
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

router = APIRouter(prefix="/api/simulator", tags=["simulator"], route_class=AuthFirstRoute)


def simulator_params(
    as_of: str | None = Query(None, description="state of the sites at this date or date-time (default: the "
                                                "latest event or inspection)", examples=["2024-06-30"]),
    runs: int = Query(10_000, ge=1, le=200_000, description="simulated visits"),
    threshold: float = Query(0.9, ge=0, le=1, description="a rate below this counts as failing"),
    fix: int = Query(10, ge=0, le=1000, description="sites to propose fixing first"),
    k: list[str] | None = Query(None, description="draws per category overriding data/assessment.csv: CAT=K, "
                                                  "repeatable or comma-separated (03=5,公园=2)"),
    aggregate: str = Query("pooled", description="overall rate: pooled (all drawn sites) or mean (of categories)"),
    level: float = Query(0.9, gt=0, lt=1, description="central interval of the simulated rates"),
    seed: int = Query(0, description="random seed"),
    method: str = Query("auto", description="site probabilities: risk (the calibrated risk model), rule (the "
                                            "documented rule) or auto (risk when it gives probabilities)"),
) -> dict:
    """Parse the simulator's query parameters."""
    if aggregate not in AGGREGATES:
        msg = f"aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate!r}"
        raise InvalidParameterError(msg)
    if method not in ("auto", "rule", "risk"):
        msg = f"method must be auto, rule or risk, got {method!r}"
        raise InvalidParameterError(msg)
    return {"as_of": as_of, "runs": runs, "threshold": threshold, "fix": fix, "k": parse_k_options(k),
            "aggregate": aggregate, "level": level, "seed": seed, "method": method}


@router.get("", summary="Simulate the assessors' visit", response_model=Assessment)
def simulator(store: Store = Depends(get_store), params: dict = Depends(simulator_params),
              lang: str = Depends(lang_param)) -> Response:
    """Expected conformity rate (exact) per category and overall, simulated interval, probability of falling
    below ``threshold`` (exact and simulated), and the ``fix`` sites whose fixing raises the expected overall
    rate most (exact gain per site, cumulative)."""
    return json_response(assess(store, lang=lang, **params))
