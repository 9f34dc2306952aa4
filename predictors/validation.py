"""Input checks shared by every predictor and by ``report``: fail early, with the shape at fault."""
from __future__ import annotations

import numpy as np


class PredictorError(ValueError):
    """Bad input to a predictor, or a predictor file that cannot be loaded."""


def _as_float_array(values, name: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise PredictorError(f"{name} must be numeric: {exc}") from None


def _describe_bad_rows(finite_rows: np.ndarray) -> str:
    bad = np.flatnonzero(~finite_rows)
    return f"{bad.size} row(s), first row {bad[0]}"


def check_features(X, n_features: int | None = None) -> np.ndarray:
    """``X`` as a finite float array (n_rows, n_features); ``n_features`` is the fitted width."""
    X = _as_float_array(X, "X")
    if X.ndim != 2:
        raise PredictorError(f"X must be 2-D (n_rows, n_features), got shape {X.shape}")
    if X.size == 0:
        raise PredictorError(f"X is empty (shape {X.shape})")
    if n_features is not None and X.shape[1] != n_features:
        raise PredictorError(f"X has {X.shape[1]} features but the predictor was fitted on {n_features}")
    finite_rows = np.isfinite(X).all(axis=1)
    if not finite_rows.all():
        raise PredictorError(f"X has NaN or inf in {_describe_bad_rows(finite_rows)}")
    return X


def check_vector(values, name: str) -> np.ndarray:
    """``values`` as a finite, non-empty 1-D float array (targets or predictions)."""
    values = _as_float_array(values, name)
    if values.ndim != 1:
        raise PredictorError(f"{name} must be 1-D, got shape {values.shape}")
    if values.size == 0:
        raise PredictorError(f"{name} is empty")
    finite = np.isfinite(values)
    if not finite.all():
        raise PredictorError(f"{name} has NaN or inf in {_describe_bad_rows(finite)}")
    return values
