"""The gradient-boosted risk model: scikit-learn's ``HistGradientBoostingClassifier`` with monotone constraints,
Platt-calibrated on the latest training rows, and per-site contributions from its trees.

LightGBM is not a dependency of civicgrid, so the trees are scikit-learn's. Their contributions are computed
path by path (Saabas): at every split a sample passes, the change of the expected value (the cover-weighted mean
of the leaves below) from the node to the child it takes is credited to the split's feature. Summed over the
trees, ``bias + Σ contributions`` is exactly the model's raw logit (a test checks it). With a monotone increasing
constraint every left subtree's leaves are at most every right subtree's, so the lowest value of such a feature
(no failures, no open problems) is never credited with raising the risk.
"""

from __future__ import annotations

import numpy as np

#: Settings of the trees (chosen once on the NYC 2013 and Toronto 2010 training years, not per window).
GBM_PARAMS = {"max_iter": 150, "learning_rate": 0.08, "max_leaf_nodes": 15, "min_samples_leaf": 40,
              "l2_regularization": 1.0, "early_stopping": False, "random_state": 0}


def fit_gbm(x: np.ndarray, y: np.ndarray, monotone: list[int]):
    """A monotone-constrained gradient-boosted classifier of ``y`` on ``x`` (NaN: missing)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    x = np.array(x, dtype=float)
    x[:, np.isnan(x).all(axis=0)] = 0.0  # an input the city does not record (no scores): constant, never split
    model = HistGradientBoostingClassifier(monotonic_cst=monotone, **GBM_PARAMS)
    model.fit(x, y.astype(int))
    return model


def _tree_arrays(nodes) -> tuple[np.ndarray, ...]:
    """A tree's arrays with the cover-weighted expected value of every node (leaves: their value)."""
    value = nodes["value"].astype(float).copy()
    count = nodes["count"].astype(float)
    leaf = nodes["is_leaf"].astype(bool)
    left, right = nodes["left"].astype(np.int64), nodes["right"].astype(np.int64)
    # children have larger indices than their parent: fill bottom-up
    for i in range(len(nodes) - 1, -1, -1):
        if not leaf[i]:
            cl, cr = count[left[i]], count[right[i]]
            value[i] = (cl * value[left[i]] + cr * value[right[i]]) / max(cl + cr, 1e-12)
    return (value, leaf, left, right, nodes["feature_idx"].astype(np.int64), nodes["num_threshold"].astype(float),
            nodes["missing_go_to_left"].astype(bool))


def contributions(model, x: np.ndarray) -> tuple[float, np.ndarray]:
    """``(bias, contrib)``: per row and feature the contribution to the raw logit, ``bias + contrib.sum(1)``
    being the model's ``decision_function``."""
    x = np.asarray(x, dtype=float)
    n, p = x.shape
    contrib = np.zeros((n, p))
    bias = float(np.ravel(model._baseline_prediction)[0])
    rows = np.arange(n)
    for predictors in model._predictors:  # one tree per boosting iteration (binary: one class)
        value, leaf, left, right, feat, thr, miss_left = _tree_arrays(predictors[0].nodes)
        bias += value[0]
        node = np.zeros(n, dtype=np.int64)
        active = ~leaf[node]
        while active.any():
            i = rows[active]
            nd = node[i]
            v = x[i, feat[nd]]
            go_left = np.where(np.isnan(v), miss_left[nd], v <= thr[nd])
            child = np.where(go_left, left[nd], right[nd])
            contrib[i, feat[nd]] += value[child] - value[nd]  # one split per row and step
            node[i] = child
            active = ~leaf[node]
    return bias, contrib
