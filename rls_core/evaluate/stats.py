"""The numbers of the tables: image quality (PSNR, SSIM, LR consistency, realism distance)
and the biology (classifying conditions from one handcrafted feature, effect sizes).

Classification follows the paper: an RBF SVM on the single feature is trained on *HR*
features and tested on the features of each method's SR images. To keep the HR row honest
(not a training-set score), crops are split into folds (stratified by condition, all cells
of a crop in one fold); each fold is tested with the SVM trained on the HR features of the
other folds, for HR and for every method alike.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np


# ----------------------------------------------------------------------------- image quality

def psnr_per_crop(sr: np.ndarray, hr: np.ndarray) -> np.ndarray:
    """(N,) PSNR in dB of (N, C, H, W) images in [0, 1] (data range 1)."""
    mse = np.square(sr.astype(np.float64) - hr.astype(np.float64)).reshape(len(sr), -1).mean(1)
    return -10.0 * np.log10(np.maximum(mse, 1e-12))


def ssim_per_crop(sr: np.ndarray, hr: np.ndarray) -> np.ndarray:
    """(N,) SSIM (skimage, data range 1), averaged over channels."""
    from skimage.metrics import structural_similarity

    win = min(7, sr.shape[-1] - (1 - sr.shape[-1] % 2))  # odd window no larger than the crop
    out = np.empty(len(sr))
    for i in range(len(sr)):
        out[i] = np.mean([structural_similarity(hr[i, c], sr[i, c], data_range=1.0, win_size=win)
                          for c in range(sr.shape[1])])
    return out


def realism_distance(reference: np.ndarray, crops: np.ndarray, seed: int = 0) -> float:
    """SWD x 1e3 (rls_core.metrics, mean over pyramid levels) of crops vs real reference crops."""
    from ..metrics import swd, swd_mean

    min_res = 16 if crops.shape[-1] >= 32 else 8
    return 1e3 * swd_mean(swd(reference, crops, seed=seed, min_res=min_res))


# ----------------------------------------------------------------------------- biology

def cohens_d(control: Sequence[float], treated: Sequence[float]) -> float:
    """(mean treated - mean control) / pooled SD (n - 1 weighting); NaN values are dropped;
    NaN when a group has < 2 values or no spread."""
    a = np.asarray(control, float)
    b = np.asarray(treated, float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    pooled = ((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2)
    if not pooled > 0:
        return float("nan")
    return float((b.mean() - a.mean()) / math.sqrt(pooled))


def svm_fit(x: np.ndarray, y: np.ndarray, C: float = 1.0):
    """RBF SVM (scikit-learn SVC, gamma='scale') on one standardised feature; None if one class."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    x = np.asarray(x, float).reshape(-1, 1)
    y = np.asarray(y)
    ok = np.isfinite(x[:, 0])
    if len(np.unique(y[ok])) < 2:
        return None
    return make_pipeline(StandardScaler(), SVC(kernel="rbf", C=C, gamma="scale")).fit(x[ok], y[ok])


def svm_accuracy(train_x: Sequence[float], train_y: Sequence, test_x: Sequence[float], test_y: Sequence
                 ) -> Tuple[float, int]:
    """(accuracy, n tested) of an SVM trained on (train_x, train_y), tested on (test_x, test_y);
    non-finite values are dropped; (NaN, 0) when training has one class or nothing is tested."""
    clf = svm_fit(np.asarray(train_x, float), np.asarray(train_y))
    tx, ty = np.asarray(test_x, float), np.asarray(test_y)
    ok = np.isfinite(tx)
    if clf is None or not ok.any():
        return float("nan"), 0
    pred = clf.predict(tx[ok].reshape(-1, 1))
    return float((pred == ty[ok]).mean()), int(ok.sum())


def crop_folds(conditions: Sequence[str], k: int = 5) -> np.ndarray:
    """Fold of each crop: stratified round-robin by condition, k at most the smallest group."""
    conditions = list(conditions)
    counts = {c: conditions.count(c) for c in set(conditions)}
    k = max(1, min(int(k), min(counts.values())))
    seen: Dict[str, int] = {}
    out = np.empty(len(conditions), int)
    for i, c in enumerate(conditions):
        out[i] = seen.get(c, 0) % k
        seen[c] = seen.get(c, 0) + 1
    return out


def cross_fitted_accuracy(hr_values: np.ndarray, hr_crops: np.ndarray, sr_values: Dict[str, np.ndarray],
                          sr_crops: Dict[str, np.ndarray], crop_conditions: Sequence[str], k: int = 5
                          ) -> Dict[str, Tuple[float, int]]:
    """Accuracy (and n tested) of an HR-trained SVM on HR and on every SR set, fold by fold.

    Values are per cell (or per crop, with `*_crops` = arange) with the crop index of each;
    with one fold (a condition with a single crop) the SVM is trained and tested on all crops.
    """
    conds = np.asarray(crop_conditions)
    folds = crop_folds(conds, k)
    n_folds = int(folds.max()) + 1
    sets = {"HR": (np.asarray(hr_values, float), np.asarray(hr_crops, int))}
    sets.update({k_: (np.asarray(v, float), np.asarray(sr_crops[k_], int)) for k_, v in sr_values.items()})
    correct = {name: 0.0 for name in sets}
    tested = {name: 0 for name in sets}
    hv, hc = sets["HR"]
    for f in range(n_folds):
        train = folds[hc] != f if n_folds > 1 else np.ones(len(hc), bool)
        clf = svm_fit(hv[train], conds[hc[train]])
        if clf is None:
            continue
        for name, (v, c) in sets.items():
            sel = (folds[c] == f) & np.isfinite(v)
            if sel.any():
                pred = clf.predict(v[sel].reshape(-1, 1))
                correct[name] += float((pred == conds[c[sel]]).sum())
                tested[name] += int(sel.sum())
    return {name: ((correct[name] / tested[name]) if tested[name] else float("nan"), tested[name])
            for name in sets}


def median_feature_error(hr_values: np.ndarray, hr_conds: np.ndarray, sr_values: np.ndarray,
                         sr_conds: np.ndarray, order: Sequence[str]) -> float:
    """Mean over conditions of |median SR feature - median HR feature| (NaN if a side is empty)."""
    errs: List[float] = []
    for c in order:
        a = hr_values[(hr_conds == c) & np.isfinite(hr_values)]
        b = sr_values[(sr_conds == c) & np.isfinite(sr_values)]
        if len(a) and len(b):
            errs.append(abs(float(np.median(b)) - float(np.median(a))))
    return float(np.mean(errs)) if len(errs) == len(order) else float("nan")


def finite_mean(x: Sequence[float]) -> float:
    a = np.asarray(x, float)
    a = a[np.isfinite(a)]
    return float(a.mean()) if len(a) else float("nan")


def fmt(v: Optional[float], nd: int = 2, pct: bool = False) -> str:
    """Table cell: '—' for missing, percentages with one decimal."""
    if v is None or not np.isfinite(v):
        return "—"
    return f"{100 * v:.1f}" if pct else f"{v:.{nd}f}"
