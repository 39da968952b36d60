"""Figures: |C| sorted by cluster (senet.txt Fig. 2) and learning curves (senet.txt Fig. 4).

Uses matplotlib's object-oriented API (``matplotlib.figure.Figure``), never pyplot, so it works headless
and does not touch the user's backend. Every function returns the written path when given ``path``
(PNG, PDF, SVG... by suffix; written atomically), else the ``Figure``.

Command line (a saved SENet model + data)::

    python -m selfexpress.plotting coefficients MODEL.json --input X.npy [--labels y.npy] --out C.png
    python -m selfexpress.plotting curves MODEL.json --out curves.png
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

__all__ = ["plot_coefficients", "plot_coefficient_grid", "plot_learning_curves", "sorted_abs_coef"]


def _save(fig, path):
    if path is None:
        return fig
    from .io import atomic_write_bytes

    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format=(path.suffix[1:] or "png"), dpi=fig.dpi, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def sorted_abs_coef(C, labels, max_points=2000, random_state=0):
    """Dense ``|C|`` with rows and columns grouped by label (stable order inside a cluster).

    ``C`` may be (n, n) or (n, n_dict) with ``labels`` for the rows; for a square ``C`` the columns are
    reordered the same way. When ``n > max_points`` a stratified random subset of rows (and the same
    columns when square) is shown, so a sparse 70k x 70k ``C`` is never densified.
    Returns ``(image, sorted_labels, boundaries)``.
    """
    labels = np.asarray(labels).ravel()
    C = sp.csr_matrix(C) if not sp.issparse(C) else C.tocsr()
    n = C.shape[0]
    if labels.shape[0] != n:
        raise ValueError(f"labels has {labels.shape[0]} entries but C has {n} rows")
    square = C.shape[0] == C.shape[1]
    idx = np.arange(n)
    if n > max_points:
        rng = np.random.default_rng(random_state)
        idx = np.sort(rng.choice(n, size=max_points, replace=False))
    order = idx[np.argsort(labels[idx], kind="stable")]
    sub = C[order]
    sub = sub[:, order] if square else sub
    img = np.abs(sub.toarray())
    lab = labels[order]
    bounds = np.flatnonzero(np.diff(lab)) + 0.5
    return img, lab, bounds


def plot_coefficients(C, labels, path=None, ax=None, title=None, max_points=2000, vmax=None, cmap="viridis",
                      colorbar=True):
    """Image of ``|C|`` with rows/columns sorted by cluster, cluster boundaries drawn (senet.txt Fig. 2).

    ``labels`` are the ground truth (to see subspace preservation) or predicted clusters. ``vmax``: colour
    scale maximum (default: the 99th percentile of the non-zero |c|, so a few large entries do not hide the
    structure). With ``ax`` the image is drawn there and the axes' figure returned (``path`` ignored).
    """
    img, _, bounds = sorted_abs_coef(C, labels, max_points=max_points)
    nz = img[img > 0]
    if vmax is None:
        vmax = float(np.percentile(nz, 99)) if nz.size else 1.0
    own = ax is None
    if own:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(5, 4.4), dpi=120)
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    im = ax.imshow(img, cmap=cmap, vmin=0.0, vmax=vmax, interpolation="nearest", aspect="auto")
    for b in bounds:
        ax.axhline(b, color="w", lw=0.4, alpha=0.6)
        if img.shape[0] == img.shape[1]:
            ax.axvline(b, color="w", lw=0.4, alpha=0.6)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    if colorbar:
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path) if own else fig


def plot_coefficient_grid(panels, path=None, ncols=None, max_points=2000, suptitle=None):
    """Several ``|C|`` images side by side, e.g. train/test rows x iteration columns of senet.txt Fig. 2.

    ``panels``: list of rows, each a list of ``(C, labels, title)`` (or one flat list for a single row).
    """
    from matplotlib.figure import Figure

    if panels and not isinstance(panels[0], list):
        panels = [list(panels)]
    nrows = len(panels)
    ncols = ncols or max(len(r) for r in panels)
    fig = Figure(figsize=(3.2 * ncols, 3.0 * nrows), dpi=120)
    for r, row in enumerate(panels):
        for c, (C, labels, title) in enumerate(row):
            ax = fig.add_subplot(nrows, ncols, r * ncols + c + 1)
            plot_coefficients(C, labels, ax=ax, title=title, max_points=max_points, colorbar=False)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _curve(ax, x, y, label, **kw):
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(y)
    if ok.any():
        ax.plot(x[ok], y[ok], label=label, **kw)
        return True
    return False


def plot_learning_curves(history, path=None, title=None):
    """Learning curves from a trainer's / SENet's ``history_`` or the benchmark harness's
    ``SENetMonitor.learning_curves()`` (``{"train": ..., "eval": ...}``; senet.txt Fig. 4 / Fig. 8).

    Panels: the mini-batch loss (with its ``rec`` and ``reg`` parts when logged); the full-data loss terms
    ``L``, ``L_rec``, ``L_reg`` (train and ``test_`` when evaluated); ACC; SRE (percent) -- against the
    iteration. Panels without data are left out.
    """
    from matplotlib.figure import Figure

    tr = (history or {}).get("train", {})
    ev = (history or {}).get("eval", {})
    panels = []
    if tr.get("iter"):
        panels.append("batch")
    for key in ("L", "L_rec", "L_reg"):
        if key in ev or f"test_{key}" in ev:
            panels.append(key)
    for key in ("acc", "sre"):
        if key in ev or f"test_{key}" in ev:
            panels.append(key)
    if not panels:
        raise ValueError("history has nothing to plot (no 'train' or 'eval' entries)")
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.0 * ncols, 3.0 * nrows), dpi=110)
    names = {"L": "L (eq. 10)", "L_rec": "L_rec (eq. 14)", "L_reg": "L_reg (eq. 15)", "acc": "ACC", "sre": "SRE (%)"}
    for i, key in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        if key == "batch":
            x = tr["iter"]
            _curve(ax, x, tr.get("loss", []), "loss / point")
            _curve(ax, x, tr.get("rec", []), "rec / point", alpha=0.8)
            _curve(ax, x, tr.get("reg", []), "reg / point", alpha=0.8)
            ax.set_yscale("log")
            ax.set_title("mini-batch loss", fontsize=9)
        else:
            x = ev["iter"]
            _curve(ax, x, ev.get(key, []), "train", marker="o", ms=3)
            _curve(ax, x, ev.get(f"test_{key}", []), "test", marker="s", ms=3)
            ax.set_title(names[key], fontsize=9)
            if key.startswith("L"):
                ax.set_yscale("log")
        ax.set_xlabel("iteration", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def main(argv=None):
    """``python -m selfexpress.plotting {coefficients,curves} MODEL ...`` (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m selfexpress.plotting", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("coefficients", help="|C| sorted by cluster for points X under a saved SENet")
    c.add_argument("model", type=Path)
    c.add_argument("--input", type=Path, help="points (.npy/.csv/.txt); default: the model's training points")
    c.add_argument("--labels", type=Path, help="labels to sort by (default: the model's predicted labels)")
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--max-points", type=int, default=2000)
    k = sub.add_parser("curves", help="learning curves stored in a saved SENet")
    k.add_argument("model", type=Path)
    k.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    from .models.senet import SENet

    model = SENet.load(args.model)
    if args.what == "curves":
        out = plot_learning_curves(model.history_, args.out, title=args.model.stem)
    else:
        if args.input is not None:
            from .data import load_array

            X = load_array(args.input)
            C = model.self_expressive_coefficients(X, dictionary=X)
        else:
            X, C = None, model.self_expressive_coefficients()
        if args.labels is not None:
            from .data import load_labels

            labels = load_labels(args.labels)
        else:
            labels = model.dictionary_labels_ if X is None else model.predict(X)
        out = plot_coefficients(C, labels, args.out, max_points=args.max_points, title=args.model.stem)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
