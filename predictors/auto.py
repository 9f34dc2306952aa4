"""``auto``: picks the model by k-fold cross-validated Kendall tau, as DyNAS-T does."""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import KFold

from .base import (
    Predictor,
    create_predictor,
    list_predictors,
    predictor_from_document,
    register_predictor,
)
from .metrics import kendall_tau
from .validation import PredictorError


@register_predictor("auto")
class AutoPredictor(Predictor):
    """Scores each candidate (with its default options) by the mean Kendall tau over ``folds``
    held-out folds, then refits the best on all rows. Rank agreement is what a search needs.

    After ``fit``: ``chosen`` is the picked name and ``cv_kendall_tau`` every candidate's score,
    so that predictor quality is logged, not just computed. Ties go to the earlier candidate.
    """

    def __init__(self, candidates=("xgboost", "ridge", "mlp", "gp"), folds: int = 5, seed: int = 0):
        super().__init__()
        self.candidates = tuple(candidates)
        allowed = [name for name in list_predictors() if name != self.kind]
        bad = [name for name in self.candidates if name not in allowed]
        if bad or not self.candidates:
            raise PredictorError(f"auto candidates must be among {', '.join(allowed)}; "
                                 f"got {list(self.candidates)}")
        if not (isinstance(folds, int) and folds >= 2):
            raise PredictorError(f"auto folds must be an integer >= 2, got {folds!r}")
        self.folds, self.seed = folds, seed
        self.chosen: str | None = None
        self.cv_kendall_tau: dict[str, float] = {}
        self._model: Predictor | None = None

    def _fit(self, X, y):
        # Two rows per held-out fold is the least for which a rank correlation means anything.
        if len(X) < 2 * self.folds:
            raise PredictorError(f"auto needs at least {2 * self.folds} rows for {self.folds}-fold "
                                 f"cross-validation, got {len(X)}")
        splits = list(KFold(self.folds, shuffle=True, random_state=self.seed).split(X))
        self.cv_kendall_tau = {name: _cv_kendall_tau(name, X, y, splits) for name in self.candidates}
        self.chosen = max(self.candidates, key=self.cv_kendall_tau.__getitem__)
        self._model = create_predictor(self.chosen).fit(X, y)

    def _predict(self, X):
        return self._model.predict(X)

    def _state(self):
        return {"cv_kendall_tau": self.cv_kendall_tau, "model": self._model.to_document()}

    def _set_state(self, state):
        self._model = predictor_from_document(state["model"])
        self.chosen = self._model.kind
        self.cv_kendall_tau = {name: float(tau) for name, tau in state["cv_kendall_tau"].items()}


def _cv_kendall_tau(name: str, X: np.ndarray, y: np.ndarray, splits) -> float:
    taus = [kendall_tau(y[test], create_predictor(name).fit(X[train], y[train]).predict(X[test]))
            for train, test in splits]
    # A fold where the model predicts a constant ranks nothing: count it as tau 0, not NaN.
    return float(np.mean(np.nan_to_num(taus, nan=0.0)))
