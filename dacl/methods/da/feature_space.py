"""Shallow (feature-space) DA on precomputed features: adapt the source features, then fit a classifier.

The classic pipeline of Sun et al. 2016 ("Return of frustratingly easy DA": CORAL + linear SVM) and
Courty et al. 2017 (TPAMI: OT-DA + 1-NN). Adapters are registered functions
``(xs, ys, xt, **hparams) -> (xs_adapted, xt_adapted)``; the OT ones are POT's ``ot.da`` transports
(barycentric mapping of the source onto the target). Classifiers are scikit-learn estimators.
Target labels are only used to score the final prediction. POT, SciPy and scikit-learn are imported
lazily so importing dacl stays fast.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from dacl.registry import FEATURE_ADAPTERS, FEATURE_CLASSIFIERS

Arrays = tuple[np.ndarray, np.ndarray]


def l1_zscore(x: np.ndarray) -> np.ndarray:
    """The Office-Caltech SURF protocol (Gong et al. 2012; Sun et al. 2016): L1-normalise rows, then z-score each
    feature within the domain."""
    x = x.astype(np.float64)
    x = x / np.maximum(x.sum(axis=1, keepdims=True), 1e-12)
    return (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)


@FEATURE_ADAPTERS.register("none")
def no_adaptation(xs: np.ndarray, ys: np.ndarray, xt: np.ndarray) -> Arrays:
    return xs, xt


@FEATURE_ADAPTERS.register("coral")
def coral(xs: np.ndarray, ys: np.ndarray, xt: np.ndarray, eps: float = 1.0) -> Arrays:
    """Whiten the source with (C_s + eps I)^-1/2, re-colour it with (C_t + eps I)^1/2 (Sun et al. 2016, Alg. 1)."""
    from scipy import linalg

    d = xs.shape[1]
    cs = np.cov(xs, rowvar=False) + eps * np.eye(d)
    ct = np.cov(xt, rowvar=False) + eps * np.eye(d)
    whiten = linalg.fractional_matrix_power(cs, -0.5)
    recolor = linalg.fractional_matrix_power(ct, 0.5)
    return np.real(xs @ whiten @ recolor), xt


@FEATURE_ADAPTERS.register("sa")
def subspace_alignment(xs: np.ndarray, ys: np.ndarray, xt: np.ndarray, dim: int = 80) -> Arrays:
    """Subspace alignment (Fernando et al. 2013, ICCV): project each domain on its top-``dim`` PCA basis and map the
    source basis onto the target's, M = Ps^T Pt; source -> xs Ps M, target -> xt Pt. ``dim`` is capped by the
    smaller domain's rank."""
    dim = int(min(dim, xs.shape[1], len(xs) - 1, len(xt) - 1))

    def basis(x: np.ndarray) -> np.ndarray:
        _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
        return vt[:dim].T  # (d, dim)

    ps, pt = basis(xs), basis(xt)
    return (xs - xs.mean(0)) @ ps @ (ps.T @ pt), (xt - xt.mean(0)) @ pt


def _ot_da() -> Any:
    import ot.da

    return ot.da


def _transport(estimator: Any, xs: np.ndarray, ys: np.ndarray, xt: np.ndarray, use_labels: bool) -> Arrays:
    estimator.fit(Xs=xs, ys=ys if use_labels else None, Xt=xt)
    return estimator.transform(Xs=xs), xt


@FEATURE_ADAPTERS.register("ot_emd")
def ot_emd(xs, ys, xt, norm: str = "max") -> Arrays:
    """Exact OT (network simplex) + barycentric mapping."""
    return _transport(_ot_da().EMDTransport(norm=norm), xs, ys, xt, use_labels=False)


@FEATURE_ADAPTERS.register("ot_sinkhorn")
def ot_sinkhorn(xs, ys, xt, reg_e: float = 0.1, norm: str = "max", max_iter: int = 1000) -> Arrays:
    """Entropic OT ("OT-IT" in Courty et al. 2017)."""
    return _transport(_ot_da().SinkhornTransport(reg_e=reg_e, norm=norm, max_iter=max_iter), xs, ys, xt, use_labels=False)


@FEATURE_ADAPTERS.register("ot_lpl1")
def ot_lpl1(xs, ys, xt, reg_e: float = 0.1, reg_cl: float = 1.0, norm: str = "max") -> Arrays:
    """Entropic OT + class-sparsity l_p-l_1 regulariser on source labels ("OT-LpLq")."""
    return _transport(_ot_da().SinkhornLpl1Transport(reg_e=reg_e, reg_cl=reg_cl, norm=norm), xs, ys, xt, use_labels=True)


@FEATURE_ADAPTERS.register("ot_gl")
def ot_group_lasso(xs, ys, xt, reg_e: float = 0.1, reg_cl: float = 1.0, norm: str = "max") -> Arrays:
    """Entropic OT + group-lasso (l1-l2) class regulariser, solved by generalised conditional gradient ("OT-GL")."""
    return _transport(_ot_da().SinkhornL1l2Transport(reg_e=reg_e, reg_cl=reg_cl, norm=norm), xs, ys, xt, use_labels=True)


@FEATURE_ADAPTERS.register("ot_laplace")
def ot_laplace(xs, ys, xt, reg_lap: float = 1.0, reg_src: float = 0.5, norm: str = "max", max_iter: int = 10) -> Arrays:
    """Exact OT + Laplacian regularisation that keeps source neighbours close after transport ("OT-Laplace").
    10 conditional-gradient iterations: POT's default 100 took ~3 min per Office-Caltech pair on one core."""
    est = _ot_da().EMDLaplaceTransport(reg_lap=reg_lap, reg_src=reg_src, norm=norm, max_iter=max_iter)
    return _transport(est, xs, ys, xt, use_labels=False)


@FEATURE_CLASSIFIERS.register("1nn")
def one_nn() -> Any:
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=1)


@FEATURE_CLASSIFIERS.register("linear_svm")
def linear_svm(C: float = 1.0) -> Any:
    """LIBSVM with a linear kernel, the tool Sun et al. 2016 used (liblinear's LinearSVC took minutes to converge
    on z-scored SURF features; LIBSVM's dual solver takes under a second)."""
    from sklearn.svm import SVC

    return SVC(kernel="linear", C=C)


def adapt_and_score(xs: np.ndarray, ys: np.ndarray, xt: np.ndarray, yt: np.ndarray, adapter: str = "none",
                    classifiers: tuple[str, ...] = ("1nn",), adapter_kwargs: dict[str, Any] | None = None) -> dict[str, float]:
    """{classifier: target accuracy} for classifiers fit on ``adapter``-adapted source features (yt only scores).
    The adaptation runs once and is shared by all classifiers."""
    xs_a, xt_a = FEATURE_ADAPTERS.get(adapter)(xs, ys, xt, **(adapter_kwargs or {}))
    if not np.isfinite(xs_a).all():
        raise FloatingPointError(f"adapter '{adapter}' produced non-finite features; increase its regularisation")
    scores = {}
    for name in classifiers:
        clf = FEATURE_CLASSIFIERS.get(name)()
        clf.fit(xs_a, ys)
        scores[name] = float((clf.predict(xt_a) == yt).mean())
    return scores


from dacl.methods.base import Method  # noqa: E402
from dacl.registry import METHODS  # noqa: E402


@METHODS.register("feature_adapter")
class FeatureAdapter(Method):
    """Shallow DA as a `dacl run` method: ``adapter`` (a FEATURE_ADAPTERS name) aligns precomputed source features
    to the target's, then each of ``classifiers`` is fit on the adapted source and scores the target. Closed form:
    there is nothing to step, so the run is one fit (``closed_form``) recorded like any other run."""

    defaults = {"adapter": "none", "classifiers": ["1nn", "linear_svm"], "adapter_kwargs": {}}
    closed_form = True

    def fit_and_score(self, xs: np.ndarray, ys: np.ndarray, xt: np.ndarray, yt: np.ndarray) -> dict[str, float]:
        h = self.hparams
        return adapt_and_score(xs, ys, xt, yt, h["adapter"], tuple(h["classifiers"]), dict(h["adapter_kwargs"] or {}))

    def training_step(self, state) -> None:  # noqa: ANN001
        raise TypeError("feature_adapter is fit in closed form on a feature benchmark (benchmark=office_caltech_surf)")
