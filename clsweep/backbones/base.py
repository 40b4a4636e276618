"""The contract every continual-learning backbone offers: :class:`CLBackbone`.

A backbone turns one batch of inputs into the feature vector the heads read. It has no classifier
of its own (the heads are separate components), so it reports two things from ``forward``: the
feature, and the hidden feature of every weighted layer, keyed by the layer's '/'-separated module
path. Algorithms that work layer by layer (HAT, AdaHAT, importance measures) rely on those names.

Besides ``forward`` the base offers feature-level access in the style of Mammoth's backbones
(:meth:`CLBackbone.features_at`) and the flat parameter / gradient views that replay-style
methods use (:meth:`CLBackbone.get_params` and friends).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["STAGES", "CLBackbone", "check_stage"]

STAGES: tuple[str, ...] = ("train", "validation", "test")
"""The stages a forward pass can belong to."""

_RETURNT = ("features", "all", "full", "out", "both")


def check_stage(stage: str) -> None:
    """Raise ValueError unless ``stage`` is one of :data:`STAGES`."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {', '.join(STAGES)}; got {stage!r}")


class CLBackbone(nn.Module):
    """Base class of clsweep's backbones.

    Subclasses build their layers, fill :attr:`weighted_layer_names` in forward order and implement
    :meth:`forward`.

    Attributes:
        input_shape: shape of one sample, ``(C, H, W)`` for images.
        output_dim: size of the feature the heads read.
        weighted_layer_names: the layers that hold a weight connecting units, in the order the
            forward pass runs them, as module paths with '/' in place of '.' (``fc/0``,
            ``layer1/0/conv1``). For residual networks the previous name in this list is not
            always the layer that feeds a given layer; see ``HATMaskBackbone.layer_inputs``.
        task_id: the task being trained (1-based), set by :meth:`setup_task_id`; ``None`` before.
    """

    def __init__(self, input_shape: tuple[int, ...], output_dim: int) -> None:
        super().__init__()
        shape = tuple(int(d) for d in input_shape)
        if not shape or any(d < 1 for d in shape):
            raise ValueError(f"input_shape must be a non-empty tuple of positive sizes; got {input_shape!r}")
        self.input_shape: tuple[int, ...] = shape
        self.output_dim: int = int(output_dim)
        self.weighted_layer_names: list[str] = []
        self.task_id: int | None = None

    # ----------------------------------------------------------------------------------------
    # Task and layer bookkeeping
    # ----------------------------------------------------------------------------------------

    def setup_task_id(self, task_id: int) -> None:
        """Record that training on task ``task_id`` (1-based) starts. Call before ``forward``."""
        if int(task_id) < 1:
            raise ValueError(f"task ids are 1-based; got {task_id}")
        self.task_id = int(task_id)

    def get_layer_by_name(self, layer_name: str) -> nn.Module:
        """The submodule at the '/'-separated path ``layer_name`` (e.g. ``layer1/0/conv1``).

        Raises:
            ValueError: no submodule has that path.
        """
        if not layer_name:
            raise ValueError("layer name must not be empty")
        try:
            return self.get_submodule(layer_name.replace("/", "."))
        except AttributeError:
            known = ", ".join(self.weighted_layer_names)
            raise ValueError(
                f"{type(self).__name__} has no layer {layer_name!r}; weighted layers: {known}"
            ) from None

    def preceding_layer_name(self, layer_name: str) -> str | None:
        """The weighted layer just before ``layer_name`` in forward order; ``None`` for the first.

        This is list order only. In residual networks the layer that feeds a convolution is not
        always the previous one; HAT-mask backbones answer that with ``input_layer_names``.

        Raises:
            ValueError: ``layer_name`` is not a weighted layer.
        """
        if layer_name not in self.weighted_layer_names:
            raise ValueError(f"{layer_name!r} is not a weighted layer of {type(self).__name__}")
        index = self.weighted_layer_names.index(layer_name)
        return None if index == 0 else self.weighted_layer_names[index - 1]

    def forward(  # type: ignore[override]
        self, input: Tensor, stage: str, task_id: int | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Compute the feature of ``input`` and the hidden features of every weighted layer.

        Args:
            input: a batch, shape ``(N, *input_shape)``.
            stage: 'train', 'validation' or 'test' (anything else is a ValueError).
            task_id: the task the batch comes from; backbones without task-specific parts ignore it.

        Returns:
            ``(feature, hidden_features)``: the feature has shape ``(N, output_dim)``; the dict maps
            each weighted layer name to that layer's output after its activation.
        """
        raise NotImplementedError

    # ----------------------------------------------------------------------------------------
    # Feature-level access (Mammoth's ``returnt``)
    # ----------------------------------------------------------------------------------------

    def features_at(
        self,
        input: Tensor,
        returnt: str = "features",
        *,
        stage: str = "test",
        task_id: Any = None,
        heads: Callable[[Tensor], Tensor] | None = None,
        **forward_kwargs: Any,
    ) -> Any:
        """Run ``forward`` and return the level of representation asked for.

        A backbone has no classifier, so the logits come from the ``heads`` callable given here
        (for instance ``lambda f: heads(f, task_id)``).

        Args:
            returnt: 'features' returns the feature tensor; 'all' (alias 'full') returns the list of
                hidden features in :attr:`weighted_layer_names` order; 'out' returns
                ``heads(feature)``; 'both' returns ``(heads(feature), feature)``.
            stage, task_id, forward_kwargs: passed to ``forward``.
            heads: required for 'out' and 'both'.

        Raises:
            ValueError: an unknown ``returnt``, or 'out' / 'both' without ``heads``.
        """
        if returnt not in _RETURNT:
            raise ValueError(f"returnt must be one of {', '.join(_RETURNT)}; got {returnt!r}")
        if returnt in ("out", "both") and heads is None:
            raise ValueError(f"returnt={returnt!r} needs logits, and a backbone has none: pass heads=")
        outputs = self(input, stage, task_id, **forward_kwargs)
        feature, hidden = outputs[0], outputs[-1]
        if returnt == "features":
            return feature
        if returnt in ("all", "full"):
            return [hidden[name] for name in self.weighted_layer_names]
        assert heads is not None
        logits = heads(feature)
        return logits if returnt == "out" else (logits, feature)

    def features(self, input: Tensor, **kwargs: Any) -> Tensor:
        """Shorthand for ``features_at(input, 'features', **kwargs)``."""
        return self.features_at(input, "features", **kwargs)

    # ----------------------------------------------------------------------------------------
    # Flat views of parameters and gradients (order of ``self.parameters()``)
    # ----------------------------------------------------------------------------------------

    def num_flat_params(self) -> int:
        """Total number of scalar parameters."""
        return sum(p.numel() for p in self.parameters())

    def get_params(self) -> Tensor:
        """All parameters concatenated into one detached 1-D tensor."""
        return torch.cat([p.detach().reshape(-1) for p in self.parameters()])

    def set_params(self, flat: Tensor) -> None:
        """Overwrite every parameter from a 1-D tensor laid out as :meth:`get_params` returns it.

        Raises:
            ValueError: ``flat`` is not 1-D or its size is not the number of parameters.
        """
        self._check_flat(flat, "set_params")
        offset = 0
        with torch.no_grad():
            for p in self.parameters():
                n = p.numel()
                p.copy_(flat[offset : offset + n].view_as(p))
                offset += n

    def get_grads_list(self) -> list[Tensor]:
        """One gradient tensor per parameter, zeros where a parameter has no gradient yet."""
        return [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in self.parameters()]

    def get_grads(self) -> Tensor:
        """All gradients concatenated into one 1-D tensor (zeros for parameters without one)."""
        return torch.cat([g.reshape(-1) for g in self.get_grads_list()])

    def set_grads(self, flat: Tensor) -> None:
        """Overwrite every parameter's ``.grad`` from a 1-D tensor laid out as :meth:`get_grads`.

        Raises:
            ValueError: ``flat`` is not 1-D or its size is not the number of parameters.
        """
        self._check_flat(flat, "set_grads")
        offset = 0
        for p in self.parameters():
            n = p.numel()
            p.grad = flat[offset : offset + n].detach().view_as(p).clone().to(p.dtype)
            offset += n

    def _check_flat(self, flat: Tensor, what: str) -> None:
        expected = self.num_flat_params()
        if flat.dim() != 1 or flat.numel() != expected:
            raise ValueError(
                f"{what} expects a 1-D tensor of {expected} values; got shape {tuple(flat.shape)}"
            )
