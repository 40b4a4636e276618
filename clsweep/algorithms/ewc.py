"""EWC: Elastic Weight Consolidation (Kirkpatrick et al., "Overcoming catastrophic forgetting in
neural networks", PNAS 2017), and online EWC (Schwarz et al., "Progress & Compress", ICML 2018).

At the end of task t the diagonal Fisher information F_t of the backbone's parameters is estimated
on the task's training data and the weights theta*_t are kept. Later tasks add the quadratic
penalty of Eq. 3 to the classification loss::

    offline (one term per finished task):  sum_t  strength / 2 * sum_i F_t,i (theta_i - theta*_t,i)^2
    online (one running term):             strength / 2 * sum_i F*_i (theta_i - theta*_i)^2,
                                           F* <- gamma * F* + F_t,  theta* <- theta*_t

The Fisher is the mean over samples of the squared per-sample gradient of log p(label | x), the
label being the data's label (``fisher_labels: true``: the empirical Fisher) or the model's most
likely class (``predicted``: FACIL's ``max_pred``). It is computed in eval mode (no dropout,
batch-norm running statistics), so the estimate is deterministic, and without a Python loop over
samples: for ``nn.Linear`` layers the sum of squared per-sample gradients has a closed form in the
layer's inputs and output gradients from one batched backward pass (Goodfellow 2015, see
:meth:`EWC._linear_squared_grads`); any other parameter takes per-sample gradients from
``torch.func.vmap``, in chunks. Kirkpatrick et al. define F as the expectation over the model's
predictive distribution; both variants here are approximations of it that the references offer
(FACIL src/approach/ewc.py `--fi-sampling-type`, default `max_pred`; GMvandeVen/continual-learning
`--fisher-labels`, whose default is the exact expectation). The default `true` is this project's
choice (the empirical Fisher; the exact expectation is not offered yet).

Only the backbone is penalised, as FACIL keeps importance weights "for the model, but not for the
heads": in TIL an old task's head takes no gradient from later tasks anyway; in CIL the old heads
stay trainable and unpenalised here, where FACIL, without exemplars, takes them out of the
optimiser (``_get_optimizer`` in src/approach/incremental_learning.py). Online:
F* <- gamma F* + F_t and the penalty weighs with F* (Mammoth's
``models/ewc_on.py``; GMvandeVen multiplies by gamma once more in the penalty, the same at the
default gamma = 1). Fishers and anchors travel in ``extra_state`` (one pair per finished
task offline, one pair online).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from clsweep.algorithms.base import CLAlgorithm
from clsweep.spec.methods.ewc import EWCParams

__all__ = ["EWC"]

_FLOATS_PER_CHUNK = 2**24
"""Budget of per-sample gradient entries held at once (64 MiB in float32): sets the chunk size."""


class EWC(CLAlgorithm):
    """Finetuning plus the EWC penalty on the backbone's parameters."""

    params: EWCParams

    def __init__(self, backbone: Any, heads: Any, *, params: EWCParams) -> None:
        super().__init__(backbone, heads, params=params)
        self.fishers: list[dict[str, Tensor]] = []
        """One diagonal Fisher per finished task (offline), or the single running one (online)."""
        self.anchors: list[dict[str, Tensor]] = []
        """The backbone's weights at the end of the task of the Fisher at the same index."""
        self._data: Any = None
        self._sum_f: dict[str, Tensor] = {}
        """Sum over the stored pairs of F (per parameter): the penalty's gradient is
        strength * (sum F * theta - sum F * anchor), two fused updates per step."""
        self._sum_fa: dict[str, Tensor] = {}
        self._step_terms: tuple[list[Tensor], list[Tensor], list[Tensor]] | None = None
        """(penalised parameters, their sum F, their sum F * anchor), built once per aggregation."""

    # ---- hooks ------------------------------------------------------------------------------
    def on_task_data(self, task_id: int, data: Any) -> None:
        self._data = data

    def on_task_start(self, task_id: int) -> None:
        device = next(self.backbone.parameters()).device  # tensors restored from a checkpoint are on the CPU
        self.fishers = [{n: f.to(device) for n, f in d.items()} for d in self.fishers]
        self.anchors = [{n: a.to(device) for n, a in d.items()} for d in self.anchors]
        self._aggregate()

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        """Add the penalty's gradient, strength * sum_t F_t (theta - anchor_t), to the backbone's
        gradients in two fused updates (the same gradient autograd would give the penalty term,
        without building it into the graph at every step). The training loss the loop reports is
        therefore the classification loss; :meth:`penalty` gives the penalty's value."""
        if not self._sum_f:
            return
        if self._step_terms is None:
            named = [(n, p) for n, p in self._penalised() if n in self._sum_f]
            self._step_terms = (
                [p for _, p in named],
                [self._sum_f[n] for n, _ in named],
                [self._sum_fa[n] for n, _ in named],
            )
        params, sum_f, sum_fa = self._step_terms
        grads: list[Tensor] = []
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        strength = self.params.strength
        with torch.no_grad():  # the parameters enter as values: no graph, no detached views
            torch._foreach_addcmul_(grads, sum_f, params, value=strength)
            torch._foreach_add_(grads, sum_fa, alpha=-strength)

    def on_task_end(self, task_id: int) -> None:
        data, self._data = self._data, None
        x, y = data.train_x, data.train_y
        k = self.params.fisher_samples
        if k is not None and k < x.shape[0]:  # a random subset, drawn from the loop's seeded RNG
            keep = torch.randperm(x.shape[0], device=x.device)[:k]
            x, y = x[keep], y[keep]
        fisher = self.fisher_diagonal(x, y, task_id)
        anchor = {n: p.detach().clone() for n, p in self._penalised()}
        if self.params.online and self.fishers:
            old = self.fishers[0]
            fisher = {n: f + self.params.gamma * old[n] if n in old else f for n, f in fisher.items()}
            self.fishers, self.anchors = [fisher], [anchor]
        else:
            self.fishers.append(fisher)
            self.anchors.append(anchor)
        self._aggregate()

    def _aggregate(self) -> None:
        self._sum_f, self._sum_fa = {}, {}
        self._step_terms = None
        for fisher, anchor in zip(self.fishers, self.anchors, strict=True):
            for n, f in fisher.items():
                self._sum_f[n] = self._sum_f[n] + f if n in self._sum_f else f.clone()
                fa = f * anchor[n]
                self._sum_fa[n] = self._sum_fa[n] + fa if n in self._sum_fa else fa

    def extra_state(self) -> dict[str, Any]:
        return {"fishers": self.fishers, "anchors": self.anchors}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.fishers, self.anchors = list(state["fishers"]), list(state["anchors"])
        self._aggregate()

    # ---- the rule -----------------------------------------------------------------------------
    def _penalised(self) -> list[tuple[str, Tensor]]:
        return [(n, p) for n, p in self.backbone.named_parameters() if p.requires_grad]

    def validation_loss(self, x: Tensor, y: Tensor, task_id: int) -> Tensor:
        """CE + the penalty: the criterion joansj/hat (src/approaches/ewc.py) and FACIL
        (src/approach/ewc.py) evaluate on validation data."""
        return super().validation_loss(x, y, task_id) + self.penalty()

    def penalty(self) -> Tensor:
        """strength / 2 * sum over stored (Fisher, anchor) pairs of sum_i F_i (theta_i - anchor_i)^2."""
        params = dict(self._penalised())
        total = torch.zeros((), device=next(self.backbone.parameters()).device)
        for fisher, anchor in zip(self.fishers, self.anchors, strict=True):
            for n, f in fisher.items():
                if n in params:  # a parameter created after that task (a per-task layer) is free
                    total = total + (f * (params[n] - anchor[n]).pow(2)).sum()
        return self.params.strength / 2 * total

    def fisher_diagonal(self, x: Tensor, y: Tensor, task_id: int) -> dict[str, Tensor]:
        """Mean over the samples of the squared gradient of log p(label | x) for each backbone
        parameter, the label per ``fisher_labels`` (``y`` for ``true``).

        The parameters of ``nn.Linear`` layers come in closed form from one batched forward and
        backward (:meth:`_linear_squared_grads`); any other parameter (batch norm, convolutions)
        from per-sample gradients by ``torch.func.vmap`` (:meth:`_per_sample_squared_grads`).
        Both give the same numbers as one backward pass per sample (tests/core/test_ewc.py)."""
        fisher = {n: torch.zeros_like(p) for n, p in self._penalised()}
        rows = self.train_config.eval_batch_size
        was_training = self.training
        self.eval()
        try:
            for start in range(0, x.shape[0], rows):
                xb, yb = x[start : start + rows], y[start : start + rows]
                if self.params.fisher_labels == "predicted":
                    with torch.no_grad():
                        yb = self(xb, stage="test", task_id=task_id)[0].argmax(1)
                sums = self._linear_squared_grads(xb, yb, task_id)
                rest = [n for n in fisher if n not in sums]
                if rest:
                    sums.update(self._per_sample_squared_grads(xb, yb, task_id, rest))
                for n, s in sums.items():
                    fisher[n] += s
        finally:
            self.train(was_training)
        return {n: f / max(1, x.shape[0]) for n, f in fisher.items()}

    def _log_likelihood(self, x: Tensor, y: Tensor, task_id: int) -> Tensor:
        """sum_n log p(y_n | x_n) through backbone and heads (test stage)."""
        feature, _ = self.backbone(x, stage="test", task_id=task_id)
        return torch.log_softmax(self.heads(feature, task_id), dim=-1).gather(1, y.view(-1, 1)).sum()

    def _linear_squared_grads(self, x: Tensor, y: Tensor, task_id: int) -> dict[str, Tensor]:
        """sum_n g_n^2 for the parameters of the backbone's ``nn.Linear`` layers, without per-sample
        gradients (Goodfellow 2015, "Efficient Per-Example Gradient Computations", arXiv:1510.01799):
        for ``z = a W^T + b`` on a batch of rows, sample n's gradient is ``delta_n a_n^T`` for W and
        ``delta_n`` for b, with ``delta_n = d log p(y_n | x_n) / d z_n``, so the sums of squares are
        ``(delta^2)^T (a^2)`` and ``sum_n delta_n^2``. One forward and one backward of
        sum_n log p(y_n | x_n) give every ``delta_n``: in eval mode the samples of a batch do not
        interact (no dropout, batch norm on running statistics).

        A layer counts only if it ran exactly once on a 2-D input and its parameters belong to no
        other module, and if the batch gradient autograd gives its parameters equals
        ``delta^T a`` (a weight also used outside the layer's forward would differ); the
        parameters of the other layers are left to the caller (absent from the result)."""
        names = {id(p): n for n, p in self._penalised()}
        owners: dict[int, int] = {}
        for module in self.backbone.modules():
            for owned_param in module.parameters(recurse=False):
                owners[id(owned_param)] = owners.get(id(owned_param), 0) + 1
        records: dict[nn.Linear, list[tuple[Tensor, Tensor]]] = {
            m: [] for m in self.backbone.modules() if isinstance(m, nn.Linear) and type(m) is nn.Linear
        }

        def record(module: Any, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
            records[module].append((inputs[0], output))
            return output.clone()  # an in-place op downstream (ReLU(inplace=True)) keeps `output` intact

        handles = [m.register_forward_hook(record) for m in records]
        try:
            with torch.enable_grad():
                log_likelihood = self._log_likelihood(x, y, task_id)
        finally:
            for handle in handles:
                handle.remove()
        layers: list[tuple[Tensor, Tensor, list[tuple[str, Tensor]]]] = []  # (a, z, [(kind, param)])
        for module, calls in records.items():
            owned = [
                (kind, p)
                for kind, p in (("weight", module.weight), ("bias", module.bias))
                if p is not None and id(p) in names and owners[id(p)] == 1
            ]
            if len(calls) == 1 and calls[0][0].dim() == 2 and calls[0][1].requires_grad and owned:
                layers.append((calls[0][0].detach(), calls[0][1], owned))
        if not layers or not log_likelihood.requires_grad:
            return {}
        params = [p for _, _, owned in layers for _, p in owned]
        grads = torch.autograd.grad(log_likelihood, [z for _, z, _ in layers] + params, allow_unused=True)
        batch_grads = iter(grads[len(layers) :])
        sums: dict[str, Tensor] = {}
        for (a, z, owned), delta in zip(layers, grads[: len(layers)], strict=True):
            d = torch.zeros_like(z) if delta is None else delta.detach()
            for kind, p in owned:
                got = next(batch_grads)
                total = d.t() @ a if kind == "weight" else d.sum(0)
                batch_grad = torch.zeros_like(p) if got is None else got
                if torch.allclose(batch_grad, total, rtol=1e-4, atol=1e-6 * float(total.abs().max())):
                    sums[names[id(p)]] = (
                        d.t().square() @ a.square() if kind == "weight" else d.square().sum(0)
                    )
        return sums

    def _per_sample_squared_grads(
        self, x: Tensor, y: Tensor, task_id: int, names: list[str]
    ) -> dict[str, Tensor]:
        """sum_n g_n^2 for the backbone parameters ``names``, from per-sample gradients
        (``torch.func.vmap`` over ``grad``, in chunks; the other parameters held fixed)."""
        params = {n: p.detach() for n, p in self._penalised() if n in names}
        buffers = dict(self.backbone.named_buffers())
        heads = self.heads

        def log_likelihood(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
            feature, _ = functional_call(
                self.backbone, (p, buffers), (xi.unsqueeze(0),), {"stage": "test", "task_id": task_id}
            )
            log_probs = torch.log_softmax(heads(feature, task_id), dim=-1)
            return log_probs.gather(1, yi.view(1, 1)).sum()

        per_sample = vmap(grad(log_likelihood), in_dims=(None, 0, 0))
        chunk = max(1, _FLOATS_PER_CHUNK // max(1, sum(p.numel() for p in params.values())))
        sums = {n: torch.zeros_like(p) for n, p in params.items()}
        for start in range(0, x.shape[0], chunk):
            with torch.no_grad():  # torch.func.grad still differentiates; autograd records nothing
                grads = per_sample(params, x[start : start + chunk], y[start : start + chunk])
            for n, g in grads.items():
                sums[n] += g.detach().pow(2).sum(0)
        return sums
