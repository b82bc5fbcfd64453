"""Problem cases: lifecycle with an audit trail, working-time deadlines, automatic dispatch and rebounds.

A **case** follows one event (an inspection hit or a complaint needing action) and has the event's id
(``case_id == event_id``). Its states follow the digital city-management workflow (GB/T 30428):

``found → registered → dispatched → rectified → closed``, and ``rectified → dispatched`` when verification
fails (返工, rework). Every other move is refused with :class:`~civicgrid.geo.errors.ConflictError` and changes
nothing.

* **Audit trail**: every transition is a row of ``case_log`` (who, when, from, to, note, unit, photo); the
  state of a case at any time is the ``to_state`` of its last log row up to that time.
* **Deadlines** come from the problem type (``deadline_value`` working days or working hours) on a working
  clock that runs :data:`WORK_START`–:data:`WORK_END` on working days: Monday–Friday except the holidays of
  the ``holidays`` table, plus its make-up working days (调休上班). ``N`` working days = ``N × 9`` working
  hours. Found before 09:00 the clock starts at 09:00; found after 18:00 or on a day off it starts at the
  next working day's 09:00; a deadline falling exactly at a day boundary is written as 18:00 of that day.
* **Dispatch**: to the site's ``responsible_unit`` for a case at a sample-frame site, else to the office of
  the area holding it (属地): the community's residents' committee (社区居委会), else the street office
  (街道办事处), else the district's city-management bureau; overridable at dispatch.
* **Rebounds** (回头看): a new case of the same problem type at the same site, or within
  ``rebound_radius_m`` metres, found within ``rebound_days`` days after an earlier case was closed, is linked
  to the most recent such case (``rebound_of``).
* The linked event is kept in sync (``status``, ``deadline``, ``rectified_at``, ``closed_at``, ``reopened``,
  ``rebound_of``), so the heatmap's ``status`` filters read the case state.

Every write is one short transaction (:func:`civicgrid.geo.store.writing`): the case creations and moves that users
of one process make at the same time are committed together by the store's writer thread
(:mod:`civicgrid.geo.group_commit`), each with its own answer.

The modules, by topic:

* :mod:`~civicgrid.sites.cases.workflow`: states, opening and moving cases, reading them;
* :mod:`~civicgrid.sites.cases.calendar`: holidays, the working clock, deadlines;
* :mod:`~civicgrid.sites.cases.rebounds`: linking rebounds;
* :mod:`~civicgrid.sites.cases.bulk`: cases for imported events, in bulk (:func:`backfill`; an import's
  own, staged with its events: ``ImportCases``);
* :mod:`~civicgrid.sites.cases.config`: the stored case settings.

Their public names are importable from here. The tunables of the bulk writes (``REBOUND_BATCH_ROWS``,
``BACKFILL_CHUNK``, ``CASES_MEMORY_LIMIT``) are read from, and set on, the module that uses them.
"""

from __future__ import annotations

from civicgrid.geo.times import now_local  # the store's "now", as cases record it (the API's current month)
from civicgrid.sites.cases._sql import UNASSIGNED_UNIT, UNIT_SUFFIX, UNIT_SUFFIX_EN
from civicgrid.sites.cases.bulk import backfill, backfill_db
from civicgrid.sites.cases.calendar import (
    WORK_END,
    WORK_START,
    WorkCalendar,
    compute_deadlines,
    holidays,
    set_holidays,
    type_hours,
)
from civicgrid.sites.cases.config import DEFAULT_SETTINGS, check_setting, get_settings, set_setting
from civicgrid.sites.cases.rebounds import link_rebounds
from civicgrid.sites.cases.workflow import (
    ACTIONS,
    NEXT_STATES,
    STATE_ZH,
    STATES,
    CaseRequest,
    case_log,
    create_case,
    get_case,
    list_cases,
    open_cases,
    source_labels,
    transition,
    with_source_label,
)

__all__ = [
    "ACTIONS",
    "DEFAULT_SETTINGS",
    "NEXT_STATES",
    "STATES",
    "STATE_ZH",
    "UNASSIGNED_UNIT",
    "UNIT_SUFFIX",
    "UNIT_SUFFIX_EN",
    "WORK_END",
    "WORK_START",
    "CaseRequest",
    "WorkCalendar",
    "backfill",
    "backfill_db",
    "case_log",
    "check_setting",
    "compute_deadlines",
    "create_case",
    "get_case",
    "get_settings",
    "holidays",
    "link_rebounds",
    "list_cases",
    "now_local",
    "open_cases",
    "set_holidays",
    "set_setting",
    "source_labels",
    "transition",
    "type_hours",
    "with_source_label",
]
