"""HAT-mask machinery: :class:`HATMaskBackbone`, the base of backbones for HAT and AdaHAT.

HAT (Serra et al., ICML 2018) multiplies the output units of every weighted layer by a gate
``sigmoid(s * e)``, where ``e`` is a learned task embedding with one value per unit (per channel
for convolutions). This module keeps:

* the embedding (one set, re-initialised at each task start; old tasks live on as stored masks),
* the mask of every finished task, used at test time: binary ``(e > 0)`` by default, or soft
  ``sigmoid(s_max * e)`` as the HAT authors' code stores it (``store_task_mask(soft_scale=...)``),
* the cumulative mask (element-wise max over stored masks, HAT Eq. 2's ``a^{<t}``) and the
  summative mask (element-wise sum, AdaHAT's importance), both over the stored (binary or soft) masks,
* the map from unit-wise to parameter-wise measures that HAT's gradient conditioning and
  AdaHAT's adjustment need, with an explicit description of which units feed each layer
  (:class:`LayerInput`), so residual networks are handled correctly.

Everything above is a parameter or a buffer, so ``state_dict()`` saves it and ``load_state_dict``
restores it into a freshly built backbone, whatever the number of stored tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from clsweep.backbones.base import CLBackbone, check_stage
from clsweep.backbones.mask_store import StoredTaskMasks, UnitBuffers
from clsweep.spec.methods.hat import AGGREGATIONS, INIT_MODES

__all__ = ["AGGREGATIONS", "INIT_MODES", "HATMaskBackbone", "LayerInput", "apply_gate"]


@dataclass(frozen=True)
class LayerInput:
    """Which units a weighted layer reads, for turning unit measures into parameter measures.

    Attributes:
        sources: the weighted layers whose gated outputs make up this layer's input. Empty means
            the network input (not gated). With several sources the input unit ``j`` is active
            where any source's unit ``j`` is: a residual sum ``relu(a + b)`` is zero only where
            both paths are zero, so the input measure is the element-wise **max** of the sources.
        repeat: each source unit appears this many times in a row in the input, as when a
            ``(C, H, W)`` convolution output is flattened into a linear layer (``H * W``).
    """

    sources: tuple[str, ...] = ()
    repeat: int = 1


def apply_gate(x: Tensor, mask: Tensor) -> Tensor:
    """Multiply the units (dim 1) of ``x`` by ``mask``: shape ``(units,)`` for the whole batch,
    or ``(N, units)`` for one mask per sample. Works for ``(N, units)`` and ``(N, C, H, W)``."""
    tail = (1,) * (x.dim() - 2)
    if mask.dim() == 1:
        return x * mask.view(1, -1, *tail)
    return x * mask.view(mask.shape[0], -1, *tail)


class HATMaskBackbone(CLBackbone):
    """Base of backbones whose weighted layers are gated by HAT task masks.

    Subclasses build their layers, then call :meth:`register_hat_layers` with a
    :class:`LayerInput` per weighted layer (in forward order), and implement
    :meth:`masked_forward`, which multiplies each weighted layer's output units by its mask
    (:func:`apply_gate`) so that the gated output is what the following layers read.

    Task ids are 1-based. Batch indices for annealing are 1-based too (``b = 1..B``): pass
    Lightning's ``batch_idx + 1``.
    """

    task_specific_modules: bool = False
    """True when some modules other than the masks differ per task (e.g. per-task batch norm):
    then a test batch with mixed task ids is run task by task."""

    def __init__(self, input_shape: tuple[int, ...], output_dim: int, *, gate: str) -> None:
        super().__init__(input_shape, output_dim)
        if gate != "sigmoid":
            raise ValueError(f"gate {gate!r} is not supported: HAT's gate is the sigmoid")
        self.gate = gate
        self.layer_inputs: dict[str, LayerInput] = {}
        self.mask_units: dict[str, int] = {}

    def register_hat_layers(self, layer_inputs: dict[str, LayerInput]) -> None:
        """Declare the gated layers (dict order = forward order) and create embeddings and stores.

        Raises:
            ValueError: a layer has no ``weight``, a source is unknown or comes later, or the
                sources' units times ``repeat`` do not match the layer's input size.
        """
        units: dict[str, int] = {}
        for name, spec in layer_inputs.items():
            weight = getattr(self.get_layer_by_name(name), "weight", None)
            if not isinstance(weight, Tensor):
                raise ValueError(f"layer {name!r} has no weight to gate")
            for source in spec.sources:
                if source not in units:
                    raise ValueError(f"layer {name!r} reads {source!r}, which is not an earlier gated layer")
                if units[source] * spec.repeat != weight.shape[1]:
                    raise ValueError(
                        f"layer {name!r} has {weight.shape[1]} inputs but source {source!r} gives "
                        f"{units[source]} units x {spec.repeat}"
                    )
            units[name] = int(weight.shape[0])
        self.weighted_layer_names = list(layer_inputs)
        self.layer_inputs = dict(layer_inputs)
        self.mask_units = units
        self.task_embedding = nn.ParameterDict({n: nn.Parameter(torch.empty(u)) for n, u in units.items()})
        self.task_mask_store = StoredTaskMasks(units)
        self.cumulative_store = UnitBuffers(units)
        self.summative_store = UnitBuffers(units)
        self.initialise_task_embedding("N01")

    def masked_forward(
        self, input: Tensor, mask: dict[str, Tensor], task_id: int | None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Subclass hook: the forward pass with the given masks; returns (feature, hidden)."""
        raise NotImplementedError

    # ---- Task embedding and gates -----------------------------------------------------------------
    def embedding(self, layer_name: str) -> nn.Parameter:
        """The task embedding of ``layer_name``, shape ``(units,)``."""
        if layer_name not in self.mask_units:
            raise ValueError(f"{layer_name!r} is not a gated layer of {type(self).__name__}")
        return self.task_embedding[layer_name]  # type: ignore[return-value]

    def embedding_parameters(self) -> list[nn.Parameter]:
        """The task embeddings of all gated layers, in forward order."""
        return [self.embedding(n) for n in self.weighted_layer_names]

    def initialise_task_embedding(self, mode: str) -> None:
        """Re-draw the embedding in place (optimisers keep their references) at a task start.

        Modes: 'N01' N(0, 1) (HAT paper); 'U-11' U(-1, 1); 'U01' U(0, 1), every unit starts open;
        'U-10' U(-1, 0), every unit starts closed; 'last' keeps the embedding the previous task
        ended with. Before any task mask is stored, 'last' has nothing to keep and draws N(0, 1).
        """
        if mode not in INIT_MODES:
            raise ValueError(f"init mode must be one of {', '.join(INIT_MODES)}; got {mode!r}")
        if mode == "last" and self.stored_task_ids:
            return
        with torch.no_grad():
            for e in self.task_embedding.values():
                if mode in ("N01", "last"):
                    e.normal_(0.0, 1.0)
                elif mode == "U-11":
                    e.uniform_(-1.0, 1.0)
                elif mode == "U01":
                    e.uniform_(0.0, 1.0)
                else:
                    e.uniform_(-1.0, 0.0)

    @staticmethod
    def anneal_scalar(s_max: float, batch_idx: int, num_batches: int) -> float:
        """HAT Eq. 3: ``s = 1/s_max + (s_max - 1/s_max)(b - 1)/(B - 1)`` for b = batch_idx in 1..B.

        ``b = 1`` gives ``1/s_max``, ``b = B`` gives ``s_max``; ``B = 1`` gives ``s_max``.

        Raises:
            ValueError: ``s_max <= 0``, ``num_batches < 1`` or ``batch_idx`` outside 1..B (a
                0-based index would make ``s`` negative on the first batch).
        """
        if s_max <= 0:
            raise ValueError(f"s_max must be > 0; got {s_max}")
        if num_batches < 1:
            raise ValueError(f"num_batches must be >= 1; got {num_batches}")
        if not 1 <= batch_idx <= num_batches:
            raise ValueError(f"batch_idx is 1-based and must lie in 1..{num_batches}; got {batch_idx}")
        if num_batches == 1:
            return float(s_max)
        return 1.0 / s_max + (s_max - 1.0 / s_max) * (batch_idx - 1) / (num_batches - 1)

    def get_mask(
        self,
        stage: str,
        *,
        s_max: float | None = None,
        batch_idx: int | None = None,
        num_batches: int | None = None,
        task_id: int | Tensor | None = None,
    ) -> dict[str, Tensor]:
        """The mask per gated layer for a stage.

        * 'train': ``sigmoid(s * e)`` with ``s = anneal_scalar(s_max, batch_idx, num_batches)``;
          differentiable in ``e``.
        * 'validation': ``sigmoid(s_max * e)``.
        * 'test': the stored mask of ``task_id``; shape ``(units,)`` for an int id, or
          ``(N, units)`` for a 1-D integer tensor of per-sample task ids.

        Raises:
            ValueError: a missing argument for the stage, or a task whose mask is not stored.
        """
        check_stage(stage)
        if stage == "train":
            if s_max is None or batch_idx is None or num_batches is None:
                raise ValueError("the train-stage mask needs s_max, batch_idx (1-based) and num_batches")
            s = self.anneal_scalar(s_max, batch_idx, num_batches)
            return {n: torch.sigmoid(s * e) for n, e in self.task_embedding.items()}
        if stage == "validation":
            if s_max is None or s_max <= 0:
                raise ValueError(f"the validation-stage mask needs s_max > 0; got {s_max}")
            return {n: torch.sigmoid(s_max * e) for n, e in self.task_embedding.items()}
        if task_id is None:
            raise ValueError("the test-stage mask needs task_id (an int or a 1-D tensor of task ids)")
        if isinstance(task_id, Tensor):
            return self._per_sample_masks(task_id)
        return self.get_task_mask(int(task_id))

    def _per_sample_masks(self, task_ids: Tensor) -> dict[str, Tensor]:
        if task_ids.dim() != 1:
            raise ValueError(f"per-sample task ids must be a 1-D tensor; got shape {tuple(task_ids.shape)}")
        stored = self.task_mask_store.task_ids.to(task_ids.device)
        match = task_ids.long().unsqueeze(1) == stored.unsqueeze(0)
        missing = ~match.any(dim=1)
        if bool(missing.any()):
            unknown = sorted({int(t) for t in task_ids[missing].tolist()})
            raise ValueError(f"no stored mask for task(s) {unknown}; stored: {self.stored_task_ids}")
        rows = match.float().argmax(dim=1).to(self.task_mask_store.task_ids.device)
        return {n: self.task_mask_store.rows(n)[rows] for n in self.weighted_layer_names}

    # ---- Forward ----------------------------------------------------------------------------------
    def forward(  # type: ignore[override]
        self,
        input: Tensor,
        stage: str,
        task_id: int | Tensor | None = None,
        *,
        s_max: float | None = None,
        batch_idx: int | None = None,
        num_batches: int | None = None,
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """Forward pass with the stage's mask (see :meth:`get_mask`).

        ``task_id`` defaults to :attr:`task_id` in train and validation; in test it is required
        and may be a 1-D tensor of per-sample ids. Returns ``(feature, mask, hidden_features)``;
        hidden features are the gated outputs, after activation.
        """
        check_stage(stage)
        if stage != "test":
            if isinstance(task_id, Tensor):
                raise ValueError("per-sample task ids are only supported in the test stage")
            task_id = self.task_id if task_id is None else task_id
        mask = self.get_mask(
            stage, s_max=s_max, batch_idx=batch_idx, num_batches=num_batches, task_id=task_id
        )
        if isinstance(task_id, Tensor):
            if task_id.shape[0] != input.shape[0]:
                raise ValueError(f"{task_id.shape[0]} task ids for a batch of {input.shape[0]}")
            if self.task_specific_modules:
                feature, hidden = self._forward_by_task(input, task_id)
                return feature, mask, hidden
            feature, hidden = self.masked_forward(input, mask, None)
            return feature, mask, hidden
        feature, hidden = self.masked_forward(input, mask, None if task_id is None else int(task_id))
        return feature, mask, hidden

    def _forward_by_task(self, input: Tensor, task_ids: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        feature: Tensor | None = None
        hidden: dict[str, Tensor] = {}
        for t in task_ids.unique().tolist():
            index = (task_ids == t).nonzero().squeeze(1).to(input.device)
            f, h = self.masked_forward(input[index], self.get_task_mask(int(t)), int(t))
            if feature is None:
                feature = f.new_empty((input.shape[0], *f.shape[1:]))
            feature[index] = f
            for name, value in h.items():
                if name not in hidden:
                    hidden[name] = value.new_empty((input.shape[0], *value.shape[1:]))
                hidden[name][index] = value
        assert feature is not None
        return feature, hidden

    # ---- Stored, cumulative and summative masks ---------------------------------------------------
    def store_task_mask(self, task_id: int, *, soft_scale: float | None = None) -> dict[str, Tensor]:
        """Store the current embedding's mask as task ``task_id``'s (replacing one stored before),
        refresh the cumulative (max) and summative (sum) masks over the stored tasks, return it.
        Binary ``(e > 0)`` if ``soft_scale`` is None, else ``sigmoid(soft_scale * e)`` (HAT's code)."""
        if soft_scale is None:
            mask = {n: (e.detach() > 0).to(e.dtype) for n, e in self.task_embedding.items()}
        else:
            mask = {n: torch.sigmoid(soft_scale * e.detach()) for n, e in self.task_embedding.items()}
        self.task_mask_store.put(int(task_id), mask)
        for name in self.weighted_layer_names:
            rows = self.task_mask_store.rows(name)
            self.cumulative_store.get_buffer(name).copy_(rows.max(dim=0).values)
            self.summative_store.get_buffer(name).copy_(rows.sum(dim=0))
        return {n: b.clone() for n, b in mask.items()}

    @property
    def stored_task_ids(self) -> list[int]:
        """The tasks whose mask is stored, in storing order."""
        return self.task_mask_store.ids()

    def get_task_mask(self, task_id: int) -> dict[str, Tensor]:
        """A copy of the stored mask of ``task_id``; ValueError if none is stored."""
        ids = self.stored_task_ids
        if task_id not in ids:
            raise ValueError(f"no stored mask for task {task_id}; stored: {ids}")
        row = ids.index(task_id)
        return {n: self.task_mask_store.rows(n)[row].clone() for n in self.weighted_layer_names}

    def get_cumulative_mask(self) -> dict[str, Tensor]:
        """Element-wise max over the stored task masks (zeros before any task); a copy."""
        return self.cumulative_store.as_dict()

    def get_summative_mask(self) -> dict[str, Tensor]:
        """Element-wise sum over the stored task masks (zeros before any task); a copy."""
        return self.summative_store.as_dict()

    cumulative_mask = property(get_cumulative_mask)
    summative_mask = property(get_summative_mask)

    def summative_input_measure(self, layer_name: str) -> Tensor | None:
        """Summative mask of the units ``layer_name`` reads (``None``: the network input): per task the
        max over the sources (a residual-sum unit is used if any path is), summed over tasks; a max
        of per-path counts would count 1 for a unit two tasks reach through different paths."""
        sources = self.input_layer_names(layer_name)
        if not sources:
            return None
        per_task = torch.stack([self.task_mask_store.rows(s) for s in sources]).amax(dim=0)
        return self._repeated(layer_name, per_task.sum(dim=0))

    def _repeated(self, layer_name: str, measure: Tensor) -> Tensor:
        repeat = self.layer_inputs[layer_name].repeat
        return measure.repeat_interleave(repeat) if repeat > 1 else measure

    # ---- Unit-wise -> parameter-wise measures -----------------------------------------------------
    def input_layer_names(self, layer_name: str) -> tuple[str, ...]:
        """The gated layers whose outputs feed ``layer_name`` (empty for the network input)."""
        if layer_name not in self.layer_inputs:
            raise ValueError(f"{layer_name!r} is not a gated layer of {type(self).__name__}")
        return self.layer_inputs[layer_name].sources

    def _unit_measure(self, unit_wise_measure: dict[str, Tensor], layer_name: str) -> Tensor:
        if layer_name not in unit_wise_measure:
            raise ValueError(f"the unit-wise measure has no entry for layer {layer_name!r}")
        measure, units = unit_wise_measure[layer_name], self.mask_units[layer_name]
        if measure.shape != (units,):
            raise ValueError(
                f"measure of {layer_name!r} has shape {tuple(measure.shape)}; expected ({units},)"
            )
        return measure

    def input_unit_measure(self, unit_wise_measure: dict[str, Tensor], layer_name: str) -> Tensor | None:
        """The measure of the units ``layer_name`` reads (length = its input size), or ``None``
        when it reads the network input: the max over its sources, repeated as declared."""
        sources = self.input_layer_names(layer_name)
        if not sources:
            return None
        measure = self._unit_measure(unit_wise_measure, sources[0])
        for source in sources[1:]:
            measure = torch.maximum(measure, self._unit_measure(unit_wise_measure, source))
        return self._repeated(layer_name, measure)

    def get_layer_measure_parameter_wise(
        self,
        unit_wise_measure: dict[str, Tensor],
        layer_name: str,
        aggregation: str,
        *,
        input_measure: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Spread a unit-wise measure over the parameters of ``layer_name``.

        The weight entry ``[i, j, ...]`` gets ``agg(m_layer[i], m_input[j])`` with ``agg`` 'min' or
        'max', where ``m_input`` is ``input_measure`` if given (e.g. :meth:`summative_input_measure`),
        else :meth:`input_unit_measure`. A layer reading the network input and the bias use only
        ``m_layer[i]``.

        Returns:
            ``(weight_measure, bias_measure)``: new tensors shaped like the layer's weight and bias;
            ``bias_measure`` is ``None`` for a layer without bias.
        """
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}; got {aggregation!r}")
        if layer_name not in self.layer_inputs:
            raise ValueError(f"{layer_name!r} is not a gated layer of {type(self).__name__}")
        own = self._unit_measure(unit_wise_measure, layer_name)
        layer = self.get_layer_by_name(layer_name)
        weight: Tensor = layer.weight  # type: ignore[assignment]
        tail = (1,) * (weight.dim() - 2)
        measure = own.view(-1, 1, *tail)
        inputs = self.input_unit_measure(unit_wise_measure, layer_name)
        inputs = inputs if input_measure is None else input_measure
        if inputs is not None:
            combine = torch.minimum if aggregation == "min" else torch.maximum
            measure = combine(measure, inputs.view(1, -1, *tail))
        weight_measure = measure.expand(weight.shape).clone(memory_format=torch.contiguous_format)
        bias = getattr(layer, "bias", None)
        return weight_measure, (None if bias is None else own.clone())

    def parameter_measures(
        self, unit_wise_measure: dict[str, Tensor], aggregation: str
    ) -> dict[str, tuple[Tensor, Tensor | None]]:
        """:meth:`get_layer_measure_parameter_wise` for every gated layer, keyed by layer name."""
        return {
            name: self.get_layer_measure_parameter_wise(unit_wise_measure, name, aggregation)
            for name in self.weighted_layer_names
        }
