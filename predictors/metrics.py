"""Predictor quality: rank agreement matters most for search, error size for constraints."""
from __future__ import annotations

import numpy as np
from scipy import stats

from .validation import PredictorError, check_vector


def _rank_correlation(statistic, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    # A constant side has no order to compare: NaN, without scipy's warning about it.
    if np.ptp(y_true) == 0 or np.ptp(y_pred) == 0:
        return float("nan")
    return float(statistic(y_true, y_pred).statistic)


def kendall_tau(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Kendall tau-b of two checked 1-D arrays; NaN when either is constant."""
    return _rank_correlation(stats.kendalltau, y_true, y_pred)


def report(y_true, y_pred) -> dict[str, float]:
    """``{"kendall_tau", "spearman", "rmse", "mape"}``; MAPE in percent.

    MAPE skips rows whose true value is 0 (their relative error is undefined) and is NaN when
    every true value is 0. The rank correlations are NaN when either side is constant.
    """
    y_true = check_vector(y_true, "y_true")
    y_pred = check_vector(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise PredictorError(f"y_pred has {y_pred.size} values but y_true has {y_true.size}")
    error = y_pred - y_true
    nonzero = y_true != 0
    mape = 100.0 * np.mean(np.abs(error[nonzero] / y_true[nonzero])) if nonzero.any() else np.nan
    return {
        "kendall_tau": kendall_tau(y_true, y_pred),
        "spearman": _rank_correlation(stats.spearmanr, y_true, y_pred),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mape": float(mape),
    }
