"""Patrol planning: prize-collecting routes for inspectors, from the store's risk, must-visits and windows.

Modules, by capability:

- :mod:`~civicgrid.sites.patrol.model`: inspectors, stops, routes and plans (the problem's data);
- :mod:`~civicgrid.sites.patrol.network` and :mod:`~civicgrid.sites.patrol.travel`: road networks, travel minutes;
- :mod:`~civicgrid.sites.patrol.solve`: :func:`plan_patrols` (PyVRP or OR-Tools) and :func:`check_plan`;
- :mod:`~civicgrid.sites.patrol.candidates`: the day's candidate sites, must-visits, coverage and windows;
- :mod:`~civicgrid.sites.patrol.plan`: :func:`plan_day`, a day's plan document from the store;
- :mod:`~civicgrid.sites.patrol.backlog`: must-visits that do not fit today, planned over the next working days;
- :mod:`~civicgrid.sites.patrol.storage`: stored plans;
- :mod:`~civicgrid.sites.patrol.export`: GeoJSON, GPX, HTML and XLSX exports and the plan map.
"""

from civicgrid.sites.patrol.backlog import (
    MAX_BACKLOG_DAYS,
    next_working_days,
    plan_backlog,
    urgency_order,
    urgency_prizes,
    urgent_pool,
)
from civicgrid.sites.patrol.candidates import (
    CATEGORY_WINDOWS,
    MAX_CANDIDATES,
    RECHECK_AFTER_DAYS,
    RECHECK_WITHIN_DAYS,
    apply_coverage,
    check_area,
    patrol_candidates,
    patrol_day,
    site_risk_frame,
)
from civicgrid.sites.patrol.model import (
    DEFAULT_SERVICE_MIN,
    UNIT_PER_MIN,
    Inspector,
    PatrolPlan,
    Route,
    Stop,
    UnvisitedMust,
    as_inspectors,
    prepare_candidates,
)
from civicgrid.sites.patrol.network import RoadNetwork, load_network, store_network
from civicgrid.sites.patrol.plan import parse_inspectors, plan_day, plan_document
from civicgrid.sites.patrol.solve import (
    DEFAULT_SOLVER,
    MUST_PHASE_SHARE,
    SOLVERS,
    TOLERANCE_MIN,
    check_plan,
    plan_patrols,
    unfit_sites,
)
from civicgrid.sites.patrol.storage import list_plans, load_plan, save_plan
from civicgrid.sites.patrol.travel import TravelInput, patrol_points, travel_matrices

__all__ = [
    "CATEGORY_WINDOWS",
    "DEFAULT_SERVICE_MIN",
    "DEFAULT_SOLVER",
    "MAX_BACKLOG_DAYS",
    "MAX_CANDIDATES",
    "MUST_PHASE_SHARE",
    "RECHECK_AFTER_DAYS",
    "RECHECK_WITHIN_DAYS",
    "SOLVERS",
    "TOLERANCE_MIN",
    "UNIT_PER_MIN",
    "Inspector",
    "PatrolPlan",
    "RoadNetwork",
    "Route",
    "Stop",
    "TravelInput",
    "UnvisitedMust",
    "apply_coverage",
    "as_inspectors",
    "check_area",
    "check_plan",
    "list_plans",
    "load_network",
    "load_plan",
    "next_working_days",
    "parse_inspectors",
    "patrol_candidates",
    "patrol_day",
    "patrol_points",
    "plan_backlog",
    "plan_day",
    "plan_document",
    "plan_patrols",
    "prepare_candidates",
    "save_plan",
    "site_risk_frame",
    "store_network",
    "travel_matrices",
    "unfit_sites",
    "urgency_order",
    "urgency_prizes",
    "urgent_pool",
]
