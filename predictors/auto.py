"""``auto``: picks the model by k-fold cross-validated Kendall tau, as DyNAS-T does."""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import KFold

from .base import (
    Predictor,
    create_predictor,
    list_predictors,
    predictor_from_document,
    predictor_options,
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

    The cost is ``folds`` fits of each candidate on part of at most ``max_cv_rows`` rows (a random
    subset of a larger table: enough to rank the candidates), then one fit on all rows. The
    MLP is not a default candidate: on 100 rows it is unreliable (``docs/predictors.md``). ``loss``
    goes to the candidates that take one (xgboost, ridge): ``"relative"`` for latencies.
    """

    def __init__(self, candidates=("xgboost", "ridge", "gp"), folds: int = 3, seed: int = 0,
                 loss: str = "squared", max_cv_rows: int = 300):
        super().__init__()
        self.candidates = tuple(candidates)
        allowed = [name for name in list_predictors() if name != self.kind]
        bad = [name for name in self.candidates if name not in allowed]
        if bad or not self.candidates:
            raise PredictorError(f"auto candidates must be among {', '.join(allowed)}; "
                                 f"got {list(self.candidates)}")
        if not (isinstance(folds, int) and folds >= 2):
            raise PredictorError(f"auto folds must be an integer >= 2, got {folds!r}")
        if isinstance(max_cv_rows, bool) or not isinstance(max_cv_rows, int) or max_cv_rows < 2 * folds:
            raise PredictorError(f"auto max_cv_rows must be an integer >= 2 x folds ({2 * folds}), got {max_cv_rows!r}")
        self.folds, self.seed, self.loss, self.max_cv_rows = folds, seed, loss, max_cv_rows
        for name in self.candidates:  # a bad loss fails here, not in the middle of a fit
            self._create(name)
        self.chosen: str | None = None
        self.cv_kendall_tau: dict[str, float] = {}
        self._model: Predictor | None = None

    def _fit(self, X, y):
        # Two rows per held-out fold is the least for which a rank correlation means anything.
        if len(X) < 2 * self.folds:
            raise PredictorError(f"auto needs at least {2 * self.folds} rows for {self.folds}-fold "
                                 f"cross-validation, got {len(X)}")
        rows = np.arange(len(X))
        if len(X) > self.max_cv_rows:
            rows = np.sort(np.random.default_rng(self.seed).choice(len(X), self.max_cv_rows, replace=False))
        splits = [(rows[train], rows[test])
                  for train, test in KFold(self.folds, shuffle=True, random_state=self.seed).split(rows)]
        self.cv_kendall_tau = {name: _cv_kendall_tau(lambda n=name: self._create(n), X, y, splits)
                               for name in self.candidates}
        self.chosen = max(self.candidates, key=self.cv_kendall_tau.__getitem__)
        self._model = self._create(self.chosen).fit(X, y)

    def _create(self, name: str) -> Predictor:
        """A candidate with its defaults, and this predictor's ``loss`` where it takes one."""
        return create_predictor(name, **({"loss": self.loss} if "loss" in predictor_options(name) else {}))

    def _predict(self, X):
        return self._model.predict(X)

    def _state(self):
        return {"cv_kendall_tau": self.cv_kendall_tau, "model": self._model.to_document()}

    def _set_state(self, state):
        self._model = predictor_from_document(state["model"])
        self.chosen = self._model.kind
        self.cv_kendall_tau = {name: float(tau) for name, tau in state["cv_kendall_tau"].items()}


def _cv_kendall_tau(make, X: np.ndarray, y: np.ndarray, splits) -> float:
    taus = [kendall_tau(y[test], make().fit(X[train], y[train]).predict(X[test]))
            for train, test in splits]
    # A fold where the model predicts a constant ranks nothing: count it as tau 0, not NaN.
    return float(np.mean(np.nan_to_num(taus, nan=0.0)))
