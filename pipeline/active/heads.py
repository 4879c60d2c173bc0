"""Classifier heads on frozen embeddings: L2-regularised logistic regression and a small MLP.

Both heads are binary (positive = the starter's kind), warm-startable (``fit`` continues from the
current weights), weight samples for class imbalance, and optionally standardise features with
pool statistics (``set_feature_stats``) folded into the first layer, so scoring a large pool never
materialises a standardised copy of it:

    z = (x - mu) / sigma,   W z + b = (W / sigma) x + (b - W (mu / sigma)).

Class weights (``class_weight="balanced"``, as in scikit-learn): ``s_c = n / (2 n_c)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch

ClassWeight = Literal["balanced", "none"] | None


def class_weights(y: np.ndarray, mode: ClassWeight | float = "balanced") -> np.ndarray:
    """Per-sample weights for binary ``y`` in {0, 1}.

    ``"balanced"``: ``s_i = n / (K n_{y_i})`` with ``K`` the number of classes present (2 unless
    ``y`` holds one class, then all weights are 1); ``"none"``/None: ones; a float ``r``:
    positives get ``r``, negatives 1.
    """
    y = np.asarray(y)
    if mode is None or mode == "none":
        return np.ones(len(y), dtype=np.float32)
    if mode == "balanced":
        counts = np.bincount(y.astype(np.int64), minlength=2).astype(np.float64)
        present = max(int((counts > 0).sum()), 1)
        per_class = np.where(counts > 0, len(y) / (present * np.maximum(counts, 1)), 0.0)
        return per_class[y.astype(np.int64)].astype(np.float32)
    if isinstance(mode, (int, float)) and not isinstance(mode, bool) and mode > 0:
        return np.where(y == 1, float(mode), 1.0).astype(np.float32)
    raise ValueError(f"class_weight must be 'balanced', 'none' or a positive number, got {mode!r}")


def _check_xy(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"x must be a non-empty (N, D) array, got shape {x.shape}")
    if y.shape != (len(x),):
        raise ValueError(f"y must have shape ({len(x)},), got {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y must hold binary labels 0/1")
    if not np.isfinite(x).all():
        raise ValueError("x contains NaN or inf")
    return x, y.astype(np.float32)


class Head:
    """Common part: feature standardisation, chunked scoring, state for resume."""

    kind = "head"
    convex = False  # True: the fit's optimum does not depend on the starting weights

    def __init__(self, seed: int, class_weight: ClassWeight | float):
        self.seed = int(seed)
        self.class_weight = class_weight
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        self.fitted = False

    def set_feature_stats(self, mean: np.ndarray | None, std: np.ndarray | None) -> None:
        """Standardise inputs with pool statistics (``std`` below 1e-6 is treated as 1)."""
        if mean is None:
            self.mean = self.scale = None
            return
        self.mean = np.asarray(mean, dtype=np.float32)
        std = np.asarray(std, dtype=np.float32)
        self.scale = np.where(std > 1e-6, std, 1.0).astype(np.float32)

    def _standardise(self, x: np.ndarray) -> np.ndarray:
        return x if self.mean is None else (x - self.mean) / self.scale

    def fit(self, x: np.ndarray, y: np.ndarray) -> Head:
        raise NotImplementedError

    def _first_layer(self) -> tuple[np.ndarray, np.ndarray]:
        """(D, H) weights and (H,) bias of the first affine map, acting on raw features."""
        raise NotImplementedError

    def _rest(self, h: np.ndarray) -> np.ndarray:
        """Logits from first-layer pre-activations (N, H)."""
        return h[:, 0]

    def decision_function(self, x: np.ndarray, chunk_rows: int = 262_144) -> np.ndarray:
        """(N,) float32 logits of raw features ``x`` (N, D), in row chunks."""
        if not self.fitted:
            raise RuntimeError("head is not fitted")
        w, b = self._first_layer()
        if self.mean is not None:
            w = w / self.scale[:, None]
            b = b - self.mean @ w
        w = np.ascontiguousarray(w, dtype=np.float32)
        out = np.empty(len(x), dtype=np.float32)
        for s in range(0, len(x), chunk_rows):
            h = x[s : s + chunk_rows] @ w
            h += b
            out[s : s + chunk_rows] = self._rest(h)
        return out

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(N,) probability of the positive class, ``sigmoid(logit)``."""
        z = self.decision_function(x)
        return (0.5 * (1.0 + np.tanh(0.5 * z))).astype(np.float32)  # overflow-free sigmoid

    def state(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError


class LogisticHead(Head):
    """Binary logistic regression fitted by L-BFGS (scipy, analytic gradient), warm-started.

    Minimises the scikit-learn objective (same minimiser, rescaled by ``1 / S``)::

        L(w, b) = (1/S) sum_i s_i log(1 + exp(-t_i (w.z_i + b))) + ||w||^2 / (2 C S),

    with ``t_i = 2 y_i - 1``, sample weights ``s_i`` (class weights), ``S = sum_i s_i``.
    """

    kind = "logistic"
    convex = True

    def __init__(self, *, c: float, max_iter: int, class_weight: ClassWeight | float, tol: float = 1e-6, seed: int = 0):
        super().__init__(seed, class_weight)
        if c <= 0:
            raise ValueError(f"C must be > 0, got {c}")
        self.c, self.max_iter, self.tol = float(c), int(max_iter), float(tol)
        self.coef: np.ndarray | None = None
        self.intercept = 0.0

    def fit(self, x: np.ndarray, y: np.ndarray) -> LogisticHead:
        from scipy.optimize import minimize
        from scipy.special import expit

        x, y = _check_xy(x, y)
        z = np.ascontiguousarray(self._standardise(x), dtype=np.float64)
        s = class_weights(y, self.class_weight).astype(np.float64)
        t = 2.0 * y.astype(np.float64) - 1.0
        total = float(s.sum())
        lam = 1.0 / (2.0 * self.c * total)
        d = x.shape[1]
        warm = self.coef is not None and self.coef.shape == (d,)
        theta0 = np.concatenate([self.coef, [self.intercept]]) if warm else np.zeros(d + 1)

        def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[:d], theta[d]
            margin = t * (z @ w + b)
            loss = float(s @ np.logaddexp(0.0, -margin)) / total + lam * float(w @ w)
            g = -(s * t * expit(-margin)) / total  # d loss / d (w.z_i + b)
            return loss, np.concatenate([z.T @ g + 2.0 * lam * w, [g.sum()]])

        res = minimize(
            loss_and_grad,
            theta0,
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": self.max_iter, "gtol": self.tol, "ftol": 1e-12},
        )
        self.coef, self.intercept = res.x[:d].copy(), float(res.x[d])
        self.n_iter = int(res.nit)
        self.fitted = True
        return self

    def _first_layer(self) -> tuple[np.ndarray, np.ndarray]:
        return self.coef.astype(np.float32)[:, None], np.array([self.intercept], dtype=np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {"coef": self.coef, "intercept": np.array([self.intercept])}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.coef = np.asarray(state["coef"], dtype=np.float64)
        self.intercept = float(np.asarray(state["intercept"]).reshape(-1)[0])
        self.fitted = True


class MLPHead(Head):
    """One hidden ReLU layer, full-batch AdamW on the weighted binary cross-entropy (decoupled weight decay).

    p(x) = sigmoid(v . relu(W z + c) + b),  L = (1/S) sum_i s_i BCE(p_i, y_i)
    """

    kind = "mlp"

    def __init__(
        self,
        *,
        hidden: int,
        epochs: int,
        lr: float,
        weight_decay: float,
        class_weight: ClassWeight | float,
        seed: int = 0,
    ):
        super().__init__(seed, class_weight)
        if hidden < 1 or epochs < 1 or lr <= 0:
            raise ValueError("hidden and epochs must be >= 1 and lr > 0")
        self.hidden, self.epochs, self.lr, self.weight_decay = int(hidden), int(epochs), float(lr), float(weight_decay)
        self.net: torch.nn.Sequential | None = None

    def _build(self, d: int) -> torch.nn.Sequential:
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(self.seed)
        net = torch.nn.Sequential(torch.nn.Linear(d, self.hidden), torch.nn.ReLU(), torch.nn.Linear(self.hidden, 1))
        torch.random.set_rng_state(gen_state)
        return net

    def fit(self, x: np.ndarray, y: np.ndarray) -> MLPHead:
        x, y = _check_xy(x, y)
        if self.net is None or self.net[0].in_features != x.shape[1]:
            self.net = self._build(x.shape[1])
        z = torch.from_numpy(np.ascontiguousarray(self._standardise(x)))
        s = torch.from_numpy(class_weights(y, self.class_weight))
        target = torch.from_numpy(y)
        params = list(self.net.parameters())
        moments = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]
        beta1, beta2, eps = 0.9, 0.999, 1e-8
        self.net.train()
        for step in range(1, self.epochs + 1):
            logits = self.net(z)[:, 0]
            loss = (
                s * torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
            ).sum() / s.sum()
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():  # AdamW (decoupled weight decay), written out: torch.optim imports dynamo (slow)
                for p, g, (m, v) in zip(params, grads, moments):
                    m.mul_(beta1).add_(g, alpha=1 - beta1)
                    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                    p.mul_(1 - self.lr * self.weight_decay)
                    p.addcdiv_(m / (1 - beta1**step), (v / (1 - beta2**step)).sqrt_().add_(eps), value=-self.lr)
        self.net.eval()
        self.fitted = True
        return self

    def _first_layer(self) -> tuple[np.ndarray, np.ndarray]:
        lin = self.net[0]
        return lin.weight.detach().numpy().T, lin.bias.detach().numpy()

    def _rest(self, h: np.ndarray) -> np.ndarray:
        out = self.net[2]
        np.maximum(h, 0, out=h)
        return h @ out.weight.detach().numpy()[0] + float(out.bias.detach()[0])

    def state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().numpy().copy() for k, v in self.net.state_dict().items()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        d = np.asarray(state["0.weight"]).shape[1]
        self.net = self._build(d)
        self.net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
        self.net.eval()
        self.fitted = True


def _logistic(cfg: dict, seed: int) -> Head:
    tol = {"tol": cfg["tol"]} if "tol" in cfg else {}
    return LogisticHead(c=cfg["c"], max_iter=cfg["max_iter"], class_weight=cfg["class_weight"], seed=seed, **tol)


def _mlp(cfg: dict, seed: int) -> Head:
    settings = {k: cfg[k] for k in ("hidden", "epochs", "lr", "weight_decay", "class_weight")}
    return MLPHead(seed=seed, **settings)


HEADS: dict[str, Callable[[dict, int], Head]] = {"logistic": _logistic, "mlp": _mlp}


def build_head(cfg: dict, seed: int = 0) -> Head:
    """``active.head`` node (every key of ``conf/active/default.yaml``'s ``head``; :class:`ActiveConfig` fills
    them) -> head: ``{kind: logistic|mlp, class_weight, c, max_iter, hidden, epochs, lr, weight_decay}``."""
    kind = cfg.get("kind")
    if kind not in HEADS:
        raise ValueError(f"head.kind must be one of {', '.join(HEADS)}, got {kind!r}")
    missing = sorted({"class_weight", "c", "max_iter", "hidden", "epochs", "lr", "weight_decay"} - set(cfg))
    if missing:
        raise ValueError(f"head settings {missing} missing: pass the whole active.head node (ActiveConfig.head)")
    return HEADS[kind](cfg, seed)
