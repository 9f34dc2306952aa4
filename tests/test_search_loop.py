"""The loop as a library user meets it: budget-independent defaults, the predictor scored on a fixed
random sample, hypervolume-improvement candidate choice, callbacks, an initial set, the fitted
predictors, and choosing a subnet (``result.best``, ``python -m search.pick``)."""
import numpy as np
import pytest
import yaml
from conftest import ROOT
from test_search import ToyEvaluator, ToySpace

from predictors import Predictor, register_predictor, report
from search import SearchConfigError, run_search
from search.loop import DEFAULTS, pick_hvi
from search.pick import best_row
from search.pick import main as pick_main
from search.problem import ArchProblem

FAST = dict(generations=10, population=30, seed=0, progress=False)


def toy(**options):
    return run_search(ToySpace(), options.pop("evaluate", ToyEvaluator()), **{**FAST, **options})


def test_the_trace_does_not_depend_on_the_budget():
    short, long = toy(budget=40), toy(budget=60)
    assert [r["arch"] for r in short.evaluations] == [r["arch"] for r in long.evaluations[:40]]


def test_library_defaults_are_the_cli_defaults():
    conf = yaml.safe_load((ROOT / "conf" / "search.yaml").read_text())
    for key, value in DEFAULTS.items():
        assert conf[key] == value, key


class Memorizer(Predictor):
    """Predicts the value of a row it was fitted on, and 1.0 for any other (a probe of what was fitted)."""

    def __init__(self, seed: int = 0):
        super().__init__()

    def _fit(self, X, y):
        self.table = {tuple(x): v for x, v in zip(X.tolist(), y.tolist(), strict=True)}

    def _predict(self, X):
        return np.array([self.table.get(tuple(x), 1.0) for x in X.tolist()])

    def _state(self):
        return {}

    def _set_state(self, state):
        pass


register_predictor("test-memorizer")(Memorizer)


def test_predictors_are_scored_on_a_fixed_random_sample_held_out_of_their_fit():
    from test_search import toy_truth

    result = toy(budget=50, predictor="test-memorizer", score_sample=8,
                 exact={"latency_ms": lambda archs: toy_truth([a["x"] for a in archs])[1]})
    assert len(result.log) == 3
    initial = [r for r in result.evaluations if r["iteration"] == 0]
    sample = initial[2:10]  # after the largest and the smallest: the first 8 random archs
    held_out_mape = 100 * np.mean([abs(1.0 - r["accuracy"]) / r["accuracy"] for r in sample])
    for entry in result.log:  # held out: the memorizer knows none of the sample, every entry alike
        assert entry["accuracy_sample_mape"] == pytest.approx(held_out_mape)
        assert np.isnan(entry["accuracy_sample_kendall_tau"])  # constant predictions rank nothing
    assert result.predictors["accuracy"].predict(np.stack([ToySpace().features(sample[0]["arch"])]))[0] == \
        pytest.approx(sample[0]["accuracy"])  # while the search's own predictor was fitted on it
    assert "accuracy_sample_kendall_tau" not in toy(budget=30, score_sample=0).log[0]


def test_pick_hvi_orders_by_hypervolume_gain_then_least_dominated():
    front = np.array([[0.0, 1.0], [1.0, 0.0]])
    candidates = np.array([[0.9, 0.9],   # adds 0.1 x 0.1 = 0.01 below the reference point 1.1 ...
                           [0.5, 0.5],   # adds 0.5 x 0.5 = 0.25, and then dominates (0.9, 0.9): epsilon 0.4
                           [1.2, 1.2],   # dominated: epsilon 0.7 once (0.5, 0.5) is chosen
                           [1.05, 0.05]])  # dominated by (1, 0): epsilon 0.05
    assert pick_hvi(candidates, front, 4).tolist() == [1, 3, 0, 2]
    assert pick_hvi(candidates, front, 1).tolist() == [1]
    # once (0.5, 0.5) is chosen, both others add nothing: (0.5, 0.95) is the less dominated (epsilon 0 vs 0.1)
    assert pick_hvi(np.array([[0.5, 0.5], [0.6, 0.6], [0.5, 0.95]]), front, 2).tolist() == [0, 2]


def test_hvi_selection_searches_as_well_as_spread():
    from test_search import toy_truth

    def hv(result):
        from pymoo.indicators.hv import HV

        F = np.array([[-r["accuracy"], r["latency_ms"]] for r in result.pareto])
        acc, lat = toy_truth([[0] * 6, [7] * 6])
        low, high = np.array([-acc[1], lat[0]]), np.array([-acc[0], lat[1]])
        return HV(ref_point=np.full(2, 1.1))((F - low) / (high - low))

    assert hv(toy(budget=60, select="hvi")) >= hv(toy(budget=20)) + 0.02


def test_initial_archs_callback_options_and_fitted_predictors():
    seen = []
    initial = [{"x": [3, 3, 3, 3, 3, 3]}, {"x": [1, 2, 3, 4, 5, 6]}]
    result = toy(budget=35, initial=initial, predictor_options={"max_iter": 7},
                 callback=lambda entry, partial: seen.append((entry["evaluations"], len(partial.evaluations))))
    assert [r["arch"] for r in result.evaluations[:2]] == initial
    assert seen == [(30, 30), (35, 35)]
    assert result.predictors["accuracy"].max_iter == 7
    assert result.predictors["accuracy"].predict(np.zeros((1, len(ToySpace().features(initial[0]))))).shape == (1,)


@pytest.mark.parametrize("options, message", [
    ({"select": "best"}, "unknown select 'best'; allowed: hvi, spread"),
    ({"per_iteration": 0}, "per_iteration=0: allowed: an integer >= 1"),
    ({"predictor_options": {"depth": 3}}, "predictor 'gp_linear' has no option 'depth'"),
    ({"optimism": -1}, "optimism=-1: allowed: a number >= 0"),
    ({"optimism": "high"}, "optimism='high': allowed: a number >= 0"),
])
def test_bad_loop_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        toy(budget=30, **options)


def test_optimism_scores_objectives_at_their_upper_bound_and_constraints_at_the_mean():
    space = ToySpace()
    archs = [space.sample(np.random.default_rng(i)) for i in range(4)]
    mean, std = np.array([0.5, 0.6, 0.7, 0.8]), np.array([0.3, 0.0, 0.0, 0.0])
    columns = {"accuracy": mean, "latency_ms": np.ones(4),
               "optimistic": {"accuracy": mean + std}}  # as _Search.estimate(archs, optimism=1) returns them
    problem = ArchProblem(space, ("accuracy", "latency_ms"), {"accuracy": 0.55}, lambda _: columns)
    out = problem.evaluate(np.stack([space.encode(a) for a in archs]), return_as_dictionary=True)
    assert out["F"][:, 0].tolist() == pytest.approx([-0.8, -0.6, -0.7, -0.8])  # the first ties the best
    assert (out["G"][:, 0] > 0).tolist() == [True, False, False, False]  # its mean breaks the bound


def test_optimistic_search_explores_and_zero_optimism_is_the_mean():
    # the same search with optimism 0 and 2: the toy's gp_linear has a posterior, so the candidates differ
    plain, bold = toy(budget=40, optimism=0.0), toy(budget=40, optimism=2.0)
    first = [r["arch"] for r in plain.evaluations[:20]]
    assert first == [r["arch"] for r in bold.evaluations[:20]]  # the initial evaluations do not depend on it
    assert [r["arch"] for r in plain.evaluations[20:]] != [r["arch"] for r in bold.evaluations[20:]]
    fitted = bold.predictors["accuracy"]
    X = np.stack([ToySpace().features(r["arch"]) for r in bold.evaluations])
    assert fitted.has_std and fitted.predict_std(X).shape == (40,)


def test_best_within_bounds_and_the_nearest_when_none():
    rows = [{"id": 0, "accuracy": 0.9, "latency_ms": 8.0}, {"id": 1, "accuracy": 0.8, "latency_ms": 4.0},
            {"id": 2, "accuracy": 0.85, "latency_ms": 5.0}, {"id": 3, "accuracy": 0.7, "latency_ms": 3.0}]
    assert best_row(rows, {"latency_ms": 5})["id"] == 2
    assert best_row(rows, {"latency_ms": 5}, by="latency_ms")["id"] == 3
    assert best_row(rows, {"accuracy": 0.8, "latency_ms": 6})["id"] == 2
    with pytest.raises(SearchConfigError, match=r"no evaluated subnet meets latency_ms<=2 \(4 evaluated\); "
                                                r"nearest: id 3 \(latency_ms=3, accuracy=0.7\); id 1"):
        best_row(rows, {"latency_ms": 2})
    with pytest.raises(SearchConfigError, match="unknown constraint 'speed'"):
        best_row(rows, {"speed": 2})


def test_result_best_and_pick_cli_agree(tmp_path, capsys):
    result = toy(budget=30, out_dir=tmp_path)
    bound = float(np.median([r["latency_ms"] for r in result.evaluations]))
    expected = max((r for r in result.evaluations if r["latency_ms"] <= bound), key=lambda r: r["accuracy"])
    assert result.best({"latency_ms": bound})["id"] == expected["id"]
    pick_main([str(tmp_path), f"latency_ms={bound}", "--no-export"])
    printed = capsys.readouterr().out
    assert printed.startswith(f"subnet {expected['id']}: accuracy=") and "not exported (--no-export)" in printed
    with pytest.raises(SystemExit, match="error: no evaluated subnet meets latency_ms<=0.5"):
        pick_main([str(tmp_path), "latency_ms=0.5"])
    with pytest.raises(SystemExit, match="error: bound 'latency_ms' : write NAME=VALUE|write NAME=VALUE"):
        pick_main([str(tmp_path), "latency_ms"])


def test_auto_predictor_logs_its_choice(caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="search.loop"):
        result = toy(budget=30, predictor="auto", predictor_options={"candidates": ("ridge", "xgboost")})
    assert {entry["accuracy_predictor"] for entry in result.log} <= {"ridge", "xgboost"}
    assert "accuracy predictor: auto chose " in caplog.text and "cross-validated Kendall tau: ridge " in caplog.text


def test_latency_predictors_see_structural_features_and_fit_relative_error():
    from test_search import toy_truth

    from search.features import objective_features

    space = ToySpace()
    result = toy(budget=40)  # latency is predicted: the toy evaluator measures it
    latency, accuracy = result.predictors["latency_ms"], result.predictors["accuracy"]
    assert latency.n_features == len(space.feature_names("latency"))
    assert accuracy.n_features == len(space.feature_names("accuracy"))
    ridge = toy(budget=30, predictor="ridge").predictors
    # ridge: squared (search/loop.py)
    assert (ridge["latency_ms"].loss, ridge["accuracy"].loss) == ("squared", "squared")
    assert toy(budget=30, predictor="xgboost").predictors["latency_ms"].loss == "relative"
    rng = np.random.default_rng(1)  # archs the search never saw: layer traffic is what sets the toy's latency
    archs = [{"x": rng.integers(0, 8, 6).tolist()} for _ in range(200)]
    quality = report(toy_truth([a["x"] for a in archs])[1],
                     latency.predict(objective_features(space, archs, "latency_ms")))
    assert quality["kendall_tau"] > 0.9 and quality["mape"] < 8


def test_the_default_accuracy_predictor_is_the_linear_gp_on_one_hot_features():
    result = toy(budget=30)
    predictor = result.predictors["accuracy"]
    assert predictor.kind == "gp_linear" == DEFAULTS["predictor"]
    arch = result.evaluations[-1]["arch"]
    assert predictor.n_features == len(ToySpace().features(arch)) == len(ToySpace().feature_names())
