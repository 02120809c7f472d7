"""Known-answer tests for comp.ensemble on small synthetic logits (whole file runs in seconds)."""
import math

import numpy as np
import pytest

from comp import ensemble as ens


def _perfect_and_random(n=600, c=5, seed=0):
    """Run 0 is noise, run 1 is (almost) perfect: index order makes tie-breaks matter."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    perfect = 8.0 * np.eye(c)[y] + 0.1 * rng.normal(size=(n, c))
    logits = np.stack([rng.normal(size=(n, c)), perfect])
    return logits, y, np.arange(n) % 5


@pytest.fixture(scope="module")
def noise():
    """20 pure-noise runs and random labels: nothing here is learnable."""
    rng = np.random.default_rng(0)
    r, n, c = 20, 2000, 10
    return rng.normal(size=(r, n, c)), rng.integers(0, c, n), rng.permutation(np.arange(n) % 5)


# ----------------------------------------------------------------------------- metrics
def test_softmax_is_stable_and_metrics_match_hand_values():
    p = ens.softmax(np.array([[1000.0, 1000.0], [0.0, math.log(3.0)]]))
    np.testing.assert_allclose(p, [[0.5, 0.5], [0.25, 0.75]])
    y = np.array([0, 1])
    assert ens.log_loss(p, y) == pytest.approx(-(math.log(0.5) + math.log(0.75)) / 2)
    assert ens.log_loss(np.array([[0.0, 1.0]]), [0]) == pytest.approx(-math.log(1e-15))
    assert ens.accuracy(p, [1, 1]) == 0.5  # argmax tie goes to class 0
    assert ens.macro_f1(np.eye(3), [0, 1, 2], 3) == 1.0


# ----------------------------------------------------------------------------- combine
def test_soft_and_logit_differ_as_computed_by_hand():
    # run A: p = [.5, .5]; run B: p = [.75, .25]
    logits = np.array([[[0.0, 0.0]], [[math.log(3.0), 0.0]]])
    np.testing.assert_allclose(ens.combine(logits, "soft"), [[0.625, 0.375]])
    r3 = math.sqrt(3.0)  # mean logits [ln3 / 2, 0] -> softmax [sqrt3, 1] / (sqrt3 + 1)
    np.testing.assert_allclose(ens.combine(logits, "logit"), [[r3 / (r3 + 1), 1 / (r3 + 1)]])
    # weights are normalised internally: [3, 1] == [.75, .25]
    np.testing.assert_allclose(ens.combine(logits, "soft", [3, 1]), [[0.5625, 0.4375]])


def test_hard_majority_beats_confident_minority():
    # runs 0 and 1 weakly vote class 0, run 2 votes class 1 very confidently: soft would say 1
    logits = np.array([[[1.0, 0, 0]], [[1.0, 0, 0]], [[0, 20.0, 0]]])
    assert ens.combine(logits, "soft").argmax() == 1
    scores = ens.combine(logits, "hard")
    assert scores.argmax() == 0
    np.testing.assert_allclose(scores.sum(axis=1), 1.0)
    assert ens.combine(logits, "hard", weights=[1, 1, 3]).argmax() == 1  # weighted vote


def test_hard_tie_is_broken_by_soft_probabilities():
    # 1-1 tie between class 0 (first index, what a plain argmax of the votes picks) and
    # class 1; soft prefers class 1 because run 1 is far more confident.
    logits = np.array([[[0.1, 0.0, -5.0]], [[0.0, 5.0, 0.0]]])
    scores = ens.combine(logits, "hard")
    assert scores.argmax() == 1
    np.testing.assert_allclose(scores.sum(axis=1), 1.0)
    assert scores[0, 2] < 1e-3  # no votes -> only a small soft share
    assert np.isfinite(ens.log_loss(scores, [2]))


def test_rank_is_invariant_to_per_class_monotone_transform():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 50, 4))
    moved = logits.copy()
    moved[1] = np.exp(moved[1]) * np.array([1, 2, 3, 4]) + np.array([0, -1, 5, 2])
    a, b = ens.combine(logits, "rank"), ens.combine(moved, "rank")
    np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(a.sum(axis=1), 1.0)
    assert not np.allclose(ens.combine(logits, "soft"), ens.combine(moved, "soft"))


@pytest.mark.parametrize("bad, match", [
    (dict(logits=np.zeros((4, 3))), "3-D array"),
    (dict(method="mean"), "choose one of 'soft', 'logit', 'hard', 'rank'"),
    (dict(weights=[1, 1]), r"shape \(3,\)"),
    (dict(weights=[1, -1, 1]), "non-negative"),
    (dict(weights=[0, 0, 0]), "all zero"),
    (dict(logits=np.full((3, 2, 2), np.nan)), "NaN"),
])
def test_combine_validation_names_the_problem(bad, match):
    args = dict(logits=np.zeros((3, 2, 2)), method="soft", weights=None) | bad
    with pytest.raises(ValueError, match=match):
        ens.combine(**args)


# ----------------------------------------------------------------------------- top_runs
def test_top_runs_percent_and_count():
    scores = [0.1, 0.9, 0.5, 0.7, 0.2, 0.8, 0.3, 0.6, 0.4, 0.0]
    assert ens.top_runs(scores, "30%") == [1, 5, 3]
    assert ens.top_runs(scores, 2) == [1, 5]
    assert ens.top_runs(scores, "2") == [1, 5]  # a count as typed on the command line
    assert ens.top_runs(scores, "1%") == [1]  # at least one run
    assert ens.top_runs([0.5, 0.5, 0.1], 2) == [0, 1]  # stable on ties


@pytest.mark.parametrize("top, match", [
    ("0%", r"\(0%, 100%\]"), ("150%", r"\(0%, 100%\]"), (0, "at least 1"),
    (11, "R=10"), ("x%", "percentage"), (2.5, "integer"), (True, "integer"),
])
def test_top_runs_errors(top, match):
    with pytest.raises(ValueError, match=match):
        ens.top_runs(list(range(10)), top)


# ----------------------------------------------------------------------------- temperature
def test_temperature_scaling_recovers_t2():
    rng = np.random.default_rng(2)
    z = 1.5 * rng.normal(size=(5000, 5))
    p = ens.softmax(z)
    y = (rng.random((5000, 1)) > p.cumsum(axis=1)).sum(axis=1)  # y ~ Categorical(softmax(z))
    t = ens.temperature_scale(2.0 * z, y)
    assert t == pytest.approx(2.0, rel=0.1)
    np.testing.assert_allclose(ens.apply_temperature(2.0 * z, t), 2.0 * z / t)
    stacked = np.stack([z, 3 * z])
    np.testing.assert_allclose(ens.apply_temperature(stacked, [1.0, 3.0]), np.stack([z, z]))
    with pytest.raises(ValueError, match="> 0"):
        ens.apply_temperature(z, 0.0)


# ----------------------------------------------------------------------------- selection / stacking
def test_caruana_puts_weight_on_the_perfect_run():
    logits, y, _ = _perfect_and_random()
    w = ens.caruana_select(logits, y)
    assert w.sum() == pytest.approx(1.0)
    assert w[1] >= 0.95
    with pytest.raises(ValueError, match="init_k"):
        ens.caruana_select(logits, y, init_k=3)


def test_caruana_ties_go_to_lowest_index():
    logits = np.stack([np.eye(3)[[0, 1, 2]] * 5.0] * 3)  # three identical runs
    w = ens.caruana_select(logits, [0, 1, 2], metric="accuracy", n_iter=4)
    np.testing.assert_allclose(w, [1.0, 0.0, 0.0])


def test_stacker_learns_the_perfect_run():
    logits, y, fold = _perfect_and_random()
    model = ens.stack_fit(logits, y)
    probs = ens.stack_predict(model, logits)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert ens.nested_oof(logits, y, fold, "stack").accuracy > 0.98


@pytest.mark.parametrize("method, min_acc", [
    ("soft", 0.98), ("logit", 0.98), ("hard", 0.98), ("rank", 0.5), ("select", 0.98), ("stack", 0.98),
])
def test_every_method_on_perfect_plus_random(method, min_acc):
    logits, y, fold = _perfect_and_random()
    res = ens.nested_oof(logits, y, fold, method)
    assert res.accuracy >= min_acc  # rank discards confidence, so the noise run weighs in
    assert res.oof_scores.shape == (len(y), 5)
    np.testing.assert_allclose(res.oof_scores.sum(axis=1), 1.0)
    assert len(res.per_fold_weights) == 5


# ----------------------------------------------------------------------------- nested honesty
def test_nested_equals_plain_for_parameter_free(noise):
    logits, y, fold = noise
    res = ens.nested_oof(logits, y, fold, "soft")
    np.testing.assert_allclose(res.oof_scores, ens.combine(logits, "soft"))
    assert res.accuracy == res.insample_accuracy and res.logloss == res.insample_logloss
    np.testing.assert_allclose(res.weights, np.full(20, 1 / 20))


def test_nested_stack_is_honest_on_noise(noise):
    logits, y, fold = noise
    res = ens.nested_oof(logits, y, fold, "stack")
    assert res.accuracy < 0.15  # chance is 0.10
    assert res.insample_accuracy > 0.25  # the stacker memorises noise in-sample
    assert res.insample_logloss < res.logloss


def test_nested_select_is_honest_on_noise(noise):
    logits, y, fold = noise
    res = ens.nested_oof(logits, y, fold, "select", metric="accuracy")
    assert res.accuracy < 0.12
    assert res.insample_accuracy > 0.12
    assert res.insample_accuracy - res.accuracy > 0.02
    assert res.weights.sum() == pytest.approx(1.0)
    assert len(res.per_fold_weights) == 5
    assert not all(np.allclose(w, res.weights) for w in res.per_fold_weights)


def test_temperature_and_top_are_fit_inside_folds(noise):
    logits, y, fold = noise
    res = ens.nested_oof(logits, y, fold, "soft", temperature=True, top="30%")
    assert res.accuracy < 0.15
    assert res.temperatures.shape == (20,) and (res.temperatures > 0).all()
    assert (res.weights > 0).sum() == 6
    assert not np.allclose(res.oof_scores, ens.combine(logits, "soft"))


# ----------------------------------------------------------------------------- fit / predict
def test_fit_full_and_predict_uses_the_full_fit():
    logits, y, _ = _perfect_and_random()
    rng = np.random.default_rng(3)
    y_test = rng.integers(0, 5, 40)
    test = np.stack([rng.normal(size=(40, 5)), 8.0 * np.eye(5)[y_test]])
    for method in ens.FIT_METHODS:
        scores = ens.fit_full_and_predict(logits, y, test, method)
        assert scores.shape == (40, 5)
        assert ens.accuracy(scores, y_test) >= (0.5 if method == "rank" else 0.95)
    blender = ens.fit("soft", logits, y, temperature=True)
    manual = ens.combine(ens.apply_temperature(test, blender.temperatures), "soft")
    np.testing.assert_allclose(ens.fit_full_and_predict(logits, y, test, "soft", temperature=True), manual)


def test_fit_and_nested_validation_messages():
    logits, y, fold = _perfect_and_random(n=50)
    with pytest.raises(ValueError, match="'select', 'stack'"):
        ens.fit("blend", logits, y)
    with pytest.raises(ValueError, match=r"shape \(50,\)"):
        ens.fit("soft", logits, y[:-1])
    with pytest.raises(ValueError, match="class indices"):
        ens.fit("soft", logits, y + 5)
    with pytest.raises(ValueError, match="learns its own weights"):
        ens.fit("select", logits, y, weights=[1, 1])
    with pytest.raises(ValueError, match="metric"):
        ens.fit("select", logits, y, metric="auc")
    with pytest.raises(ValueError, match="2 distinct fold"):
        ens.nested_oof(logits, y, np.zeros(50, int), "stack")
    with pytest.raises(ValueError, match="fit on 2 runs"):
        ens.fit_full_and_predict(logits, y, logits[:1], "soft")
