"""The predictor interface, the registry of models by name, and the predictor file format.

A predictor file is one JSON document (no pickle, so loading cannot run code)::

    {"format": "ofa-nas/predictor", "version": 1, "kind": "xgboost", "n_features": 7,
     "params": {constructor arguments}, "state": {the fitted model, as plain numbers/strings}}
"""
from __future__ import annotations

import abc
import inspect
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .metrics import report
from .validation import PredictorError, check_features, check_vector

FORMAT = "ofa-nas/predictor"
VERSION = 1
DEFAULT_PREDICTOR = "xgboost"


class Predictor(abc.ABC):
    """Regression on a feature matrix (n_rows, n_features) -> one value per row.

    Subclasses implement ``_fit``, ``_predict`` (on checked arrays) and ``_state`` /
    ``_set_state`` (the fitted model as JSON-ready data); constructor arguments are stored as
    attributes of the same name, so that a file can rebuild the predictor.
    """

    kind = ""  # the registry name, set by ``register_predictor``
    has_std = False  # whether ``predict_std`` gives a posterior standard deviation (a Bayesian model)

    def __init__(self):
        self.n_features: int | None = None

    def fit(self, X, y) -> Predictor:
        X = check_features(X)
        y = check_vector(y, "y")
        if y.size != len(X):
            raise PredictorError(f"y has {y.size} values but X has {len(X)} rows")
        self._fit(X, y)
        self.n_features = X.shape[1]
        return self

    def predict(self, X) -> np.ndarray:
        self._require_fitted("predict")
        X = check_features(X, self.n_features)
        return np.asarray(self._predict(X), dtype=np.float64).reshape(len(X))

    def predict_std(self, X) -> np.ndarray:
        """The posterior standard deviation of each prediction, for the models that have one
        (``has_std``: ``gp_linear``); the search's ``optimism`` scores candidates by it."""
        return self.predict_with_std(X)[1]

    def predict_with_std(self, X) -> tuple[np.ndarray, np.ndarray]:
        """``predict`` and ``predict_std`` in one pass (a GP computes its kernel against the fitted
        rows once for both)."""
        self._require_fitted("predict_std")
        if not self.has_std:
            raise PredictorError(f"a {self.kind!r} predictor gives no standard deviation; gp_linear does")
        X = check_features(X, self.n_features)
        mean, std = self._predict_with_std(X)
        return (np.asarray(mean, dtype=np.float64).reshape(len(X)),
                np.asarray(std, dtype=np.float64).reshape(len(X)))

    def _predict_with_std(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def report(self, X, y) -> dict[str, float]:
        """Quality on held-out rows: ``metrics.report(y, self.predict(X))``."""
        return report(y, self.predict(X))

    def get_params(self) -> dict:
        return {name: getattr(self, name) for name in inspect.signature(type(self)).parameters}

    def to_document(self) -> dict:
        self._require_fitted("save")
        return {"kind": self.kind, "n_features": self.n_features, "params": self.get_params(),
                "state": self._state()}

    def save(self, path: str | os.PathLike) -> None:
        """Writes the file atomically: a crash mid-save leaves any previous file as it was."""
        _write_json_atomic(Path(path), {"format": FORMAT, "version": VERSION, **self.to_document()})

    @classmethod
    def load(cls, path: str | os.PathLike) -> Predictor:
        """``load_predictor(path)``, also checking that the file holds this class."""
        predictor = load_predictor(path)
        if not isinstance(predictor, cls):
            raise PredictorError(f"{path}: holds a {predictor.kind!r} predictor, not {cls.kind!r}")
        return predictor

    def _require_fitted(self, action: str) -> None:
        if self.n_features is None:
            raise PredictorError(f"cannot {action} a {self.kind!r} predictor before fit()")

    @abc.abstractmethod
    def _fit(self, X: np.ndarray, y: np.ndarray) -> None: ...

    @abc.abstractmethod
    def _predict(self, X: np.ndarray) -> np.ndarray: ...

    @abc.abstractmethod
    def _state(self) -> dict: ...

    @abc.abstractmethod
    def _set_state(self, state: dict) -> None: ...


_PREDICTORS: dict[str, type[Predictor]] = {}


def register_predictor(name: str):
    """Class decorator: ``@register_predictor("ridge")`` makes ``create_predictor("ridge")`` work."""
    def add(cls: type[Predictor]) -> type[Predictor]:
        cls.kind = name
        _PREDICTORS[name] = cls
        return cls
    return add


def list_predictors() -> list[str]:
    return sorted(_PREDICTORS)


def create_predictor(name: str = DEFAULT_PREDICTOR, **kwargs) -> Predictor:
    """``create_predictor("gp", n_restarts=0)``; an unknown name or option lists the allowed ones."""
    if name not in _PREDICTORS:
        raise PredictorError(f"unknown predictor {name!r}; known predictors: {', '.join(list_predictors())}")
    allowed = predictor_options(name)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise PredictorError(f"predictor {name!r} has no option {unknown[0]!r}; "
                             f"its options: {', '.join(allowed) or '(none)'}")
    return _PREDICTORS[name](**kwargs)


def predictor_options(name: str) -> list[str]:
    """The keyword options ``create_predictor(name, ...)`` takes (``loss``, ``seed``, ...)."""
    if name not in _PREDICTORS:
        raise PredictorError(f"unknown predictor {name!r}; known predictors: {', '.join(list_predictors())}")
    return list(inspect.signature(_PREDICTORS[name]).parameters)


def predictor_from_document(document: dict) -> Predictor:
    """Rebuilds a fitted predictor from ``Predictor.to_document()``'s output."""
    n_features = document["n_features"]
    if not isinstance(n_features, int) or n_features < 1:
        raise PredictorError(f"n_features must be a positive integer, got {n_features!r}")
    predictor = create_predictor(document["kind"], **document["params"])
    predictor._set_state(document["state"])
    predictor.n_features = n_features
    # A state that parses but does not match the recorded width (hand-edited, or written by a
    # buggy version) must fail here, naming the file, not at the first prediction of a search.
    probe = predictor.predict(np.zeros((1, n_features)))
    if not np.isfinite(probe).all():
        raise PredictorError("the stored model predicts a non-finite value")
    return predictor


def load_predictor(path: str | os.PathLike) -> Predictor:
    """Loads any predictor file; raises ``PredictorError`` naming the path and the problem."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PredictorError(f"{path}: no such predictor file") from None
    except UnicodeDecodeError:
        raise PredictorError(f"{path}: not a predictor file (binary, not JSON text)") from None
    except json.JSONDecodeError as exc:
        raise PredictorError(f"{path}: not a predictor file (invalid or truncated JSON: {exc})") from None
    except OSError as exc:
        raise PredictorError(f"{path}: cannot read predictor file: {exc}") from None
    found = document.get("format") if isinstance(document, dict) else type(document).__name__
    if found != FORMAT:
        raise PredictorError(f"{path}: not a predictor file (format {found!r}, expected {FORMAT!r})")
    if document.get("version") != VERSION:
        raise PredictorError(f"{path}: predictor file version {document.get('version')!r} is not "
                             f"supported (this code reads version {VERSION})")
    try:
        return predictor_from_document(document)
    except KeyError as exc:
        raise PredictorError(f"{path}: corrupt predictor file (missing field {exc})") from exc
    except (TypeError, ValueError, AttributeError, IndexError) as exc:
        raise PredictorError(f"{path}: corrupt predictor file ({exc})") from exc


def _write_json_atomic(path: Path, document: dict) -> None:
    """Temp file in the same directory, fsync, then ``os.replace`` (atomic on POSIX and Windows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(document, f, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
