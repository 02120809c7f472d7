"""Blending of per-run logits: combination rules, run selection, temperature scaling,
stacking, and honest (nested, fold-wise) out-of-fold evaluation.

Pure numpy / scipy / scikit-learn: no file I/O, no printing (``comp blend`` does that).
Shapes: ``logits`` (R, N, C) = runs x rows x classes, ``y`` (N,) int, ``fold`` (N,) int.
``nested_oof`` and ``fit_full_and_predict`` both build blends with ``fit(...) -> Blender``,
so OOF scores and test predictions come from the same fitting code.
"""
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.preprocessing import StandardScaler

COMBINE_METHODS = ("soft", "logit", "hard", "rank")
FIT_METHODS = COMBINE_METHODS + ("select", "stack")
METRICS = ("logloss", "accuracy")


def _check_choice(value, choices, name):
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, choices))}")


def _check_logits(logits, name="logits"):
    a = np.asarray(logits, dtype=float)
    if a.ndim != 3:
        raise ValueError(f"{name} must be a 3-D array (n_runs, n_rows, n_classes); got shape "
                         f"{a.shape}. Stack per-run (n_rows, n_classes) arrays with np.stack.")
    if a.shape[0] < 1 or a.shape[1] < 1 or a.shape[2] < 2:
        raise ValueError(f"{name} needs >= 1 run, >= 1 row and >= 2 classes; got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf; check the runs' saved predictions")
    return a


def _check_labels(values, n_rows, name, n_classes=None):
    a = np.asarray(values)
    if a.shape != (n_rows,):
        raise ValueError(f"{name} must have shape ({n_rows},) to match the logits' rows; "
                         f"got shape {a.shape}")
    if a.dtype.kind not in "iu" and not (a.dtype.kind == "f" and np.all(a == np.round(a))):
        raise ValueError(f"{name} must hold integers (encode string labels first); got {a.dtype}")
    if n_classes is not None and n_rows and (a.min() < 0 or a.max() >= n_classes):
        raise ValueError(f"{name} must be class indices in [0, {n_classes}); "
                         f"got values in [{a.min()}, {a.max()}]")
    return a.astype(int)


def _check_scores(scores, y):
    s = np.asarray(scores, dtype=float)
    if s.ndim != 2:
        raise ValueError(f"scores must be 2-D (n_rows, n_classes); got shape {s.shape}")
    return s, _check_labels(y, s.shape[0], "y", s.shape[1])


def _check_weights(weights, n_runs):
    """Return weights normalised to sum to 1 (uniform when None)."""
    if weights is None:
        return np.full(n_runs, 1.0 / n_runs)
    w = np.asarray(weights, dtype=float)
    if w.shape != (n_runs,):
        raise ValueError(f"weights must have shape ({n_runs},), one per run; got shape {w.shape}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"weights must be finite and non-negative; got {w.tolist()}")
    if w.sum() <= 0:
        raise ValueError("weights are all zero; give at least one run a positive weight")
    return w / w.sum()


def softmax(logits, axis=-1):
    """Numerically stable softmax (subtract the max before exponentiating)."""
    z = np.asarray(logits, dtype=float)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _logloss(p, y):
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-15, 1.0))))


def _accuracy(s, y):
    return float(np.mean(s.argmax(axis=1) == y))


def log_loss(probs, y):
    """Mean negative log-probability of the true class, probabilities clipped at 1e-15."""
    return _logloss(*_check_scores(probs, y))


def accuracy(scores, y):
    return _accuracy(*_check_scores(scores, y))


def macro_f1(scores, y, n_classes):
    s, y = _check_scores(scores, y)
    return float(f1_score(y, s.argmax(axis=1), labels=list(range(n_classes)),
                          average="macro", zero_division=0))


def score_probs(probs, y, n_classes):
    """The three figures comp reports everywhere: accuracy, macro-F1 and log loss."""
    return {"accuracy": accuracy(probs, y), "macro_f1": macro_f1(probs, y, n_classes), "log_loss": log_loss(probs, y)}


def _loss_fn(metric):
    """Metric as a loss (lower is better), unchecked for use in inner loops."""
    return _logloss if metric == "logloss" else (lambda s, y: -_accuracy(s, y))


# Each rule is "weighted mean over runs of a per-run contribution, then a final map", which
# lets caruana_select update a running sum instead of recombining all runs per candidate.
def _contributions(z, method):
    if method == "soft":
        return softmax(z)
    if method == "logit":
        return z
    if method == "hard":
        return np.eye(z.shape[2])[z.argmax(axis=2)]  # one-hot vote per run and row
    # rank: each run's class columns ranked across rows; rank/N is in (0, 1], so no row sums
    # to 0. Ranking raw logits makes it invariant to per-run, per-class monotone transforms.
    return rankdata(z, axis=1) / z.shape[1]


def _hard_scores(votes, soft):
    """Vote shares plus soft probabilities scaled by delta <= half the smallest gap between
    distinct tallies (rounded to kill float noise): soft only reorders tied classes, never
    overturns a real vote difference. Rows are renormalised to sum to 1; zero-vote classes
    keep a small soft share, so log loss stays finite (but harsh)."""
    v = np.round(votes, 9)
    gaps = np.diff(np.unique(v))
    delta = min(1e-3, gaps.min() / 2) if gaps.size else 1e-3
    s = v + delta * soft
    return s / s.sum(axis=-1, keepdims=True)


_FINALIZE = {  # (weighted mean contribution, weighted mean soft probs) -> scores
    "soft": lambda mean, soft: mean,
    "logit": lambda mean, soft: softmax(mean),
    "hard": _hard_scores,
    "rank": lambda mean, soft: mean / mean.sum(axis=-1, keepdims=True),
}


def _combine(z, method, w):
    soft = np.tensordot(w, softmax(z), axes=1) if method == "hard" else None
    return _FINALIZE[method](np.tensordot(w, _contributions(z, method), axes=1), soft)


def combine(logits, method, weights=None):
    """Blend runs into (N, C) scores whose rows sum to 1.

    soft: weighted mean of probabilities. logit: softmax of the weighted mean logit.
    hard: weighted vote shares of each run's argmax, ties broken by soft (see _hard_scores).
    rank: weighted mean of per-class ranks across rows (scaled to (0, 1]), row-normalised.
    """
    z = _check_logits(logits)
    _check_choice(method, COMBINE_METHODS, "method")
    return _combine(z, method, _check_weights(weights, z.shape[0]))


def _n_keep(top, n_runs):
    if isinstance(top, str) and top.strip().endswith("%"):
        try:
            pct = float(top.strip()[:-1])
        except ValueError:
            raise ValueError(f"top={top!r}: write a percentage like '30%' or a count like 3") from None
        if not 0 < pct <= 100:
            raise ValueError(f"top={top!r}: the percentage must be in (0%, 100%]")
        # round() guards against 30 * 10 / 100 landing a hair above 3 and ceil-ing to 4
        return max(1, math.ceil(round(pct * n_runs / 100, 9)))
    if isinstance(top, str) and top.strip().lstrip("+-").isdigit():
        top = int(top)  # a count given on the command line
    if isinstance(top, (bool, np.bool_)) or not isinstance(top, (int, np.integer)):
        raise ValueError(f"top={top!r}: write a percentage like '30%' or an integer count")
    if not 1 <= top <= n_runs:
        raise ValueError(f"top={top}: keep at least 1 run and at most the number of runs "
                         f"R={n_runs}; use 1 <= top <= {n_runs} or a percentage")
    return int(top)


def top_runs(scores_per_run, top):
    """Best runs (higher score = better) as indices, best first, ties to the lower index.
    ``top``: "30%" keeps ceil(30% of R) runs (at least 1); an int K keeps K runs."""
    s = np.asarray(scores_per_run, dtype=float)
    if s.ndim != 1 or s.size == 0 or np.isnan(s).any():
        raise ValueError("scores_per_run must be a non-empty list of numbers (no NaN), one per run")
    k = _n_keep(top, s.size)
    return [int(i) for i in np.argsort(-s, kind="stable")[:k]]


def temperature_scale(logits_run, y):
    """Fit T > 0 minimising the log loss of softmax(logits_run / T) (search over log T)."""
    z = np.asarray(logits_run, dtype=float)
    if z.ndim != 2:
        raise ValueError(f"logits_run must be 2-D (n_rows, n_classes) for one run; got shape {z.shape}")
    y = _check_labels(y, z.shape[0], "y", z.shape[1])
    rows = np.arange(len(y))
    nll = lambda log_t: -np.mean(log_softmax(z / np.exp(log_t), axis=-1)[rows, y])  # noqa: E731
    res = minimize_scalar(nll, bounds=(math.log(1e-2), math.log(1e2)), method="bounded",
                          options={"xatol": 1e-5})
    return float(np.exp(res.x))


def apply_temperature(logits, T):
    """logits / T; T a scalar, or (R,) per-run temperatures for (R, N, C) logits."""
    z, t = np.asarray(logits, dtype=float), np.asarray(T, dtype=float)
    if not np.isfinite(t).all() or (t <= 0).any():
        raise ValueError(f"temperatures must be finite and > 0; got {t.tolist()}")
    if t.ndim == 0:
        return z / t
    if t.ndim == 1 and z.ndim == 3 and t.size == z.shape[0]:
        return z / t[:, None, None]
    raise ValueError(f"T must be a scalar, or (R,) for (R, N, C) logits; got T shape {t.shape} "
                     f"with logits shape {z.shape}")


def caruana_select(logits, y, metric="logloss", n_iter=50, init_k=1, method="soft"):
    """Caruana et al. (2004) ensemble selection; returns weights (R,) = pick counts / total.
    Starts from the init_k best single runs, then n_iter times adds (with replacement) the
    run whose addition gives the best ensemble metric; ties go to the lowest run index.
    """
    z = _check_logits(logits)
    n_runs = z.shape[0]
    y = _check_labels(y, z.shape[1], "y", z.shape[2])
    _check_choice(metric, METRICS, "metric")
    _check_choice(method, COMBINE_METHODS, "method")
    if not (isinstance(n_iter, (int, np.integer)) and n_iter >= 0):
        raise ValueError(f"n_iter must be an integer >= 0; got {n_iter!r}")
    if not (isinstance(init_k, (int, np.integer)) and 1 <= init_k <= n_runs):
        raise ValueError(f"init_k must be an integer in [1, R={n_runs}]; got {init_k!r}")
    loss = _loss_fn(metric)
    contrib = _contributions(z, method)
    probs = softmax(z) if method == "hard" else np.zeros_like(z)  # hard's tie-break input

    def score(total, total_p, n):
        return loss(_FINALIZE[method](total / n, total_p / n), y)

    single = [-score(contrib[r], probs[r], 1) for r in range(n_runs)]
    counts = np.zeros(n_runs, dtype=int)
    counts[top_runs(single, int(init_k))] = 1
    total, total_p = np.tensordot(counts, contrib, 1), np.tensordot(counts, probs, 1)
    for _ in range(n_iter):
        n = counts.sum() + 1
        losses = [score(total + contrib[r], total_p + probs[r], n) for r in range(n_runs)]
        best = int(np.argmin(losses))  # argmin takes the first minimum: lowest index wins
        counts[best] += 1
        total += contrib[best]
        total_p += probs[best]
    return counts / counts.sum()


@dataclass
class StackModel:
    scaler: StandardScaler
    clf: LogisticRegression
    n_runs: int
    n_classes: int


def _stack_features(z):
    # log-softmax removes each row's arbitrary logit offset; runs side by side: (N, R*C)
    return log_softmax(z, axis=-1).transpose(1, 0, 2).reshape(z.shape[1], -1)


def stack_fit(logits, y, C=1.0):
    """Multinomial logistic regression on the runs' standardised log-softmax outputs."""
    z = _check_logits(logits)
    y = _check_labels(y, z.shape[1], "y", z.shape[2])
    if not C > 0:
        raise ValueError(f"C (inverse regularisation strength) must be > 0; got {C!r}")
    if np.unique(y).size < 2:
        raise ValueError("stacking needs at least 2 distinct classes among the fit rows")
    x = _stack_features(z)
    scaler = StandardScaler().fit(x)
    clf = LogisticRegression(C=C, max_iter=1000).fit(scaler.transform(x), y)
    return StackModel(scaler, clf, z.shape[0], z.shape[2])


def _check_fitted_shape(z, n_runs, n_classes, what):
    if z.shape[0] != n_runs or z.shape[2] != n_classes:
        raise ValueError(f"logits have {z.shape[0]} runs x {z.shape[2]} classes; the {what} was "
                         f"fit on {n_runs} runs x {n_classes} classes (pass runs in the same order)")
    return z


def stack_predict(model, logits):
    z = _check_fitted_shape(_check_logits(logits), model.n_runs, model.n_classes, "stacker")
    p = model.clf.predict_proba(model.scaler.transform(_stack_features(z)))
    out = np.zeros((z.shape[1], model.n_classes))
    out[:, model.clf.classes_] = p  # classes absent from the fit rows get probability 0
    return out


@dataclass
class Blender:
    """A fitted blend. ``learned`` is True when anything was fit on labels (weights,
    stacker, temperatures, run choice), which is what forces nested OOF scoring."""
    method: str
    combine_method: str | None  # rule applied to the runs; None for stack
    n_runs: int
    n_classes: int
    keep: np.ndarray  # indices of the runs used
    weights: np.ndarray | None  # (R,), zero for dropped runs; None for stack
    temperatures: np.ndarray | None  # (R,) or None
    stacker: StackModel | None
    learned: bool

    def predict(self, logits):
        z = _check_fitted_shape(_check_logits(logits), self.n_runs, self.n_classes, "blender")
        if self.temperatures is not None:
            z = apply_temperature(z, self.temperatures)
        z = z[self.keep]
        if self.stacker is not None:
            return stack_predict(self.stacker, z)
        return _combine(z, self.combine_method, self.weights[self.keep])


def fit(method, logits, y, *, weights=None, temperature=False, top=None, metric="logloss",
        n_iter=50, init_k=1, combine="soft", C=1.0):
    """Fit a blend on (logits, y). method: soft | logit | hard | rank (fixed ``weights``, default uniform), select
    (Caruana weights for the ``combine`` rule, driven by ``metric``), stack (stacker, ``C``).
    temperature: fit and apply per-run temperatures first. top: keep only the best runs
    ("30%" or K) by single-run ``metric`` on these rows.
    """
    z = _check_logits(logits)
    n_runs, _, n_classes = z.shape
    y = _check_labels(y, z.shape[1], "y", n_classes)
    _check_choice(method, FIT_METHODS, "method")
    _check_choice(metric, METRICS, "metric")
    if weights is not None and method in ("select", "stack"):
        raise ValueError(f"method={method!r} learns its own weights; pass weights only with "
                         f"{', '.join(COMBINE_METHODS)}")
    temps = np.array([temperature_scale(zr, y) for zr in z]) if temperature else None
    if temps is not None:
        z = apply_temperature(z, temps)
    keep = np.arange(n_runs)
    if top is not None:  # rank runs alone by the metric on these (fit) rows only
        keep = np.sort(top_runs([-_loss_fn(metric)(softmax(zr), y) for zr in z], top))
    rule, w, stacker = (combine if method == "select" else method), np.zeros(n_runs), None
    if method == "stack":
        rule, w, stacker = None, None, stack_fit(z[keep], y, C=C)
    elif method == "select":
        w[keep] = caruana_select(z[keep], y, metric, n_iter, init_k, combine)
    else:
        kept = _check_weights(weights, n_runs)[keep]
        if kept.sum() <= 0:
            raise ValueError(f"top={top!r} kept only runs whose weight is 0; adjust weights or top")
        w[keep] = kept / kept.sum()
    learned = method in ("select", "stack") or bool(temperature) or top is not None
    return Blender(method, rule, n_runs, n_classes, keep, w, temps, stacker, learned)


@dataclass
class NestedResult:
    oof_scores: np.ndarray  # (N, C) honest held-out blended scores
    accuracy: float
    macro_f1: float
    logloss: float
    insample_accuracy: float  # fit and scored on all rows: optimistic
    insample_logloss: float
    weights: np.ndarray | None  # fit on all rows: what the test prediction uses
    per_fold_weights: list
    temperatures: np.ndarray | None  # fit on all rows, or None


def nested_oof(logits, y, fold, method, **opts):
    """Honest OOF evaluation of a blend: anything learned from labels is fit on the other
    folds' rows and applied to each held-out fold; parameter-free blends are scored as is."""
    z = _check_logits(logits)
    n_rows, n_classes = z.shape[1], z.shape[2]
    y = _check_labels(y, n_rows, "y", n_classes)
    fold = _check_labels(fold, n_rows, "fold")
    folds = np.unique(fold)
    if folds.size < 2:
        raise ValueError(f"fold must contain at least 2 distinct fold ids; got {folds.tolist()}")
    full = fit(method, z, y, **opts)
    insample = full.predict(z)
    if full.learned:
        oof, per_fold = np.empty((n_rows, n_classes)), []
        for f in folds:
            held = fold == f
            blender = fit(method, z[:, ~held], y[~held], **opts)
            oof[held] = blender.predict(z[:, held])
            per_fold.append(blender.weights)
    else:  # nothing depends on labels, so the plain blend is already honest
        oof, per_fold = insample, [full.weights] * folds.size
    return NestedResult(oof, _accuracy(oof, y), macro_f1(oof, y, n_classes), _logloss(oof, y),
                        _accuracy(insample, y), _logloss(insample, y), full.weights, per_fold,
                        full.temperatures)


def fit_full_and_predict(oof_logits, y, test_logits, method, **opts):
    """Fit the blend on all OOF rows and return test scores (M, C)."""
    test = _check_logits(test_logits, "test_logits")
    return fit(method, oof_logits, y, **opts).predict(test)
