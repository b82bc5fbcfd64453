"""GET /api/risk, /api/risk/{site_id} and /api/backtest: explainable site risk and its backtest."""

from __future__ import annotations

import math

from civicgrid.api.deps import get_store, lang_param
from civicgrid.api.models import RiskList, SiteRiskDetail
from civicgrid.geo.errors import InvalidParameterError
from civicgrid.geo.store import Store
from civicgrid.sites.backtest import backtest
from civicgrid.sites.risk import MODELS, default_as_of, explain, risk_records, select_sites, site_risk
from fastapi import APIRouter, Depends, Query

router = APIRouter(tags=["risk"])

_AS_OF = "score as of this date (its midnight) or date-time; only data strictly before it is used " \
         "(default: just after the latest event or inspection)"


def model_param(model: str = Query("auto", description="auto (the higher held-out AUC), gbm (gradient-boosted "
                                                       "trees), learnt or logistic (logistic regression of the "
                                                       "components) or default (the documented rule)")) -> str:
    """The risk model."""
    key = model.strip().lower()
    if key not in MODELS:
        msg = f"model must be one of {', '.join(MODELS)}, got {model!r}"
        raise InvalidParameterError(msg)
    return key


def _model_info(frame) -> dict:
    return dict(frame.attrs.get("model", {}))


@router.get("/api/risk", summary="Active sites ranked by risk, with the components of each score",
            response_model=RiskList, response_model_exclude_unset=True)
def get_risk(store: Store = Depends(get_store),
             as_of: str | None = Query(None, description=_AS_OF, examples=["2025-07-01"]),
             limit: int = Query(100, ge=1, le=100_000, description="sites to return (highest risk first)"),
             category: str | None = Query(None, description="site categories, comma-separated codes (16) or names "
                                                            "(农贸市场)"),
             grid: str | None = Query(None, description="a micro-grid code, or a district, street or community code"),
             model: str = Depends(model_param), lang: str = Depends(lang_param)) -> dict:
    """Each site's risk (the probability-like chance that its next inspection finds a problem), rank, reason
    and components (value, transform, weight and contribution in logit units, largest first)."""
    moment = as_of or default_as_of(store)
    frame = site_risk(store, as_of=moment, model=model, lang=lang)
    shown = select_sites(store, frame, category=category, area=grid, limit=limit)
    return {"as_of": frame.attrs["as_of"], "notes": frame.attrs["notes"], "n_scored": len(frame), "n_matching": len(
        select_sites(store, frame, category=category, area=grid)), "model": _model_info(frame),
        "sites": risk_records(shown, lang=lang)}


@router.get("/api/risk/{site_id}", summary="One site's risk and its components", response_model=SiteRiskDetail,
            response_model_exclude_unset=True)
def get_site_risk(site_id: int, store: Store = Depends(get_store),
                  as_of: str | None = Query(None, description=_AS_OF, examples=["2025-07-01"]),
                  model: str = Depends(model_param), lang: str = Depends(lang_param)) -> dict:
    """The site's risk, rank among the active sites, reason and every component (inactive sites are scored
    too, without a rank among the active ones)."""
    moment = as_of or default_as_of(store)
    frame = site_risk(store, as_of=moment, model=model, lang=lang)
    if not (frame["site_id"] == site_id).any():
        frame = site_risk(store, as_of=moment, model=model, lang=lang, sites=[site_id])
        frame["rank"] = None
    return {"as_of": frame.attrs["as_of"], "model": _model_info(frame), **explain(frame, site_id, lang=lang)}


@router.get("/api/backtest", summary="Backtest of the risk order against the inspections actually made")
def get_backtest(store: Store = Depends(get_store),
                 as_of: str = Query(..., description="start of the window; scores use only data before it",
                                    examples=["2025-07-01"]),
                 horizon: float = Query(28, gt=0, le=3660, description="window length in days"),
                 k: int | None = Query(None, ge=1, description="precision at k (default: a tenth of the window's "
                                                               "inspections)"),
                 seed: int = Query(0, description="first seed of the random orderings"),
                 kind: str | None = Query(None, description="only inspections whose kind contains this text"),
                 model: str = Depends(model_param)) -> dict:
    """precision_at_k, first_half_share, mean_days_earlier and auc for the orderings risk, gbm, logistic,
    risk_inspector (when inspections name their inspector), historical, random, round_robin and actual (see
    ``sites.backtest``), and the model chosen."""
    return _finite(backtest(store, as_of=as_of, horizon_days=horizon, k=k, seed=seed, model=model, kind=kind))


def _finite(value):
    """NaN (a measure with no problem-finding inspection) as JSON null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
