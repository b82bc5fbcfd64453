"""GET /api/reports/{period}.xlsx and /api/reports/{period}/scorecard: the period's KPI workbook and scorecard."""

from __future__ import annotations

from urllib.parse import quote

from civicgrid.api.auth import AuthFirstRoute
from civicgrid.api.deps import get_store, lang_param
from civicgrid.geo.store import Store
from civicgrid.geo.times import parse_period
from civicgrid.sites.reports import LEVELS, check_kpi, scorecard_page, table_level, workbook_bytes
from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import HTMLResponse, Response

router = APIRouter(prefix="/api/reports", tags=["reports"], route_class=AuthFirstRoute)

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_PERIOD = Path(..., description="2024-03 (a month), 2024-Q1, 2024, 2024-03-05 or 2024-03-01..2024-03-15",
               examples=["2024-03"])


def report_params(
    store: Store = Depends(get_store),
    level: str | None = Query(None, description=f"scorecard table / active sheet: {', '.join(LEVELS)} (default: "
                                                "street; a city without streets: its finest areas, else its "
                                                "grids, else its site categories)"),
    kpi: str = Query("on_time_closure_rate", description="KPI colouring the map and marking lagging rows"),
    as_of: str | None = Query(None, description="read the record as it stood at this moment (default: the "
                                                 "period's end, or now if earlier); not before the period"),
    lang: str = Depends(lang_param),
) -> dict:
    """Parse and check the report options."""
    return {"level": table_level(store, level or None), "kpi": check_kpi(kpi), "as_of": as_of or None, "lang": lang}


@router.get("/{period}.xlsx", summary="KPI workbook (XLSX)", response_class=Response,
            responses={200: {"content": {XLSX_TYPE: {}}}})
def report_xlsx(period: str = _PERIOD, store: Store = Depends(get_store),
                params: dict = Depends(report_params)) -> Response:
    """One sheet per level (district, street, community, grid, category), headers in ``lang``, a totals row,
    lagging rows on ``kpi`` filled red."""
    body = workbook_bytes(store, period=period, **params)
    label = parse_period(period)[2].replace("..", "_")
    name = f"report_{label}_{params['level']}.xlsx"  # the name `civicgrid report` gives the file
    return Response(body, media_type=XLSX_TYPE,
                    headers={"Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}"})


@router.get("/{period}/scorecard", summary="KPI scorecard with a grid map (HTML)", response_class=HTMLResponse)
def report_scorecard(period: str = _PERIOD, store: Store = Depends(get_store),
                     params: dict = Depends(report_params)) -> HTMLResponse:
    """City figures, micro-grids coloured by ``kpi`` (Leaflet from the service, no CDN), the ``level`` table."""
    return HTMLResponse(scorecard_page(store, period=period, **params))
