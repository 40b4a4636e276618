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
likely class (``predicted``: FACIL's ``max_pred``). Per-sample gradients come from
``torch.func.vmap`` in chunks (no Python loop over samples), in eval mode (no dropout, batch-norm
running statistics), so the estimate is deterministic. Kirkpatrick et al. define F as the
expectation over the model's predictive distribution; both variants here are the usual
approximations (FACIL: src/approach/ewc.py, GMvandeVen/continual-learning).

Only the backbone is penalised, as in FACIL ("we only keep importance weights for the model, but
not for the heads"): in TIL an old task's head takes no gradient from later tasks anyway; in CIL
the old heads stay free. Fishers and anchors travel in ``extra_state`` (one pair per finished
task offline, one pair online).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
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
        names, params = zip(*[(n, p) for n, p in self._penalised() if n in self._sum_f], strict=True)
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params]
        strength = self.params.strength
        torch._foreach_addcmul_(
            grads, [self._sum_f[n] for n in names], [p.detach() for p in params], value=strength
        )
        torch._foreach_add_(grads, [self._sum_fa[n] for n in names], alpha=-strength)

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
        parameter, the label per ``fisher_labels`` (``y`` for ``true``)."""
        named = self._penalised()
        params = {n: p.detach() for n, p in named}
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
        fisher = {n: torch.zeros_like(p) for n, p in params.items()}
        was_training = self.training
        self.eval()
        try:
            for start in range(0, x.shape[0], chunk):
                xb, yb = x[start : start + chunk], y[start : start + chunk]
                if self.params.fisher_labels == "predicted":
                    with torch.no_grad():
                        yb = self(xb, stage="test", task_id=task_id)[0].argmax(1)
                with torch.no_grad():  # torch.func.grad still differentiates; autograd records nothing
                    grads = per_sample(params, xb, yb)
                for n, g in grads.items():
                    fisher[n] += g.detach().pow(2).sum(0)
        finally:
            self.train(was_training)
        return {n: f / max(1, x.shape[0]) for n, f in fisher.items()}
