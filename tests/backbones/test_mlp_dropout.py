"""`input_dropout` of the MLP families: on in train mode, off in eval mode, mask after dropout."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clsweep import registry
from clsweep.backbones.mlp import MLP, HATMaskMLP

SHAPE = (1, 4, 4)


def _build(name: str, **params: object) -> MLP | HATMaskMLP:
    model = registry.get("backbone", name).params(hidden_dims=[12, 10], **params)
    cls = MLP if name == "mlp" else HATMaskMLP
    return cls(SHAPE, params=model)  # type: ignore[arg-type]


def _features(backbone: MLP | HATMaskMLP, x: torch.Tensor) -> torch.Tensor:
    if isinstance(backbone, HATMaskMLP):  # dropout follows train(), not the stage; validation needs no s_max
        return backbone(x, "validation", 1, s_max=400.0)[0]
    return backbone(x, "train")[0]


@pytest.mark.parametrize("name", ["mlp", "hat_mask_mlp"])
def test_input_dropout_defaults_to_off(name: str) -> None:
    assert registry.get("backbone", name).params().input_dropout == 0.0  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["mlp", "hat_mask_mlp"])
def test_input_dropout_zeroes_and_scales_inputs_in_train_mode(name: str) -> None:
    torch.manual_seed(0)
    backbone = _build(name, input_dropout=0.5).train()
    seen: list[torch.Tensor] = []
    backbone.fc[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    _features(backbone, torch.ones(64, *SHAPE))
    values = seen[0]
    assert set(values.unique().tolist()) == {0.0, 2.0}  # dropped, or kept and scaled by 1 / (1 - p)
    assert 0.3 < float((values == 0).float().mean()) < 0.7


@pytest.mark.parametrize("name", ["mlp", "hat_mask_mlp"])
def test_eval_mode_is_deterministic_and_equals_the_network_without_dropout(name: str) -> None:
    torch.manual_seed(0)
    dropping = _build(name, input_dropout=0.3, dropout=0.5).eval()
    plain = _build(name)
    plain.load_state_dict(dropping.state_dict())
    plain.eval()
    x = torch.rand(16, *SHAPE)
    stage_args = ("validation", 1) if name == "hat_mask_mlp" else ("validation",)
    kw = {"s_max": 400.0} if name == "hat_mask_mlp" else {}
    first, second = dropping(x, *stage_args, **kw)[0], dropping(x, *stage_args, **kw)[0]
    assert torch.equal(first, second)
    torch.testing.assert_close(first, plain(x, *stage_args, **kw)[0])


def test_hat_mask_is_applied_after_both_dropouts_as_in_the_reference() -> None:
    """joansj/hat mlp_hat.py: drop1(input) -> fc1 -> relu -> drop2 -> x gfc1 -> ..."""
    torch.manual_seed(0)
    backbone = _build("hat_mask_mlp", input_dropout=0.2, dropout=0.5).train()
    assert isinstance(backbone, HATMaskMLP)
    x = torch.rand(8, *SHAPE)
    mask = {"fc/0": torch.rand(12), "fc/1": torch.rand(10)}
    torch.manual_seed(1)
    feature, hidden = backbone.masked_forward(x, mask, 1)
    torch.manual_seed(1)  # the same draws, in the reference's order
    h = F.dropout(x.flatten(1), 0.2, training=True)
    h = F.dropout(backbone.fc[0](h).relu(), 0.5, training=True) * mask["fc/0"]
    torch.testing.assert_close(hidden["fc/0"], h)
    h = F.dropout(backbone.fc[1](h).relu(), 0.5, training=True) * mask["fc/1"]
    torch.testing.assert_close(feature, h)


def test_mlp_hidden_dropout_and_batch_norm_are_applied_when_set() -> None:
    """The MLP skips calling its identities (no batch norm, dropout 0); set, both act in train mode."""
    torch.manual_seed(0)
    x = torch.rand(256, *SHAPE)
    dropping = _build("mlp", dropout=0.5).train()
    plain = _build("mlp")
    plain.load_state_dict(dropping.state_dict())
    kept, dropped = plain(x, "train")[1]["fc/0"], dropping(x, "train")[1]["fc/0"]
    zeroed = (dropped == 0) & (kept != 0)
    assert 0.3 < float(zeroed.sum() / (kept != 0).sum()) < 0.7
    torch.testing.assert_close(dropped[dropped != 0], 2 * kept[dropped != 0])  # kept, scaled by 1 / (1 - p)
    normed = _build("mlp", batch_norm=True).train()
    pre = normed.fc[0](x.flatten(1))
    want = F.batch_norm(pre, None, None, normed.bn[0].weight, normed.bn[0].bias, training=True).relu()
    torch.testing.assert_close(normed(x, "train")[1]["fc/0"], want)
