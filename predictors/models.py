"""The regression models, each small enough to fit a few hundred rows in seconds on a CPU.

Every fitted model is kept as plain arrays (or xgboost's own JSON model), so that saving writes
numbers, never a pickle, and a loaded model predicts exactly what the saved one did.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.optimize
import xgboost
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel
from sklearn.neural_network import MLPRegressor
from threadpoolctl import threadpool_limits

from .base import Predictor, register_predictor
from .validation import PredictorError


@contextmanager
def _small_problem():
    # On a few hundred rows, BLAS threads cost more than they save, and on a busy machine they
    # slow a fit tenfold. The models are trained lightly on purpose (few iterations, bounded
    # hyperparameters): sklearn's warnings about it would only bury a search run's messages.
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


LOSSES = ("squared", "relative")
RELATIVE_FLOOR = 0.01  # ridge's relative loss: |error| / y below this is penalised as its square


def check_loss(kind: str, loss: str) -> str:
    if loss not in LOSSES:
        raise PredictorError(f"{kind} loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    return loss


def relative_weights(y: np.ndarray, kind: str) -> np.ndarray:
    """1 / y, for a fit that minimises the relative (absolute percentage) error: targets must be > 0."""
    if y.min() <= 0:
        raise PredictorError(f"{kind} loss 'relative' needs positive targets (latencies), got a minimum of "
                             f"{float(y.min())!r}; use loss='squared'")
    return 1.0 / y


@dataclass
class Standardizer:
    """Per-column (or scalar, for targets) mean and scale; a constant column keeps scale 1."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> Standardizer:
        scale = values.std(axis=0)
        return cls(values.mean(axis=0), np.where(scale > 0, scale, 1.0))

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.scale

    def inverse(self, values: np.ndarray) -> np.ndarray:
        return values * self.scale + self.mean

    def to_state(self) -> dict:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_state(cls, state: dict) -> Standardizer:
        return cls(np.asarray(state["mean"], dtype=np.float64), np.asarray(state["scale"], dtype=np.float64))


@register_predictor("xgboost")
class XGBoostPredictor(Predictor):
    """Gradient-boosted trees (the default): captures gene interactions, insensitive to scale.

    ``loss="relative"`` fits the absolute error weighted by 1 / y: the median-like fit that
    minimises MAPE, robust to the slow outliers of latency measurements (``docs/predictors.md``)."""

    def __init__(self, n_estimators: int = 300, max_depth: int = 4, learning_rate: float = 0.05,
                 subsample: float = 0.8, n_jobs: int = 1, seed: int = 0, loss: str = "squared"):
        # One thread: on a few hundred rows, threads gain nothing and on a busy machine their
        # synchronisation makes a fit several times slower.
        super().__init__()
        self.n_estimators, self.max_depth, self.learning_rate = n_estimators, max_depth, learning_rate
        self.subsample, self.n_jobs, self.seed = subsample, n_jobs, seed
        self.loss = check_loss(self.kind, loss)
        self._booster: xgboost.Booster | None = None

    def _fit(self, X, y):
        relative = self.loss == "relative"
        model = xgboost.XGBRegressor(
            n_estimators=self.n_estimators, max_depth=self.max_depth, learning_rate=self.learning_rate,
            subsample=self.subsample, n_jobs=self.n_jobs, random_state=self.seed, tree_method="hist",
            objective="reg:absoluteerror" if relative else "reg:squarederror")
        # weights of mean 1: xgboost's min_child_weight counts them, so 1 / y alone (~0.05) would block splits
        weights = relative_weights(y, self.kind) if relative else None
        model.fit(X, y, sample_weight=None if weights is None else weights / weights.mean())
        self._booster = model.get_booster()

    def _predict(self, X):
        return self._booster.inplace_predict(X)

    def _state(self):
        return {"booster": self._booster.save_raw(raw_format="json").decode("utf-8")}

    def _set_state(self, state):
        booster = xgboost.Booster(params={"nthread": self.n_jobs})
        booster.load_model(bytearray(state["booster"].encode("utf-8")))
        self._booster = booster


@register_predictor("ridge")
class RidgePredictor(Predictor):
    """Ridge regression on standardised features: fast, hard to overfit, a floor for the others.

    ``loss="relative"``: least absolute relative error (iteratively reweighted least squares, with
    the same ridge penalty), the linear fit that minimises MAPE and shrugs off outliers."""

    IRLS_STEPS = 30

    def __init__(self, alpha: float = 1.0, loss: str = "squared"):
        super().__init__()
        if not alpha > 0:
            raise PredictorError(f"ridge alpha must be > 0, got {alpha!r}")
        self.alpha, self.loss = alpha, check_loss(self.kind, loss)
        self._scaler: Standardizer | None = None
        self._coef = self._intercept = None

    def _fit(self, X, y):
        self._scaler = Standardizer.fit(X)
        Z = self._scaler.transform(X)
        weights = relative_weights(y, self.kind) ** 2 if self.loss == "relative" else np.ones_like(y)
        steps = self.IRLS_STEPS if self.loss == "relative" else 1
        for _ in range(steps):
            self._solve(Z, y, weights)
            if self.loss == "relative":  # |r| / y = r^2 / (y^2 |r|): reweight by the last residuals
                relative_error = np.abs(Z @ self._coef + self._intercept - y) / y
                # errors under 1% count as squared (Huber-like): rows fitted exactly would otherwise
                # get weights so large that the ridge penalty vanishes and the fit chases noise
                weights = 1.0 / (y**2 * np.maximum(relative_error, RELATIVE_FLOOR))

    def _solve(self, Z, y, weights):
        """Weighted ridge: minimises sum(w (Z c + b - y)^2) + alpha |c|^2 (the intercept b is free)."""
        w = weights / weights.sum()
        z_mean, y_mean = w @ Z, float(w @ y)
        Zc, yc = Z - z_mean, y - y_mean
        # alpha > 0 keeps the normal equations solvable even with constant or duplicate columns.
        gram = (Zc * w[:, None]).T @ Zc * len(y) + self.alpha * np.eye(Z.shape[1])
        self._coef = np.linalg.solve(gram, (Zc * w[:, None]).T @ yc * len(y))
        self._intercept = y_mean - float(z_mean @ self._coef)

    def _predict(self, X):
        return self._scaler.transform(X) @ self._coef + self._intercept

    def _state(self):
        return {"scaler": self._scaler.to_state(), "coef": self._coef.tolist(), "intercept": self._intercept}

    def _set_state(self, state):
        self._scaler = Standardizer.from_state(state["scaler"])
        self._coef = np.asarray(state["coef"], dtype=np.float64)
        self._intercept = float(state["intercept"])


@register_predictor("mlp")
class MLPPredictor(Predictor):
    """Small ReLU network trained by sklearn (L-BFGS suits a few hundred rows), on standardised
    inputs and targets; prediction is our own forward pass over the learned weights."""

    def __init__(self, hidden_sizes=(64, 64), alpha: float = 1e-3, max_iter: int = 500, seed: int = 0):
        super().__init__()
        self.hidden_sizes = tuple(int(size) for size in hidden_sizes)
        self.alpha, self.max_iter, self.seed = alpha, max_iter, seed
        self._x_scaler = self._y_scaler = None
        self._weights: list[np.ndarray] = []
        self._biases: list[np.ndarray] = []

    def _fit(self, X, y):
        self._x_scaler, self._y_scaler = Standardizer.fit(X), Standardizer.fit(y)
        net = MLPRegressor(hidden_layer_sizes=self.hidden_sizes, activation="relu", solver="lbfgs",
                           alpha=self.alpha, max_iter=self.max_iter, random_state=self.seed)
        with _small_problem():
            net.fit(self._x_scaler.transform(X), self._y_scaler.transform(y))
        self._weights, self._biases = list(net.coefs_), list(net.intercepts_)

    def _predict(self, X):
        hidden = self._x_scaler.transform(X)
        for weight, bias in zip(self._weights[:-1], self._biases[:-1], strict=True):
            hidden = np.maximum(hidden @ weight + bias, 0.0)
        output = hidden @ self._weights[-1] + self._biases[-1]
        return self._y_scaler.inverse(output[:, 0])

    def _state(self):
        return {"x_scaler": self._x_scaler.to_state(), "y_scaler": self._y_scaler.to_state(),
                "weights": [w.tolist() for w in self._weights], "biases": [b.tolist() for b in self._biases]}

    def _set_state(self, state):
        self._x_scaler = Standardizer.from_state(state["x_scaler"])
        self._y_scaler = Standardizer.from_state(state["y_scaler"])
        self._weights = [np.asarray(w, dtype=np.float64) for w in state["weights"]]
        self._biases = [np.asarray(b, dtype=np.float64) for b in state["biases"]]


@register_predictor("gp")
class GPPredictor(Predictor):
    """Gaussian process: Matern 5/2 with one length scale per feature, plus a noise term, on
    standardised inputs and targets. Prediction is the posterior mean.

    The cost is bounded: the kernel's hyperparameters are fitted on at most ``max_opt_rows`` rows
    (a random subset) with at most ``max_iter`` L-BFGS steps and as many likelihood evaluations;
    the posterior then conditions on every row with those hyperparameters fixed (one Cholesky
    factorisation). Exact GP regression with hyperparameters fitted on a subset, not a sparse
    approximation of the posterior."""

    def __init__(self, n_restarts: int = 0, seed: int = 0, max_opt_rows: int = 200, max_iter: int = 50):
        super().__init__()
        _check_tuning(self.kind, max_opt_rows=max_opt_rows, max_iter=max_iter)
        self.n_restarts, self.seed, self.max_opt_rows, self.max_iter = n_restarts, seed, max_opt_rows, max_iter
        self._x_scaler = self._y_scaler = self._kernel = None
        self._train = self._dual_coef = None

    @staticmethod
    def _make_kernel(n_features: int):
        return (ConstantKernel(1.0, (1e-3, 1e3))
                * Matern(length_scale=np.ones(n_features), length_scale_bounds=(1e-2, 1e3), nu=2.5)
                + WhiteKernel(1e-2, (1e-6, 1.0)))

    def _optimizer(self, objective, initial_theta, bounds):
        result = scipy.optimize.minimize(objective, initial_theta, method="L-BFGS-B", jac=True, bounds=bounds,
                                         options={"maxiter": self.max_iter, "maxfun": self.max_iter})
        return result.x, result.fun

    def _fit(self, X, y):
        self._x_scaler, self._y_scaler = Standardizer.fit(X), Standardizer.fit(y)
        Z, t = self._x_scaler.transform(X), self._y_scaler.transform(y)
        rows = np.arange(len(Z))
        if len(Z) > self.max_opt_rows:
            rows = np.sort(np.random.default_rng(self.seed).choice(len(Z), self.max_opt_rows, replace=False))
        with _small_problem():
            tuned = GaussianProcessRegressor(self._make_kernel(X.shape[1]), optimizer=self._optimizer,
                                             n_restarts_optimizer=self.n_restarts, random_state=self.seed)
            tuned.fit(Z[rows], t[rows])
            gp = GaussianProcessRegressor(tuned.kernel_, optimizer=None).fit(Z, t)
        self._kernel, self._train, self._dual_coef = gp.kernel_, gp.X_train_, gp.alpha_

    def _predict(self, X):
        # The posterior mean k(X, X_train) @ alpha, as sklearn's predict computes it (the
        # WhiteKernel term is zero between two different sets of inputs).
        mean = self._kernel(self._x_scaler.transform(X), self._train) @ self._dual_coef
        return self._y_scaler.inverse(mean)

    def _state(self):
        return {"x_scaler": self._x_scaler.to_state(), "y_scaler": self._y_scaler.to_state(),
                "theta": self._kernel.theta.tolist(), "train": self._train.tolist(),
                "dual_coef": self._dual_coef.tolist()}

    def _set_state(self, state):
        self._x_scaler = Standardizer.from_state(state["x_scaler"])
        self._y_scaler = Standardizer.from_state(state["y_scaler"])
        self._train = np.asarray(state["train"], dtype=np.float64)
        self._dual_coef = np.asarray(state["dual_coef"], dtype=np.float64)
        self._kernel = self._make_kernel(self._train.shape[1]).clone_with_theta(np.asarray(state["theta"]))


@register_predictor("gp_linear")
class LinearGPPredictor(Predictor):
    """Gaussian process for one-hot architecture encodings: a Bayesian linear model in two groups of
    columns plus one isotropic RBF and noise. Indicator columns (every value 0 or 1: a one-hot of a
    block's choice) stay 0 / 1; the other columns (MACs, params, ...) are standardised. Each group
    has its own linear variance, tuned by the marginal likelihood with the RBF's variance and
    length scale, a constant and the noise (six hyperparameters):

        k(x, x') = a <c, c'> / n_c + b <i, i'> / m_i + s exp(-|z - z'|^2 / 2 l^2) + d + noise

    (``c``: standardised continuous columns, ``i``: indicators, ``m_i`` their mean count of ones,
    ``z`` both). With a few dozen rows the likelihood leans on the few size columns that every row
    informs, and hands weight to the per-choice indicators as rows come in: a hierarchical prior.
    Standardising the indicators instead (as ``gp`` does) inflates the rarest choices and gives the
    three size columns 3 of 143 shares of the prior: on OFA's space that fit ranked 1,000 random
    subnets at Kendall tau 0.42 after 30 rows, this one at 0.75 (``docs/search.md``). Far from the
    rows it extrapolates like the line; near them the RBF term fits local deviations from it.

    Tuning is bounded like ``gp``'s: at most ``max_opt_rows`` rows (a random subset) and ``max_iter``
    L-BFGS steps, from the starting point and ``n_restarts`` random ones; the posterior then
    conditions on every row (one Cholesky factorisation)."""

    has_std = True
    # log-space bounds of (a, b, s, l / median distance, d, noise), in units of standardised targets
    BOUNDS = np.log([(1e-4, 1e2), (1e-4, 1e2), (1e-4, 1e1), (1e-1, 1e2), (1e-4, 1e1), (1e-6, 1.0)])
    START = np.log([0.5, 0.5, 0.1, 1.0, 0.1, 1e-2])

    def __init__(self, n_restarts: int = 0, seed: int = 0, max_opt_rows: int = 200, max_iter: int = 50):
        super().__init__()
        _check_tuning(self.kind, max_opt_rows=max_opt_rows, max_iter=max_iter)
        self.n_restarts, self.seed, self.max_opt_rows, self.max_iter = n_restarts, seed, max_opt_rows, max_iter
        self._x_scaler = self._y_scaler = None
        self._indicator = self._theta = self._train = self._dual_coef = self._factor = None
        self._norms = (1.0, 1.0, 1.0)  # n_c, m_i, median distance: the kernel's fixed units

    def _transform(self, X):
        return self._x_scaler.transform(X)

    def _grams(self, A, B):
        """The kernel's parts between rows A and B: continuous and indicator dot products, squared distances."""
        n_c, m_i, _ = self._norms
        ind = self._indicator
        dot_c = A[:, ~ind] @ B[:, ~ind].T / n_c
        dot_i = A[:, ind] @ B[:, ind].T / m_i
        sq = np.maximum((A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2 * A @ B.T, 0.0)
        return dot_c, dot_i, sq

    def _kernel(self, parts, theta):
        a, b, s, length, d, _ = np.exp(theta)
        dot_c, dot_i, sq = parts
        rbf = np.exp(-sq / (2 * (length * self._norms[2]) ** 2))
        return a * dot_c + b * dot_i + s * rbf + d, rbf

    def _neg_log_likelihood(self, theta, parts, t):
        K, rbf = self._kernel(parts, theta)
        noise = np.exp(theta[5])
        K[np.diag_indices_from(K)] += noise
        try:
            L = np.linalg.cholesky(K)
        except np.linalg.LinAlgError:
            return 1e25, np.zeros_like(theta)
        alpha = scipy.linalg.cho_solve((L, True), t)
        value = 0.5 * t @ alpha + np.log(np.diag(L)).sum()
        # d(-log p)/d theta_j = 0.5 tr((K^-1 - alpha alpha^T) dK/d theta_j), each dK in log parameters
        W = scipy.linalg.cho_solve((L, True), np.eye(len(t))) - np.outer(alpha, alpha)
        a, b, s, length, d, _ = np.exp(theta)
        dot_c, dot_i, sq = parts
        derivatives = (a * dot_c, b * dot_i, s * rbf, s * rbf * sq / (length * self._norms[2]) ** 2,
                       np.full_like(K, d), noise * np.eye(len(t)))
        return value, np.array([0.5 * np.sum(W * dK) for dK in derivatives])

    def _fit(self, X, y):
        self._indicator = np.all((X == 0) | (X == 1), axis=0)
        scaler = Standardizer.fit(X)  # indicators keep 0 / 1: standardising would inflate rare choices
        self._x_scaler = Standardizer(np.where(self._indicator, 0.0, scaler.mean),
                                      np.where(self._indicator, 1.0, scaler.scale))
        self._y_scaler = Standardizer.fit(y)
        Z, t = self._transform(X), self._y_scaler.transform(y)
        rows = np.arange(len(Z))
        if len(Z) > self.max_opt_rows:
            rows = np.sort(np.random.default_rng(self.seed).choice(len(Z), self.max_opt_rows, replace=False))
        ones = float(Z[:, self._indicator].sum(1).mean()) if self._indicator.any() else 1.0
        self._norms = (max(int((~self._indicator).sum()), 1), max(ones, 1.0), 1.0)
        parts = self._grams(Z[rows], Z[rows])
        median = float(np.median(np.sqrt(parts[2][np.triu_indices(len(rows), 1)]))) if len(rows) > 1 else 0.0
        self._norms = (*self._norms[:2], median if median > 0 else 1.0)  # the RBF's length in its units
        rng = np.random.default_rng(self.seed)
        starts = [self.START] + [rng.uniform(self.BOUNDS[:, 0], self.BOUNDS[:, 1]) for _ in range(self.n_restarts)]
        best = None
        with _small_problem():
            for start in starts:
                result = scipy.optimize.minimize(self._neg_log_likelihood, start, args=(parts, t[rows]), jac=True,
                                                 method="L-BFGS-B", bounds=self.BOUNDS,
                                                 options={"maxiter": self.max_iter, "maxfun": self.max_iter})
                if best is None or result.fun < best.fun:
                    best = result
            self._theta, self._train = best.x, Z
            self._factor = self._train_factor()
            self._dual_coef = scipy.linalg.cho_solve((self._factor, True), t)

    def _train_factor(self):
        """Cholesky factor of the kernel matrix of the rows fitted on, noise included."""
        K, _ = self._kernel(self._grams(self._train, self._train), self._theta)
        K[np.diag_indices_from(K)] += np.exp(self._theta[5])
        return _cholesky(K)

    def _cross(self, X):
        """``X`` transformed, and its kernel against the fitted rows."""
        Z = self._transform(X)
        return Z, self._kernel(self._grams(Z, self._train), self._theta)[0]

    def _predict(self, X):
        return self._y_scaler.inverse(self._cross(X)[1] @ self._dual_coef)

    def _predict_with_std(self, X):
        """The std is of the function, not of a new measurement (the noise term left out):
        sqrt(k(x, x) - k_x^T K^-1 k_x)."""
        Z, K = self._cross(X)
        n_c, m_i, _ = self._norms
        ind = self._indicator
        diagonal = ((Z[:, ~ind] ** 2).sum(1) / n_c, (Z[:, ind] ** 2).sum(1) / m_i, np.zeros(len(Z)))
        prior, _ = self._kernel(diagonal, self._theta)  # k(x, x), each x with itself
        v = scipy.linalg.solve_triangular(self._factor, K.T, lower=True)
        std = np.sqrt(np.maximum(prior - (v * v).sum(0), 0.0)) * self._y_scaler.scale
        return self._y_scaler.inverse(K @ self._dual_coef), std

    def _state(self):
        return {"x_scaler": self._x_scaler.to_state(), "y_scaler": self._y_scaler.to_state(),
                "indicator": self._indicator.tolist(), "norms": list(self._norms), "theta": self._theta.tolist(),
                "train": self._train.tolist(), "dual_coef": self._dual_coef.tolist()}

    def _set_state(self, state):
        self._x_scaler = Standardizer.from_state(state["x_scaler"])
        self._y_scaler = Standardizer.from_state(state["y_scaler"])
        self._indicator = np.asarray(state["indicator"], dtype=bool)
        self._norms = tuple(float(v) for v in state["norms"])
        self._theta = np.asarray(state["theta"], dtype=np.float64)
        self._train = np.asarray(state["train"], dtype=np.float64)
        self._dual_coef = np.asarray(state["dual_coef"], dtype=np.float64)
        self._factor = self._train_factor()  # the fit's factor: the same numbers in the same order


def _check_tuning(kind: str, **limits) -> None:
    """The GPs' bounds on their hyperparameter tuning: positive integers."""
    for name, value in limits.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PredictorError(f"{kind} {name} must be an integer >= 1, got {value!r}")


def _cholesky(K):
    """Cholesky factor of a kernel matrix, with growing jitter where rounding made it indefinite."""
    jitter = 0.0
    for _ in range(6):
        try:
            return np.linalg.cholesky(K + jitter * np.eye(len(K)))
        except np.linalg.LinAlgError:
            jitter = max(jitter * 10, 1e-10 * np.trace(K) / len(K))
    raise PredictorError("gp_linear: the kernel matrix is not positive definite (duplicate rows with noise ~ 0?)")
