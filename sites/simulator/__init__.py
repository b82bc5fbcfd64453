"""The assessment simulator: the conformity rate (符合率) if the assessors came tomorrow, and which sites to fix first.

The national field assessment (实地考察) draws ``k_c`` sites at random, without
replacement, from the active sites of each category ``c`` of the sample frame
(样本框) and scores each drawn site conforming (符合) or not. Each active site
``i`` has a probability ``p_i`` of being found non-conforming now (from its
current state, see :func:`site_probabilities`); outcomes are independent.

Definitions used throughout
---------------------------
* **Category rate**: conforming drawn sites / ``k_c`` (a category with fewer
  than ``k_c`` active sites is drawn in full, ``k_c = n_c``).
* **Overall rate** (``aggregate``):

  - ``"pooled"`` (default): conforming drawn sites / all drawn sites,
    ``sum_c C_c / sum_c k_c`` — the glossary's 符合率 (conforming checks / all
    checks) over the whole visit; larger draws weigh more.
  - ``"mean"``: the plain mean of the category rates (every category equal).

* **Below threshold**: a rate strictly less than ``threshold``.
* **Expected rates are exact**: the expected number of non-conforming sites in a
  uniform random ``k``-subset is ``k * mean(p)``, so ``E[rate_c] = 1 - mean_c(p)``.
  The full distribution is exact too: the number ``F`` of non-conforming sites
  of the whole category is Poisson-binomial, and the number drawn given ``F`` is
  hypergeometric(``n_c, F, k_c``); categories are independent, so the overall
  distribution is their convolution (:func:`exact_assessment`). The Monte-Carlo
  simulation (:func:`simulate_assessment`) gives the intervals and checks the
  exact figures.
* **What if** (:func:`fix_first`): fixing site ``i`` sets ``p_i = 0``. Its exact gain
  is ``p_i / n_c`` in its category's expected rate and ``a_c * k_c * p_i / (n_c * D)``
  in the overall rate (pooled: ``a_c = 1, D = sum k``; mean: ``a_c = 1 / k_c,
  D = number of categories``). Gains add up, so the best ``N`` sites are the ``N``
  largest gains.

The modules, by topic:

* :mod:`~civicgrid.sites.simulator.sizes`: the draws per category, ``k``;
* :mod:`~civicgrid.sites.simulator.probabilities`: each site's state and probability ``p``;
* :mod:`~civicgrid.sites.simulator.exact`: the exact expected rates and distributions;
* :mod:`~civicgrid.sites.simulator.visits`: the Monte-Carlo simulation;
* :mod:`~civicgrid.sites.simulator.readiness`: what to fix first, and :func:`assess`.

Their public names are importable from here.
"""

from __future__ import annotations

from civicgrid.sites.simulator.exact import AGGREGATES, exact_assessment
from civicgrid.sites.simulator.probabilities import (
    RULE,
    WINDOW_DAYS,
    default_as_of,
    nonconformity_probability,
    site_probabilities,
    site_state,
)
from civicgrid.sites.simulator.readiness import assess, fix_first, fix_gains
from civicgrid.sites.simulator.sizes import (
    ASSESSMENT_CSV,
    DEFAULT_K,
    assessment_sizes,
    parse_k_options,
    resolve_category,
)
from civicgrid.sites.simulator.visits import Simulation, simulate_assessment, simulate_visits

__all__ = [
    "AGGREGATES",
    "ASSESSMENT_CSV",
    "DEFAULT_K",
    "RULE",
    "WINDOW_DAYS",
    "Simulation",
    "assess",
    "assessment_sizes",
    "default_as_of",
    "exact_assessment",
    "fix_first",
    "fix_gains",
    "nonconformity_probability",
    "parse_k_options",
    "resolve_category",
    "simulate_assessment",
    "simulate_visits",
    "site_probabilities",
    "site_state",
]
