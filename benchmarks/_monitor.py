"""SENet learning curves against true labels: the benchmark harness's, not the estimator's (issue 24).

``SENet.fit(X)`` takes no labels. Its ``callbacks`` let an observer run during training; :class:`SENetMonitor` is
the observer the benchmarks use (senet.txt Fig. 2 / Fig. 4, the Table 1 ablation). Every ``every`` iterations it
clusters the points the networks train on from their current coefficients and records ACC, SRE, connectivity and
the exact loss terms L, L_rec, L_reg; with an ``eval_set``, the same for the held-out points self-expressed on
themselves (prefixed ``test_``)::

    model = SENet(5, n_iter=500, ...)
    monitor = SENetMonitor(model, X, y, eval_set=(Xte, yte), every=50)
    model.fit(X, callbacks=[monitor])
    monitor.history                 # {"iter": [50, 100, ...], "acc": [...], "sre": [...], ..., "test_acc": [...]}
    plot_learning_curves(monitor.learning_curves(), "curves.png")

The numbers are those ``SENet.fit(X, y, eval_set=...)`` recorded in ``history_["eval"]`` before the evaluation
moved here: the same coefficients (top ``n_nonzero`` per row, the diagonal excluded), graph, spectral clustering
(seeded with the fit's seed) and metrics.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SENetMonitor"]


class SENetMonitor:
    """Trainer callback (``cb(trainer, iteration, logs)``) recording a SENet's learning curves against labels.

    Parameters
    ----------
    model : SENet, the estimator that will be fitted (``model.fit(X, callbacks=[monitor])``).
    X, y : the points ``fit`` is given and their true labels. With ``n_train``, the networks train on
        ``X[model.train_indices_]``; the curves are those points' (labels ``y[train_indices_]``).
    eval_set : (X_test, y_test), optional. Held-out points, evaluated on their own self-expressive coefficients
        (test points against the test set, senet.txt Fig. 2 / 4).
    every : int or None. Evaluate every this many iterations and after the last one; None:
        ``max(1, n_iter // 10)`` (``n_iter`` as the fit resolves it: ``"auto"`` follows the device).

    Attributes
    ----------
    history : dict of lists, ``iter`` and, per evaluation, ``acc``, ``sre``, ``conn``, ``L``, ``L_rec``, ``L_reg``
        (and ``test_*`` with an ``eval_set``).
    """

    def __init__(self, model, X, y, eval_set=None, every=None):
        self.model = model
        self.y = np.asarray(y)
        n = np.shape(X)[0]
        if self.y.ndim != 1 or self.y.shape[0] != n:
            raise ValueError(f"y has {self.y.shape[0] if self.y.ndim else 0} labels but X has {n} samples")
        self.eval_set = None
        if eval_set is not None:
            Xte, yte = eval_set
            yte = np.asarray(yte)
            if yte.ndim != 1 or yte.shape[0] != np.shape(Xte)[0]:
                raise ValueError(f"eval_set: y_test has {yte.size} labels but X_test has {np.shape(Xte)[0]} samples")
            self.eval_set = (Xte, yte)
        if every is None:
            every = max(1, int(model._setting("n_iter")) // 10)  # "auto" resolved as the fit will
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        self.every = int(every)  # read by the Trainer: called every `every` iterations and after the last
        self.history = {}

    def _scores(self, X, y, prefix):
        """Clustering ACC, SRE, connectivity and the exact loss terms of the points ``X`` (None: the training
        points, i.e. the dictionary) on their own coefficients."""
        from selfexpress._validation import fit_seed
        from selfexpress.cluster import spectral_clustering
        from selfexpress.graph import affinity_from_coef
        from selfexpress.metrics import clustering_accuracy, connectivity, subspace_preserving_error

        m = self.model
        C = m.self_expressive_coefficients(X, dictionary=X)
        A = affinity_from_coef(C, method=m._setting("affinity"), n_neighbors=m.n_neighbors)
        labels = spectral_clustering(A, m.n_clusters, n_components=m.n_components, n_init=m.n_init,
                                     random_state=fit_seed(m))
        obj = m.objective(X, X)
        return {f"{prefix}acc": clustering_accuracy(y, labels), f"{prefix}sre": subspace_preserving_error(C, y),
                f"{prefix}conn": connectivity(C, y), **{f"{prefix}{k}": v for k, v in obj.items()}}

    def __call__(self, trainer, iteration, logs):
        module = self.model.module_
        was = module.training
        module.eval()
        try:
            idx = self.model.train_indices_
            out = self._scores(None, self.y if idx is None else self.y[idx], "")
            if self.eval_set is not None:
                out.update(self._scores(*self.eval_set, "test_"))
        finally:
            module.train(was)
        self.history.setdefault("iter", []).append(int(iteration))
        for k, v in out.items():
            self.history.setdefault(k, []).append(float(v))
        return None  # the curves are the harness's: nothing goes into the estimator's history_

    def learning_curves(self):
        """``{"train": the estimator's loss history, "eval": these curves}``, what
        :func:`selfexpress.plotting.plot_learning_curves` draws."""
        return {"train": dict((getattr(self.model, "history_", None) or {}).get("train", {})), "eval": self.history}
