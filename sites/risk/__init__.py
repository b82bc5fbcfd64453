"""Site risk: the probability that the next inspection of each sample-frame site finds a problem, with its components.

The score
---------
For every site and a moment ``as_of`` civicgrid computes, from data strictly before ``as_of``:

===========================  =================================================================================
component                    value
===========================  =================================================================================
``category_rate``            share of the category's past inspections that found a problem, shrunk toward the
                             city's share (:data:`CATEGORY_PRIOR` pseudo-visits); the model uses its logit
``site_record``              the site's own share of problem-finding inspections, shrunk toward its category's
                             (:data:`SITE_PRIOR` pseudo-visits); each past visit counts with its inspector's
                             detection ratio (a visit by a weak inspector that found nothing says less);
                             the model uses ``logit(site) - logit(category)``
``complaints_near``          complaints in the H3 disk (:data:`NEAR_K` rings at resolution :data:`NEAR_RES`,
                             about 200 m) around the site, each weighted ``exp(-age / TAU_DAYS)``
``hits_near``                inspection hits in the same disk, time-decayed the same way
``open_problems``            problems at the site not closed before ``as_of``
``overdue_problems``         of those, past their deadline and not rectified
``days_since_inspection``    days since the site's last inspection (capped at 365; never inspected: 365)
``rebounds``                 rebound cases at the site (``events.rebound_of`` set), weighted
                             ``exp(-age / REBOUND_TAU_DAYS)``
``hotspot``                  Getis-Ord Gi* level (0..3 for not significant, 90 %, 95 %, 99 % hot) of the site's
                             H3 res-9 cell for the complaints of the :data:`HOTSPOT_DAYS` days before (from
                             :func:`geo.hotspots.hotspots`, Benjamini-Hochberg adjusted)
===========================  =================================================================================

``logit(risk) = b0 + Σ w_k x_k`` where ``x_k`` is the transformed component (:data:`TRANSFORMS`).
Each component's *contribution* is ``w_k (x_k - m_k)`` in logit units, relative to the mean ``m_k``
(of the training rows for a learnt model, of the scored sites for the default), so
``logit(risk) = base + Σ contributions`` and the reason names the largest positive ones.

Two models (issue 16)
---------------------
:func:`fit_model` fits both on the training year before the start of ``as_of``'s day (all but its latest
:data:`HOLDOUT_SHARE`; the fit is kept while the data before that cut-off is unchanged, so the day's writes do not
make the next score refit, and the scores still read all the data before ``as_of``):
``gbm``, gradient-boosted trees (:mod:`~civicgrid.sites.risk.gbm`) on the components plus the site's own record
(:data:`FEATURES`: failures, critical findings, scores, trend, days since the last failure, age in the frame,
inspections a year, whether the last visit found a critical problem or was a follow-up, the recent problem share of
the other sites of its area, the recent problem share of the other sites of the same name (a chain's other
branches, ``brand_rate``), problems found per visit of any severity, season) and the visit's conditions
(:data:`VISIT_INPUTS`: the inspector, whether the visit is a follow-up, and its kind, as the problem share of the
earlier visits of that kind), with monotone constraints (:data:`MONOTONE`); and ``learnt``, the logistic regression
below (:data:`LINEAR`: the components and eight terms of the site's record, :data:`LOGISTIC_EXTRA`), plus the same
conditions of the visit. A site is scored for a routine visit (the most frequent kind) by an average inspector;
:func:`visit_probabilities` scores planned visits with their own kind and inspector, known before the day (the
backtest passes those of the window's inspections, never their outcome). Each training row's inputs are computed
as of its inspection's time
(:data:`TRAIN_GAP_DAYS` can move that moment up to so many days earlier; tried with 60, not kept). A third
candidate, ``blend``, is the mean of the two models' calibrated logits. ``auto`` keeps the higher AUC on the
held-out rows (the trees or the blend only when higher than the logistic model's by more than its standard error;
the choice is printed); the chosen model is Platt-calibrated on them, so ``risk`` is a probability. The trees are
explained by their path contributions, the logistic model by its linear terms, the blend by half of each; a reason
names only inputs whose contribution raises the site's risk.

Learnt weights
--------------
With at least :data:`MIN_TRAIN` labelled inspections (and :data:`MIN_CLASS` of each outcome) in the
:data:`TRAIN_DAYS` days before ``as_of``, the weights come from an L2-regularised logistic regression
(scikit-learn ``LogisticRegressionCV``, the penalty chosen by 5-fold log-loss) of "this inspection
found a problem" on the components computed *as of each inspection's time* from the data before it
(the same vectorized code as for scoring, so no leakage). Otherwise :data:`DEFAULT_WEIGHTS`, a
transparent hand-set rule, is used. ``model=`` forces either.

Inspector effects
-----------------
Inspectors differ in how readily they record problems. Each inspector's detection ratio is
observed / expected problem-finding visits (expected from each visit's category rate), shrunk with
:data:`INSPECTOR_PRIOR` pseudo-visits (:func:`inspector_effects`). It is used twice: as a covariate
``log(detection)`` in the learnt model (a fixed effect, so the component weights are not confounded by
who made the visits), and as the weight of each past visit in ``site_record``. Scores are for an
average inspector (``log detection = 0``).

Not used: ``events.status`` and ``events.reopened`` describe the record *now*, with no time stamp for
when they changed, so they would leak the future into a backtest; open and overdue use ``closed_at``,
``rectified_at`` and ``deadline``, and rebounds use ``rebound_of`` with the rebound's own time.

The modules, by topic:

* :mod:`~civicgrid.sites.risk.components`: the components, their labels, transforms and default weights, and
  the tunables;
* :mod:`~civicgrid.sites.risk.features`: the data before ``as_of`` and the components at any moments;
* :mod:`~civicgrid.sites.risk.model`: inspector effects, both models, the choice and calibration (:func:`fit_model`);
* :mod:`~civicgrid.sites.risk.gbm`: the gradient-boosted trees and their contributions;
* :mod:`~civicgrid.sites.risk.score`: :func:`site_risk` and the backtest's fast :func:`visit_probabilities`;
* :mod:`~civicgrid.sites.risk.reasons`: the reasons and the per-site explanations;
* :mod:`~civicgrid.sites.risk.selection`: the default moment, categories and areas to show.

Their public names are importable from here. The tunables are read from the module that defines them
(:mod:`~civicgrid.sites.risk.components`).
"""

from __future__ import annotations

from civicgrid.sites.risk.components import (
    AREA_PRIOR,
    AREA_RES,
    AREA_TAU_DAYS,
    CATEGORY_PRIOR,
    COMPONENTS,
    DEFAULT_WEIGHTS,
    FAIL_TAU_DAYS,
    FEATURES,
    HOLDOUT_SHARE,
    HOTSPOT_DAYS,
    HOTSPOT_RES,
    INSPECTOR_PRIOR,
    KIND_PRIOR,
    LABELS,
    LINEAR,
    LOGISTIC_EXTRA,
    LOOKBACK_DAYS,
    MAX_DAYS,
    MAX_TRAIN,
    MIN_CLASS,
    MIN_TRAIN,
    MONOTONE,
    NEAR_K,
    NEAR_RES,
    REBOUND_TAU_DAYS,
    SITE_PRIOR,
    TAU_DAYS,
    TRAIN_DAYS,
    TRAIN_GAP_DAYS,
    TRANSFORMS,
    VISIT_INPUTS,
    AsOf,
    parse_as_of,
)
from civicgrid.sites.risk.model import MODELS, fit_model, inspector_effects
from civicgrid.sites.risk.reasons import explain, risk_records
from civicgrid.sites.risk.score import site_risk, visit_probabilities
from civicgrid.sites.risk.selection import default_as_of, resolve_categories, select_sites

__all__ = [
    "AREA_PRIOR",
    "AREA_RES",
    "AREA_TAU_DAYS",
    "CATEGORY_PRIOR",
    "COMPONENTS",
    "DEFAULT_WEIGHTS",
    "FAIL_TAU_DAYS",
    "FEATURES",
    "HOLDOUT_SHARE",
    "HOTSPOT_DAYS",
    "HOTSPOT_RES",
    "INSPECTOR_PRIOR",
    "KIND_PRIOR",
    "LABELS",
    "LINEAR",
    "LOGISTIC_EXTRA",
    "LOOKBACK_DAYS",
    "MAX_DAYS",
    "MAX_TRAIN",
    "MIN_CLASS",
    "MIN_TRAIN",
    "MODELS",
    "MONOTONE",
    "NEAR_K",
    "NEAR_RES",
    "REBOUND_TAU_DAYS",
    "SITE_PRIOR",
    "TAU_DAYS",
    "TRAIN_DAYS",
    "TRAIN_GAP_DAYS",
    "TRANSFORMS",
    "VISIT_INPUTS",
    "AsOf",
    "default_as_of",
    "explain",
    "fit_model",
    "inspector_effects",
    "parse_as_of",
    "resolve_categories",
    "risk_records",
    "select_sites",
    "site_risk",
    "visit_probabilities",
]
