"""Ridge regression with one decomposition serving a whole grid of penalties.

For a training design ``X`` (n_train, n_features) and targets ``Y`` (n_train,
n_sites) the model is ``Y ~ 1 b + X W`` with an unpenalised intercept ``b`` and
penalty ``alpha * ||W||^2`` (scikit-learn's ``Ridge(fit_intercept=True)``).
Centring ``X`` and ``Y`` by their training means removes the intercept; the
centred design ``Xc = U S V^T`` is then decomposed once:

* ``method="svd"``: thin SVD of ``Xc``, cost O(n p min(n, p)), used when
  ``n_features <= n_train``;
* ``method="kernel"``: eigendecomposition of the stimulus x stimulus kernel
  ``Xc Xc^T = U S^2 U^T``, cost O(n^2 p + n^3), used when features outnumber
  stimuli (wide layers). New stimuli are projected through the cross kernel,
  ``(X' - x_mean) Xc^T U``; ``V S = Xc^T U`` (a further O(n^2 p)) is only formed
  for :meth:`RidgePath.coef`. :func:`fit_predict` and :func:`inner_cv` on this
  path compute the training kernel once and re-centre it for every inner fold
  (:func:`framework.numerics.gram.recentered_gram`) instead of re-multiplying
  the features of each fold.

Both give ``U`` (n_train, rank), ``s2 = S^2`` (rank,) and ``V S`` (n_features,
rank), from which every penalty costs only products with ``A = U^T Yc``
(rank, n_sites)::

    coef(alpha)        = V S diag(1 / (s2 + alpha)) A                  (n_features, n_sites)
    predict(X', alpha) = y_mean + (X' - x_mean) V S diag(1 / (s2 + alpha)) A

Leave-one-out (LOO) errors come in closed form from the hat matrix
``H = 11^T / n + U diag(s2 / (s2 + alpha)) U^T`` (exact for the model with
intercept): ``e_loo = e / (1 - diag(H))``. Writing ``w = alpha / (s2 + alpha)``,
``e = U diag(w) A + (Yc - U A)`` and ``1 - diag(H) = (U * U) w + (1 - 1/n - |U_i|^2)``
avoid the cancellation of ``1 - h`` at small penalties. The penalty of each site
is the grid value with the least mean squared LOO error (first on ties), the
same rule as ``sklearn.linear_model.RidgeCV(alpha_per_target=True)``; or the
least mean squared error of an inner K-fold cross-validation.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from framework.errors import ConfigError, DataError
from framework.numerics.gram import recentered_gram
from framework.numerics.splits import kfold_splits

__all__ = ["DEFAULT_ALPHAS", "METHODS", "SELECTIONS", "RidgePath", "RidgeResult", "check_alphas", "fit_predict",
           "inner_cv"]

log = logging.getLogger("framework.numerics.ridge")

#: Default penalty grid: 19 values, half a decade apart, 1e-3 ... 1e6 (z-scored features).
DEFAULT_ALPHAS: np.ndarray = np.logspace(-3, 6, 19)

#: Decompositions of :class:`RidgePath`: ``"auto"`` takes the kernel path when features outnumber stimuli.
METHODS = ("auto", "svd", "kernel")
#: Penalty selection rules of :func:`fit_predict`: exact leave-one-out or inner K-fold CV.
SELECTIONS = ("gcv", "inner-cv")


def check_alphas(alphas: Sequence[float] | np.ndarray, name: str = "alphas") -> np.ndarray:
    """The penalty grid as a float64 array; :class:`ConfigError` unless positive and finite.

    Parameters
    ----------
    alphas : sequence of float or ndarray, any shape
        Ridge penalties (in squared units of the standardised features).
    name : str
        Parameter name shown in the error message.

    Returns
    -------
    ndarray, (n_alphas,) float64
        ``alphas`` flattened; non-empty.
    """
    try:
        arr = np.asarray(alphas, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ConfigError(f"Invalid value {alphas!r} for {name}; expected a list of positive numbers, "
                          "e.g. [0.1, 1, 10].") from None
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ConfigError(f"Invalid value {alphas!r} for {name}; expected a non-empty list of positive, "
                          "finite penalties, e.g. [0.1, 1, 10].")
    return arr


class RidgePath:
    """One decomposition of a centred training set, serving every penalty.

    Parameters
    ----------
    features : ndarray, (n_train, n_features)
        Training design; converted to float64 and centred by its column means.
    targets : ndarray, (n_train, n_sites)
        Training targets; converted to float64 and centred.
    method : {"auto", "svd", "kernel"}
        ``"auto"`` takes the kernel path when ``n_features > n_train``.

    Attributes
    ----------
    x_mean : ndarray, (n_features,) float64
    y_mean : ndarray, (n_sites,) float64
    s2 : ndarray, (rank,) float64
        Squared singular values of the centred design (eigenvalues of its kernel)
        above the numerical rank tolerance ``max(s2) * max(n, p) * eps``.
    method : str
        The path actually used, ``"svd"`` or ``"kernel"``.
    """

    def __init__(self, features: np.ndarray, targets: np.ndarray, *, method: str = "auto") -> None:
        x = np.asarray(features, dtype=np.float64)
        y = np.asarray(targets, dtype=np.float64)
        if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
            raise DataError(f"Ridge needs features (n_train, n_features) and targets (n_train, n_sites) with the "
                            f"same n_train; got {x.shape} and {y.shape}.")
        if method not in METHODS:
            raise ConfigError(f"Invalid value {method!r} for ridge method; expected one of {METHODS}.")
        n, p = x.shape
        if n < 3:
            raise DataError(f"Ridge needs at least 3 training stimuli, got {n}.")
        self.n_train = n
        self.x_mean = x.mean(axis=0)
        self.y_mean = y.mean(axis=0)
        xc = x - self.x_mean
        yc = y - self.y_mean
        self.method = ("kernel" if p > n else "svd") if method == "auto" else method
        self._vs = None
        eps = np.finfo(np.float64).eps
        if self.method == "svd":
            u, s, vt = np.linalg.svd(xc, full_matrices=False)
            s2 = s * s
            keep = s2 > (s2.max(initial=0.0) * max(n, p) * eps)
            u, s, s2 = u[:, keep], s[keep], s2[keep]
            self._vs = vt[keep].T * s  # V S, (n_features, rank)
            self._xc = None
        else:
            lam, q = np.linalg.eigh(xc @ xc.T)
            keep = lam > (lam.max(initial=0.0) * max(n, p) * eps)
            u, s2 = q[:, keep], lam[keep]
            self._xc = xc  # V S = Xc^T U is formed only if coef() asks for it
        self._setup(u, s2, yc)

    @classmethod
    def from_gram(cls, gram: np.ndarray, targets: np.ndarray, *, n_features: int | None = None) -> RidgePath:
        """Kernel path from a precomputed Gram matrix of centred training features.

        Parameters
        ----------
        gram : ndarray, (n_train, n_train)
            ``Xc Xc^T`` with ``Xc`` the training features centred by their
            training means (e.g. z-scored with training statistics). Lets wide
            layers be streamed in feature blocks (memory O(n_train^2)).
        targets : ndarray, (n_train, n_sites)
        n_features : int, optional
            Features behind ``gram``: eigenvalues below ``max(lam) * max(n_train, n_features) * eps``
            are dropped, the rank tolerance of the feature path; default ``n_train``.

        Notes
        -----
        Predict with :meth:`predict_gram`; :meth:`transform`, :meth:`predict`
        and :meth:`coef` need the features and are unavailable.
        """
        k = np.asarray(gram, dtype=np.float64)
        y = np.asarray(targets, dtype=np.float64)
        n = k.shape[0]
        if k.shape != (n, n) or y.ndim != 2 or y.shape[0] != n:
            raise DataError(f"Ridge needs a Gram matrix (n_train, n_train) and targets (n_train, n_sites); "
                            f"got {k.shape} and {y.shape}.")
        if n < 3:
            raise DataError(f"Ridge needs at least 3 training stimuli, got {n}.")
        self = cls.__new__(cls)
        self.n_train = n
        self.method = "kernel"
        self.x_mean = None
        self.y_mean = y.mean(axis=0)
        lam, q = np.linalg.eigh((k + k.T) / 2.0)
        keep = lam > (lam.max(initial=0.0) * max(n, n_features or 0) * np.finfo(np.float64).eps)
        self._vs = None
        self._xc = None
        self._setup(q[:, keep], lam[keep], y - self.y_mean)
        return self

    def _setup(self, u: np.ndarray, s2: np.ndarray, yc: np.ndarray) -> None:
        n = u.shape[0]
        self.u = u
        self.s2 = s2
        self.rank = int(s2.size)
        self._a = u.T @ yc  # (rank, n_sites)
        self._r0 = yc - u @ self._a  # part of Yc outside the span of U, (n_train, n_sites)
        self._d0 = np.clip(1.0 - 1.0 / n - np.einsum("ik,ik->i", u, u), 0.0, None)  # (n_train,)
        self._u2 = u * u

    # -- closed-form leave-one-out --------------------------------------------------------
    def loo_mse(self, alphas: np.ndarray) -> np.ndarray:
        """Mean squared leave-one-out error of every penalty and site.

        Parameters
        ----------
        alphas : ndarray, (n_alphas,)

        Returns
        -------
        ndarray, (n_alphas, n_sites) float64
            ``mean_i ((y_i - yhat_{-i}) ** 2)`` in squared target units.
        """
        alphas = np.asarray(alphas, dtype=np.float64).reshape(-1)
        out = np.empty((alphas.size, self._a.shape[1]))
        for k, alpha in enumerate(alphas):  # a few grid values; each step is vectorised over sites
            w = alpha / (self.s2 + alpha)
            resid = self.u @ (w[:, None] * self._a) + self._r0
            one_minus_h = self._u2 @ w + self._d0
            out[k] = np.mean((resid / one_minus_h[:, None]) ** 2, axis=0)
        return out

    def loo_predictions(self, alpha: np.ndarray | float) -> np.ndarray:
        """Leave-one-out predictions of the training targets at one penalty per site.

        Parameters
        ----------
        alpha : float or ndarray, (n_sites,)

        Returns
        -------
        ndarray, (n_train, n_sites) float64
            ``yhat_{-i}``: the prediction for stimulus ``i`` of the model fitted without it.
        """
        alpha = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (self._a.shape[1],))
        w = alpha[None, :] / (self.s2[:, None] + alpha[None, :])  # (rank, n_sites)
        resid = self.u @ (w * self._a) + self._r0
        one_minus_h = self._u2 @ w + self._d0[:, None]
        y = self.u @ self._a + self._r0 + self.y_mean
        return y - resid / one_minus_h

    # -- fitted model -----------------------------------------------------------------------
    def transform(self, features: np.ndarray) -> np.ndarray:
        """Project new stimuli on the decomposition: ``(X' - x_mean) V S``, (n_test, rank) float64.

        On the kernel path computed as ``((X' - x_mean) Xc^T) U`` (cost O(n_test n_train (p + rank))).
        """
        if self._vs is None and self._xc is None:
            raise DataError("This ridge path was built from a Gram matrix; use predict_gram / transform_gram.")
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.x_mean.size:
            raise DataError(f"Test features must be (n_test, {self.x_mean.size}), got {x.shape}.")
        if self._vs is None:
            return ((x - self.x_mean) @ self._xc.T) @ self.u
        return (x - self.x_mean) @ self._vs

    def predict(self, features: np.ndarray, alpha: np.ndarray | float) -> np.ndarray:
        """Predict targets of new stimuli at one penalty per site.

        Parameters
        ----------
        features : ndarray, (n_test, n_features)
        alpha : float or ndarray, (n_sites,)

        Returns
        -------
        ndarray, (n_test, n_sites) float64
        """
        return self.predict_transformed(self.transform(features), alpha)

    def transform_gram(self, cross_gram: np.ndarray) -> np.ndarray:
        """Project new stimuli given ``(X' - x_mean) Xc^T`` (n_test, n_train); returns (n_test, rank)."""
        c = np.asarray(cross_gram, dtype=np.float64)
        if c.ndim != 2 or c.shape[1] != self.n_train:
            raise DataError(f"Cross Gram matrix must be (n_test, {self.n_train}), got {c.shape}.")
        return c @ self.u

    def predict_gram(self, cross_gram: np.ndarray, alpha: np.ndarray | float) -> np.ndarray:
        """:meth:`predict` from the cross Gram matrix ``(X' - x_mean) Xc^T``, (n_test, n_train)."""
        return self.predict_transformed(self.transform_gram(cross_gram), alpha)

    def predict_transformed(self, projected: np.ndarray, alpha: np.ndarray | float) -> np.ndarray:
        """:meth:`predict` from ``projected = transform(features)``, (n_test, rank)."""
        alpha = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (self._a.shape[1],))
        return projected @ (self._a / (self.s2[:, None] + alpha[None, :])) + self.y_mean

    def coef(self, alpha: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Weights (n_features, n_sites) and intercepts (n_sites,) at one penalty per site."""
        if self._vs is None and self._xc is None:
            raise DataError("This ridge path was built from a Gram matrix and has no feature weights.")
        if self._vs is None:
            self._vs = self._xc.T @ self.u  # V S, (n_features, rank)
        alpha = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (self._a.shape[1],))
        w = self._vs @ (self._a / (self.s2[:, None] + alpha[None, :]))
        return w, self.y_mean - self.x_mean @ w


def _kernel_route(features: np.ndarray, n_train: int, method: str) -> bool:
    """Whether a feature design of ``n_train``-row training sets goes the kernel path (see :class:`RidgePath`)."""
    return features.ndim == 2 and (method == "kernel" or (method == "auto" and features.shape[1] > n_train))


def inner_cv(features: np.ndarray, targets: np.ndarray, alphas: np.ndarray,
             splits: Sequence[tuple[np.ndarray, np.ndarray]], *, method: str = "auto",
             precomputed: bool = False, n_features: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Choose a penalty per site by K-fold cross-validation; one decomposition per fold.

    On the kernel path the Gram matrix of the centred design is computed once and
    re-centred for every fold (O(n^2) per fold instead of O(n^2 p)).

    Parameters
    ----------
    features : ndarray, (n, n_features) or (n, n)
        Training design, or its Gram matrix when ``precomputed``.
    targets : ndarray, (n, n_sites)
    alphas : ndarray, (n_alphas,)
    splits : sequence of (train, test) index arrays
        Test folds must partition ``range(n)``.
    method : {"auto", "svd", "kernel"}
        Ignored when ``precomputed`` (always the kernel path).
    precomputed : bool
        ``features`` is the Gram matrix ``X X^T``; each inner fold re-centres it.
    n_features : int, optional
        Features behind a precomputed Gram matrix (rank tolerance, :meth:`RidgePath.from_gram`).

    Returns
    -------
    mse : ndarray, (n_alphas, n_sites) float64
        Squared error summed over every held-out stimulus, divided by ``n``.
    alpha_index : ndarray, (n_sites,) int64
        Grid position of the least error (first on ties).
    heldout : ndarray, (n, n_sites) float64
        Held-out predictions of every stimulus at its site's chosen penalty.
    """
    x = np.asarray(features)
    y = np.asarray(targets, dtype=np.float64)
    if not precomputed and _kernel_route(x, max(train.size for train, _ in splits), method):
        xc = np.asarray(x, dtype=np.float64)
        xc = xc - xc.mean(axis=0)
        x, precomputed, n_features = xc @ xc.T, True, xc.shape[1]  # re-centred per fold below
    sse = np.zeros((alphas.size, y.shape[1]))
    kept = []
    for train, test in splits:  # a few folds; each vectorised over sites
        if precomputed:
            k, c = recentered_gram(x, train, test)
            path = RidgePath.from_gram(k, y[train], n_features=n_features)
            proj = path.transform_gram(c)
        else:
            path = RidgePath(x[train], y[train], method=method)
            proj = path.transform(x[test])
        for k_alpha, alpha in enumerate(alphas):
            err = path.predict_transformed(proj, alpha) - y[test]
            sse[k_alpha] += np.einsum("ij,ij->j", err, err)
        kept.append((test, proj, path._a, path.s2, path.y_mean))
    mse = sse / y.shape[0]
    idx = np.argmin(mse, axis=0).astype(np.int64)
    chosen = alphas[idx]
    heldout = np.empty_like(y)
    for test, proj, a, s2, y_mean in kept:
        heldout[test] = proj @ (a / (s2[:, None] + chosen[None, :])) + y_mean
    return mse, idx, heldout


@dataclass
class RidgeResult:
    """Outcome of :func:`fit_predict` for one training / test split.

    Attributes
    ----------
    alpha : ndarray, (n_sites,) float64
        Chosen penalty of each site.
    alpha_index : ndarray, (n_sites,) int64
        Its position in the grid.
    mse : ndarray, (n_alphas, n_sites) float64
        Selection criterion (LOO or inner-CV mean squared error) on the training set.
    train_predictions : ndarray, (n_train, n_sites) float64
        Out-of-sample predictions of the training targets at the chosen penalty
        (LOO for ``"gcv"``, inner held-out folds for ``"inner-cv"``); used to
        rank layers without touching the test stimuli.
    test_predictions : ndarray, (n_test, n_sites) float64
        Predictions of the test stimuli by the model fitted on all training stimuli.
    """

    alpha: np.ndarray
    alpha_index: np.ndarray
    mse: np.ndarray
    train_predictions: np.ndarray
    test_predictions: np.ndarray


def fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, *,
                alphas: np.ndarray = DEFAULT_ALPHAS, selection: str = "gcv", inner_splits: int = 5,
                seed: int = 0, labels: np.ndarray | None = None, method: str = "auto",
                precomputed: bool = False) -> RidgeResult:
    """Choose a penalty per site on the training set, then predict the test set.

    Parameters
    ----------
    x_train : ndarray, (n_train, n_features) or (n_train, n_train)
        Training design, or (``precomputed``) the Gram matrix ``Xc Xc^T`` of the
        training features centred by their training means.
    y_train : ndarray, (n_train, n_sites)
    x_test : ndarray, (n_test, n_features) or (n_test, n_train)
        Test design, or (``precomputed``) the cross Gram ``(X_test - mean) Xc^T``.
    alphas : ndarray, (n_alphas,)
        Penalty grid.
    selection : {"gcv", "inner-cv"}
        ``"gcv"``: efficient leave-one-out (exact LOO from one decomposition).
        ``"inner-cv"``: ``inner_splits``-fold CV inside the training set.
    inner_splits : int
        Folds of the inner CV (``"inner-cv"`` only).
    seed : int
        Seed of the inner folds.
    labels : ndarray of str, (n_train,), optional
        Categories for stratified inner folds.
    method : {"auto", "svd", "kernel"}
        Decomposition of a feature design (ignored when ``precomputed``). The kernel path
        computes the training kernel ``Xc Xc^T`` and the test-train kernel once and goes on
        as with ``precomputed`` inputs.
    precomputed : bool
        Inputs are Gram matrices (kernel path).

    Returns
    -------
    RidgeResult
    """
    alphas = check_alphas(alphas)
    y_train = np.asarray(y_train, dtype=np.float64)
    n_features = None
    x_train = np.asarray(x_train)
    if (not precomputed and x_train.ndim == y_train.ndim == np.ndim(x_test) == 2
            and _kernel_route(x_train, x_train.shape[0], method) and np.shape(x_test)[1] == x_train.shape[1]
            and y_train.shape[0] == x_train.shape[0] >= 3):  # else RidgePath reports the bad input
        xf = np.asarray(x_train, dtype=np.float64)
        mean = xf.mean(axis=0)
        xc = xf - mean
        n_features = xc.shape[1]
        x_train, x_test, precomputed = xc @ xc.T, (np.asarray(x_test, dtype=np.float64) - mean) @ xc.T, True
    path = (RidgePath.from_gram(x_train, y_train, n_features=n_features) if precomputed
            else RidgePath(x_train, y_train, method=method))
    if selection == "gcv":
        mse = path.loo_mse(alphas)
        idx = np.argmin(mse, axis=0).astype(np.int64)
        train_pred = path.loo_predictions(alphas[idx])
    elif selection == "inner-cv":
        splits, _ = kfold_splits(y_train.shape[0], n_splits=inner_splits, seed=seed, labels=labels,
                                 name="inner_splits")
        mse, idx, train_pred = inner_cv(x_train, y_train, alphas, splits, method=method, precomputed=precomputed,
                                        n_features=n_features)
    else:
        raise ConfigError(f"Invalid value {selection!r} for alpha_selection; expected one of {SELECTIONS}.")
    test_pred = path.predict_gram(x_test, alphas[idx]) if precomputed else path.predict(x_test, alphas[idx])
    return RidgeResult(alphas[idx], idx, mse, train_pred, test_pred)
