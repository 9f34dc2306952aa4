"""Accuracy and latency predictors on feature matrices, and their quality metrics.

    from predictors import create_predictor, load_predictor, report
    predictor = create_predictor("xgboost").fit(X_train, y_train)   # or "ridge", "mlp", "gp", "gp_linear", "auto"
    report(y_test, predictor.predict(X_test))  # {"kendall_tau", "spearman", "rmse", "mape"}
    predictor.save("latency.json"); load_predictor("latency.json")
"""
from .auto import AutoPredictor
from .base import (
    DEFAULT_PREDICTOR,
    Predictor,
    create_predictor,
    list_predictors,
    load_predictor,
    predictor_options,
    register_predictor,
)
from .metrics import report
from .models import GPPredictor, LinearGPPredictor, MLPPredictor, RidgePredictor, XGBoostPredictor
from .validation import PredictorError

__all__ = [
    "DEFAULT_PREDICTOR", "AutoPredictor", "GPPredictor", "LinearGPPredictor", "MLPPredictor", "Predictor",
    "PredictorError", "RidgePredictor", "XGBoostPredictor", "create_predictor", "list_predictors",
    "load_predictor", "predictor_options", "register_predictor", "report",
]
