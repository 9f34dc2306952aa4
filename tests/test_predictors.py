"""Predictors: quality against trivial baselines, the file format, and the input checks."""
from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import model_config

from predictors import (
    AutoPredictor,
    PredictorError,
    RidgePredictor,
    XGBoostPredictor,
    create_predictor,
    list_predictors,
    load_predictor,
    report,
)

MODELS = ["xgboost", "ridge", "mlp", "gp", "gp_linear", "auto"]
# Three folds instead of the default five keep the file fast; it is the same code path.
OPTIONS = {"auto": {"folds": 3}}
N_TRAIN, N_TEST = 300, 100


def nas_like_data(target: str, n_rows: int = N_TRAIN + N_TEST, seed: int = 0):
    """Six integer genes 0..2 (three stage widths, depth, kernel, bits) plus a derived MACs column.

    Both targets depend on MACs nonlinearly and on the bits gene, which MACs does not see, so a
    line through MACs alone is a fair but beatable baseline.
    """
    rng = np.random.default_rng(seed)
    genes = rng.integers(0, 3, size=(n_rows, 6))
    widths = 16 * (2 + genes[:, :3])
    depth = 2 + genes[:, 3]
    kernel = np.array([3, 5, 7])[genes[:, 4]]
    macs = 1000.0 * depth * kernel**2 * (widths**2).sum(axis=1)
    if target == "accuracy":
        y = (60 + 25 * (1 - np.exp(-macs / 1.5e8)) - np.array([6.0, 1.5, 0.0])[genes[:, 5]]
             + 1.5 * (genes[:, 0] == genes[:, 1]) + rng.normal(0, 0.3, n_rows))
    else:  # latency (ms): low-bit blocks run faster, each layer adds a fixed overhead
        y = macs / 1e8 * np.array([0.5, 0.75, 1.0])[genes[:, 5]] + 0.3 * depth + rng.normal(0, 0.05, n_rows)
    X = np.column_stack([genes, macs])
    return X[:N_TRAIN], y[:N_TRAIN], X[N_TRAIN:], y[N_TRAIN:]


@pytest.fixture(scope="module", params=["accuracy", "latency"])
def task(request):
    """One data set and its models, each fitted once and shared by the tests of this module."""
    X_train, y_train, X_test, y_test = nas_like_data(request.param)
    fitted = {}

    def fitted_model(name):
        if name not in fitted:
            fitted[name] = create_predictor(name, **OPTIONS.get(name, {})).fit(X_train, y_train)
        return fitted[name]

    return X_train, y_train, X_test, y_test, fitted_model


@pytest.mark.parametrize("name", MODELS)
def test_every_model_beats_trivial_baselines(task, name):
    X_train, y_train, X_test, y_test, fitted_model = task
    mean_rmse = report(y_test, np.full(len(y_test), y_train.mean()))["rmse"]
    macs_line = np.polyfit(X_train[:, -1], y_train, 1)
    linear_on_macs = report(y_test, np.polyval(macs_line, X_test[:, -1]))

    quality = fitted_model(name).report(X_test, y_test)

    assert quality["rmse"] < mean_rmse
    assert quality["rmse"] < linear_on_macs["rmse"]
    assert quality["kendall_tau"] > linear_on_macs["kendall_tau"]


@pytest.mark.parametrize("name", MODELS)
def test_save_load_round_trip_predicts_identically(task, name, tmp_path):
    _, _, X_test, _, fitted_model = task
    predictor = fitted_model(name)
    path = tmp_path / "sub" / f"{name}.json"

    predictor.save(path)
    loaded = load_predictor(path)

    assert type(loaded) is type(predictor)
    np.testing.assert_array_equal(loaded.predict(X_test), predictor.predict(X_test))
    document = json.loads(path.read_text())
    assert (document["format"], document["version"]) == ("ofa-nas/predictor", 1)
    assert (document["kind"], document["n_features"]) == (name, X_test.shape[1])


@pytest.mark.parametrize("name", ["xgboost", "mlp", "gp", "gp_linear"])
def test_fitting_is_deterministic(task, name):
    X_train, y_train, X_test, _, fitted_model = task
    refitted = create_predictor(name).fit(X_train, y_train)
    np.testing.assert_array_equal(refitted.predict(X_test), fitted_model(name).predict(X_test))


def test_auto_keeps_its_choice_and_scores_through_a_file(task, tmp_path):
    auto = task[-1]("auto")
    auto.save(tmp_path / "auto.json")
    loaded = AutoPredictor.load(tmp_path / "auto.json")
    assert loaded.chosen == auto.chosen
    assert loaded.cv_kendall_tau == auto.cv_kendall_tau
    assert set(auto.cv_kendall_tau) == {"xgboost", "ridge", "gp"}  # the MLP is no default candidate


def test_auto_picks_the_model_with_the_best_cross_validated_tau():
    # A U-shaped target of one gene: a line ranks it no better than chance, trees rank it well.
    rng = np.random.default_rng(0)
    X = rng.integers(0, 3, size=(120, 4)).astype(float)
    y = (X[:, 0] - 1) ** 2 + 0.1 * X[:, 1] + rng.normal(0, 0.01, 120)

    auto = create_predictor("auto", candidates=["ridge", "xgboost"], folds=3).fit(X, y)

    assert auto.chosen == "xgboost"
    assert auto.cv_kendall_tau["xgboost"] > auto.cv_kendall_tau["ridge"] + 0.3
    refitted_on_all_rows = create_predictor("xgboost").fit(X, y)
    np.testing.assert_array_equal(auto.predict(X), refitted_on_all_rows.predict(X))


def test_auto_rejects_bad_options_and_too_few_rows():
    with pytest.raises(PredictorError, match="auto candidates must be among .*'bogus'"):
        create_predictor("auto", candidates=["ridge", "bogus"])
    with pytest.raises(PredictorError, match="folds must be an integer >= 2"):
        create_predictor("auto", folds=1)
    with pytest.raises(PredictorError, match="at least 6 rows for 3-fold"):
        create_predictor("auto").fit(np.ones((5, 2)), np.arange(5.0))
    with pytest.raises(PredictorError, match="loss must be one of squared, relative, got 'l1'"):
        create_predictor("auto", loss="l1")


def skewed_latencies(n_rows: int = 200, seed: int = 0):
    """Latency = a line through two features, times 1.3 for a fifth of the rows (a slow mode, as in
    GPU timings) and small noise: the fit that minimises MAPE follows the line, not the mean."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(1, 10, size=(n_rows, 2))
    clean = 2.0 + X @ np.array([1.0, 0.5])
    slow = rng.random(n_rows) < 0.2
    y = clean * np.where(slow, 1.3, 1.0) * rng.normal(1.0, 0.005, n_rows)
    return X, y, clean


@pytest.mark.parametrize("name", ["ridge", "xgboost"])
def test_relative_loss_fits_the_typical_latency_not_the_mean(name):
    X, y, clean = skewed_latencies()
    X_test, _, clean_test = skewed_latencies(seed=1)
    errors = {}
    for loss in ("squared", "relative"):
        predicted = create_predictor(name, loss=loss).fit(X, y).predict(X_test)
        errors[loss] = report(clean_test, predicted)["mape"]
    # the squared loss lands near the mean, about 6% above the clean line; the relative one on it
    # (up to the trees' steps, for xgboost)
    assert errors["relative"] < errors["squared"] * (0.3 if name == "ridge" else 0.6)


def test_relative_ridge_recovers_an_exact_line():
    X, _, clean = skewed_latencies()
    ridge = create_predictor("ridge", loss="relative", alpha=1e-9).fit(X, clean)
    np.testing.assert_allclose(ridge.predict(X), clean, rtol=1e-6)


def test_relative_loss_refuses_non_positive_targets_and_unknown_losses():
    X, y, _ = skewed_latencies()
    with pytest.raises(PredictorError, match="needs positive targets .*minimum of -1.0"):
        create_predictor("xgboost", loss="relative").fit(X, np.append(y[:-1], -1.0))
    with pytest.raises(PredictorError, match="ridge loss must be one of squared, relative, got 'huber'"):
        create_predictor("ridge", loss="huber")


def test_auto_passes_its_loss_to_the_candidates_that_take_one():
    X, y, _ = skewed_latencies(60)
    auto = create_predictor("auto", candidates=["ridge", "gp"], loss="relative").fit(X, y)
    assert set(auto.cv_kendall_tau) == {"ridge", "gp"}
    assert auto._create("ridge").loss == "relative"
    assert "loss" not in auto._create("gp").get_params()


def test_gp_tunes_on_a_subset_and_conditions_on_every_row():
    rng = np.random.default_rng(0)
    X = rng.uniform(size=(150, 3))
    y = np.sin(4 * X[:, 0]) + X[:, 1] + rng.normal(0, 0.01, 150)
    gp = create_predictor("gp", max_opt_rows=40).fit(X, y)
    assert len(gp._train) == 150  # the posterior sees every row
    # ... but its hyperparameters are those tuned on 40 of them: those of a GP of the 40 alone (up
    # to the standardisation, from 150 rows or from 40)
    subset = np.sort(np.random.default_rng(0).choice(150, 40, replace=False))
    alone = create_predictor("gp", max_opt_rows=40).fit(X[subset], y[subset])
    np.testing.assert_allclose(gp._kernel.theta, alone._kernel.theta, rtol=0.05)
    # conditioning on all rows predicts held-out points better than the 40-row GP
    X_new = rng.uniform(size=(200, 3))
    y_new = np.sin(4 * X_new[:, 0]) + X_new[:, 1]
    assert report(y_new, gp.predict(X_new))["rmse"] < report(y_new, alone.predict(X_new))["rmse"]
    with pytest.raises(PredictorError, match="gp max_iter must be an integer >= 1, got 0"):
        create_predictor("gp", max_iter=0)


def test_linear_gp_extrapolates_a_line_and_learns_a_local_bump():
    rng = np.random.default_rng(0)
    w = np.array([1.0, -2.0, 0.5, 3.0])
    X = rng.uniform(size=(120, 4))
    # a line is carried on far outside the rows seen (the linear term)
    X_far = rng.uniform(2, 3, size=(50, 4))
    linear = create_predictor("gp_linear").fit(X, X @ w)
    assert report(X_far @ w, linear.predict(X_far))["rmse"] < 1e-3 * (X_far @ w).std()
    # a bump no line can fit: the RBF term learns it where the rows are, ridge cannot
    def truth(X):
        return X @ w + 2 * np.exp(-((X - 0.5) ** 2).sum(axis=1) / 0.05)
    X_new = rng.uniform(size=(200, 4))
    bumped = create_predictor("gp_linear").fit(X, truth(X))
    ridge = create_predictor("ridge").fit(X, truth(X))
    rmse = {name: report(truth(X_new), model.predict(X_new))["rmse"] for name, model in
            (("gp_linear", bumped), ("ridge", ridge))}
    assert rmse["gp_linear"] < 0.5 * rmse["ridge"]
    with pytest.raises(PredictorError, match="gp_linear max_opt_rows must be an integer >= 1, got 0"):
        create_predictor("gp_linear", max_opt_rows=0)


def one_hot_data(n_rows: int, seed: int):
    """Twenty blocks, each with a kernel and an expand choice of three, as one-hot columns, and the
    MACs column (the sum of kernel^2 x expand over blocks: not a linear function of the one-hot):
    accuracy follows log MACs, plus a small effect of each choice."""
    rng = np.random.default_rng(seed)
    kernel, expand = rng.integers(0, 3, size=(2, n_rows, 20))
    one_hot = np.concatenate([np.eye(3)[kernel], np.eye(3)[expand]], axis=2).reshape(n_rows, -1)
    macs = (np.array([3, 5, 7])[kernel] ** 2 * np.array([3, 4, 6])[expand]).sum(axis=1) * 1e5
    effects = np.random.default_rng(99).normal(0, 0.02, size=one_hot.shape[1])
    return np.column_stack([one_hot, macs]), np.log(macs) + one_hot @ effects


def test_linear_gp_leans_on_the_size_columns_when_rows_are_few():
    # 30 rows, 121 columns: a standardised linear fit (ridge) spreads its prior over 120 one-hot
    # columns; the indicator group's own variance lets the MACs column lead
    X, y = one_hot_data(30, seed=0)
    X_test, y_test = one_hot_data(500, seed=1)
    taus = {name: report(y_test, create_predictor(name).fit(X, y).predict(X_test))["kendall_tau"]
            for name in ("gp_linear", "ridge", "gp")}
    assert taus["gp_linear"] > max(taus["ridge"], taus["gp"]) + 0.05, taus


def test_linear_gp_likelihood_gradient_matches_finite_differences():
    X, y = one_hot_data(40, seed=2)
    gp = create_predictor("gp_linear").fit(X, y)
    Z, t = gp._transform(X), gp._y_scaler.transform(y)
    parts = gp._grams(Z, Z)
    rng = np.random.default_rng(0)
    for theta in [gp._theta, gp.START, rng.uniform(gp.BOUNDS[:, 0], gp.BOUNDS[:, 1])]:
        _, gradient = gp._neg_log_likelihood(theta, parts, t)
        step = 1e-6
        numeric = [(gp._neg_log_likelihood(theta + step * e, parts, t)[0]
                    - gp._neg_log_likelihood(theta - step * e, parts, t)[0]) / (2 * step) for e in np.eye(len(theta))]
        np.testing.assert_allclose(gradient, numeric, rtol=1e-4, atol=1e-6)
    # indicator columns stay 0 / 1, the size column is standardised
    assert gp._indicator.tolist() == [True] * 120 + [False]
    assert np.array_equal(Z[:, :120], X[:, :120]) and abs(Z[:, 120].mean()) < 1e-9


def test_linear_gp_posterior_std_is_the_gp_formula_small_at_rows_and_survives_a_file(tmp_path):
    X, y = one_hot_data(40, seed=3)
    X_new, _ = one_hot_data(20, seed=4)
    gp = create_predictor("gp_linear").fit(X, y)
    # k(x, x) - k_x^T (K + noise I)^-1 k_x written out with an explicit inverse
    Z, Z_new = gp._transform(X), gp._transform(X_new)
    K = gp._kernel(gp._grams(Z, Z), gp._theta)[0] + np.exp(gp._theta[5]) * np.eye(len(Z))
    K_new = gp._kernel(gp._grams(Z_new, Z), gp._theta)[0]
    prior = np.diag(gp._kernel(gp._grams(Z_new, Z_new), gp._theta)[0])
    expected = np.sqrt(prior - np.einsum("ij,jk,ik->i", K_new, np.linalg.inv(K), K_new)) * gp._y_scaler.scale
    np.testing.assert_allclose(gp.predict_std(X_new), expected, rtol=1e-6)
    # the rows it was fitted on are known to about the noise, rows it never saw less well
    assert gp.predict_std(X).mean() < 0.5 * gp.predict_std(X_new).mean()
    gp.save(tmp_path / "gp.json")
    np.testing.assert_array_equal(load_predictor(tmp_path / "gp.json").predict_std(X_new), gp.predict_std(X_new))
    with pytest.raises(PredictorError, match="a 'ridge' predictor gives no standard deviation; gp_linear does"):
        create_predictor("ridge").fit(X, y).predict_std(X)


@pytest.fixture
def ridge_file(tmp_path):
    X, y, _, _ = nas_like_data("latency")
    path = tmp_path / "ridge.json"
    RidgePredictor().fit(X, y).save(path)
    return path


def test_failed_save_leaves_the_previous_file_intact(ridge_file, monkeypatch):
    X, y, X_test, _ = nas_like_data("latency")
    before = load_predictor(ridge_file).predict(X_test)

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        RidgePredictor(alpha=100.0).fit(X, -y).save(ridge_file)
    monkeypatch.undo()

    np.testing.assert_array_equal(load_predictor(ridge_file).predict(X_test), before)
    assert sorted(p.name for p in ridge_file.parent.iterdir()) == ["ridge.json"]  # no temp file left


def _edit_document(path: Path, edit) -> None:
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.unlink(), "no such predictor file"),
    (lambda p: p.write_text(p.read_text()[: len(p.read_text()) // 2]), "invalid or truncated JSON"),
    (lambda p: p.write_bytes(b"PK\x03\x04\x00\xff\xfe binary"), "binary, not JSON"),
    (lambda p: p.write_text('{"format": "ofa-nas/supernet", "version": 1}'), "format 'ofa-nas/supernet'"),
    (lambda p: p.write_text("[1, 2, 3]"), "format 'list'"),
    (lambda p: _edit_document(p, lambda d: d.update(version=99)), "version 99 is not supported"),
    (lambda p: _edit_document(p, lambda d: d.update(kind="forest")), "unknown predictor 'forest'"),
    (lambda p: _edit_document(p, lambda d: d.pop("state")), "missing field 'state'"),
    (lambda p: _edit_document(p, lambda d: d["state"].update(coef=[1.0, 2.0])), "corrupt predictor file"),
    (lambda p: _edit_document(p, lambda d: d.update(n_features=0)), "n_features must be a positive"),
])
def test_unloadable_files_raise_a_clear_predictor_error(ridge_file, damage, message):
    damage(ridge_file)
    with pytest.raises(PredictorError, match=message) as raised:
        load_predictor(ridge_file)
    assert str(ridge_file) in str(raised.value)


def test_corrupt_xgboost_model_raises_a_predictor_error(tmp_path):
    X, y, _, _ = nas_like_data("latency")
    path = tmp_path / "xgb.json"
    XGBoostPredictor(n_estimators=5).fit(X, y).save(path)
    _edit_document(path, lambda d: d["state"].update(booster='{"learner": '))
    with pytest.raises(PredictorError, match="corrupt predictor file"):
        load_predictor(path)


def test_load_as_the_wrong_class_is_refused(ridge_file):
    with pytest.raises(PredictorError, match="holds a 'ridge' predictor, not 'xgboost'"):
        XGBoostPredictor.load(ridge_file)


def test_wrong_width_is_refused_naming_both_widths():
    X, y, X_test, _ = nas_like_data("accuracy")
    predictor = RidgePredictor().fit(X, y)
    with pytest.raises(PredictorError, match="X has 6 features but the predictor was fitted on 7"):
        predictor.predict(X_test[:, :6])


@pytest.mark.parametrize("X, y, message", [
    (np.array([[1.0, np.nan], [2.0, 3.0]]), [1.0, 2.0], "X has NaN or inf in 1 row.*first row 0"),
    (np.array([[1.0, 2.0], [2.0, np.inf]]), [1.0, 2.0], "X has NaN or inf"),
    (np.array([[1.0, 2.0], [2.0, 3.0]]), [1.0, np.nan], "y has NaN or inf"),
    (np.empty((0, 3)), [], "X is empty"),
    (np.array([1.0, 2.0]), [1.0, 2.0], "X must be 2-D"),
    (np.array([[1.0, 2.0], [2.0, 3.0]]), [1.0, 2.0, 3.0], "y has 3 values but X has 2 rows"),
    ([["a", "b"]], [1.0], "X must be numeric"),
])
def test_fit_refuses_bad_input(X, y, message):
    with pytest.raises(PredictorError, match=message):
        RidgePredictor().fit(X, y)


def test_predict_refuses_bad_input_and_unfitted_use(tmp_path):
    with pytest.raises(PredictorError, match="cannot predict a 'gp' predictor before fit"):
        create_predictor("gp").predict(np.ones((2, 3)))
    with pytest.raises(PredictorError, match="cannot save a 'ridge' predictor before fit"):
        RidgePredictor().save(tmp_path / "unfitted.json")
    assert not (tmp_path / "unfitted.json").exists()
    predictor = RidgePredictor().fit(np.eye(3), [1.0, 2.0, 3.0])
    with pytest.raises(PredictorError, match="X has NaN or inf"):
        predictor.predict([[0.0, np.nan, 1.0]])
    with pytest.raises(PredictorError, match="X is empty"):
        predictor.predict(np.empty((0, 3)))


def test_factory_lists_names_and_options():
    assert isinstance(create_predictor(), XGBoostPredictor)  # xgboost is the default
    assert set(MODELS) <= set(list_predictors())
    with pytest.raises(PredictorError, match="unknown predictor 'forest'; known predictors: auto, gp, gp_linear, mlp"):
        create_predictor("forest")
    with pytest.raises(PredictorError, match="'ridge' has no option 'depth'; its options: alpha"):
        create_predictor("ridge", depth=3)
    with pytest.raises(PredictorError, match="alpha must be > 0"):
        create_predictor("ridge", alpha=0.0)


def test_report_on_known_values():
    y = np.array([1.0, 2.0, 4.0])
    assert report(y, y) == {"kendall_tau": 1.0, "spearman": 1.0, "rmse": 0.0, "mape": 0.0}
    reversed_order = report(y, y[::-1])
    assert reversed_order["kendall_tau"] == pytest.approx(-1.0)
    assert reversed_order["spearman"] == pytest.approx(-1.0)
    # errors (0, 1, -2); one of three pairs swapped; rank differences (0, 1, 1)
    worked = report(y, [1.0, 3.0, 2.0])
    assert worked["kendall_tau"] == pytest.approx(1 / 3)
    assert worked["spearman"] == pytest.approx(0.5)
    assert worked["rmse"] == pytest.approx(np.sqrt(5 / 3))
    assert worked["mape"] == pytest.approx(100 * (0 + 0.5 + 0.5) / 3)


def test_report_guards_zero_targets_and_constant_predictions():
    assert report([0.0, 2.0], [1.0, 3.0])["mape"] == pytest.approx(50.0)  # the zero row is skipped
    assert np.isnan(report([0.0, 0.0], [1.0, 2.0])["mape"])
    constant = report([1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
    assert np.isnan(constant["kendall_tau"]) and np.isnan(constant["spearman"])
    assert constant["rmse"] == pytest.approx(np.sqrt(2 / 3))
    with pytest.raises(PredictorError, match="y_pred has 2 values but y_true has 3"):
        report([1.0, 2.0, 3.0], [1.0, 2.0])


def test_predictors_package_imports_no_other_part():
    imported = set()
    for source in Path(__file__).resolve().parents[1].joinpath("predictors").glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module.split(".")[0])
    assert imported, "found no imports: wrong directory?"
    assert not imported & {"supernet", "search", "hw_profiles"}


# -- latency features (space.features(arch, "latency"), search.features) ------------------------------

def _module_counts(model) -> dict[str, int]:
    """Layer counts read off an exported static module, independently of the cost tables."""
    from torch import nn
    modules = list(model.modules())
    convs = [m for m in modules if isinstance(m, nn.Conv2d) and type(m).__name__ != "PatchEmbed"]
    return {"conv": sum(m.groups == 1 for m in convs), "dwconv": sum(m.groups > 1 for m in convs),
            "linear": sum(isinstance(m, nn.Linear) for m in modules),
            "norm": sum(isinstance(m, nn.LayerNorm) for m in modules),
            "matmul": sum(type(m).__name__ == "Attention" for m in modules),
            "se": sum(type(m).__name__ == "SqueezeExcite" for m in modules),
            "quantized": sum(type(m).__name__.startswith("Quant") and m.bits < 32 for m in modules)}


@pytest.mark.parametrize("config", ["mobilenetv3", "resnet", "vit"])
def test_latency_layer_counts_equal_the_exported_modules(config):
    from supernet import create_supernet_from_config

    net = create_supernet_from_config(model_config(config), num_classes=10).eval()
    space = net.space
    names = space.feature_names("latency")
    rng = np.random.default_rng(0)
    low_bits = {**space.sample(rng), "bits": [min(space.choices()["bits"]), 32] * (len(space.largest()["bits"]) // 2)}
    for arch in (space.smallest(), space.largest(), space.sample(rng), space.sample(rng), low_bits):
        features = dict(zip(names, space.features(arch, "latency"), strict=True))
        counts = _module_counts(net.export(arch))
        assert features["layers.quantized"] == counts["quantized"], config
        for op in ("dwconv", "linear", "matmul"):
            assert features[f"layers.{op}"] == counts[op], (config, op)
        if config == "vit":
            assert features["layers.norm"] == counts["norm"]
        else:  # CNN: each conv is one conv record; the ViT's patch embedding is its own op kind
            assert features["layers.conv"] == counts["conv"]
            # a squeeze-excitation is one pool and one scale record besides its two convs
            assert features["layers.act"] == counts["se"]
        assert features["layers"] == sum(features[f"layers.{op}"] for op in
                                         ("conv", "dwconv", "linear", "matmul", "norm", "act", "add", "pool", "embed"))
        assert features["macs"] == space.macs(arch) and features["params"] == space.params(arch)


def test_latency_features_ignore_inactive_entries_and_name_bad_sets():
    from hw_profiles import OP_KINDS
    from supernet import create_supernet_from_config
    from supernet.space import LATENCY_OPS

    assert LATENCY_OPS == OP_KINDS  # supernet keeps its own copy: it imports nothing from hw_profiles
    space = create_supernet_from_config(model_config("mobilenetv3"), num_classes=10).space
    arch = space.smallest()
    inactive_only = {**arch, "ks": [k if j in space.active_blocks(arch) else 7 for j, k in enumerate(arch["ks"])]}
    np.testing.assert_array_equal(space.features(arch, "latency"), space.features(inactive_only, "latency"))
    assert len(space.features(arch, "latency")) == len(space.feature_names("latency"))
    np.testing.assert_array_equal(space.features(arch), space.features(arch, "accuracy"))
    with pytest.raises(ValueError, match="unknown feature set 'speed'; allowed: accuracy, latency"):
        space.features(arch, "speed")


def test_objective_features_add_the_profiles_roofline_for_latency_only():
    from hw_profiles import load_profile
    from search.features import objective_feature_names, objective_features
    from supernet import create_supernet_from_config

    net = create_supernet_from_config(model_config("vit"), num_classes=10)
    space, archs = net.space, [net.space.smallest(), net.space.largest()]
    jetson = load_profile("jetson")
    X = objective_features(space, archs, "latency_ms", jetson)
    names = objective_feature_names(space, "latency_ms", jetson)
    assert X.shape == (2, len(names)) and names[-1] == "roofline_ms"
    for row, arch in zip(X, archs, strict=True):
        assert row[-1] == pytest.approx(jetson.latency_ms(layer_costs=net.layer_costs(arch)).ms)
    assert X[1, -1] > X[0, -1]  # the largest subnet is estimated slower
    assert objective_features(space, archs, "latency_ms").shape[1] == len(names) - 1  # no profile: no roofline
    np.testing.assert_array_equal(objective_features(space, archs, "accuracy", jetson),
                                  np.stack([space.features(a) for a in archs]))


def test_auto_cross_validates_on_at_most_max_cv_rows_then_fits_all():
    from predictors import base

    seen = []

    @base.register_predictor("zz_rows_seen")
    class RowsSeen(RidgePredictor):
        def _fit(self, X, y):
            seen.append(len(X))
            super()._fit(X, y)

    try:
        X, y, _, _ = nas_like_data("latency")
        create_predictor("auto", candidates=["zz_rows_seen"], max_cv_rows=60).fit(X, y)
    finally:
        del base._PREDICTORS["zz_rows_seen"]
    assert seen == [40, 40, 40, len(X)]  # 3 folds of 60 rows, then all 300
    with pytest.raises(PredictorError, match="max_cv_rows must be an integer >= 2 x folds"):
        create_predictor("auto", max_cv_rows=3)
