"""`benchmark.normalize` (training-split statistics only) and `benchmark.seed: trial`."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
import torch

from clsweep import registry
from clsweep.benchmarks import PermutedStream, SourceData, TaskStream, build_stream
from clsweep.benchmarks.splits import rng_for, stratified_split
from clsweep.benchmarks.streams import channel_stats, standardize
from clsweep.spec import parse_experiment
from clsweep.spec.errors import SpecError

STREAMS = ["permuted", "split", "rotated"]


def _stream(name: str, **params: Any) -> TaskStream:
    paradigm = "til"
    return build_stream(name, paradigm=paradigm, source="synthetic", num_tasks=2, **params)


# ---- normalisation ----------------------------------------------------------------------------


def test_channel_stats_match_a_hand_computation() -> None:
    x = torch.tensor([[[[0.0, 1.0]], [[5.0, 5.0]]], [[[2.0, 3.0]], [[5.0, 5.0]]]])  # (2, 2, 1, 2)
    mean, std = channel_stats(x)
    # channel 0: values 0, 1, 2, 3 -> mean 1.5, population variance (2.25 + 0.25 + 0.25 + 2.25) / 4
    torch.testing.assert_close(mean, torch.tensor([1.5, 5.0], dtype=torch.float64))
    torch.testing.assert_close(std, torch.tensor([1.25**0.5, 1.0], dtype=torch.float64))  # constant: std 1
    out = standardize(x, mean, std)
    torch.testing.assert_close(out[:, 0].flatten(), (torch.tensor([0.0, 1.0, 2.0, 3.0]) - 1.5) / 1.25**0.5)
    assert torch.equal(out[:, 1], torch.zeros(2, 1, 2)) and out.dtype == torch.float32


@pytest.mark.parametrize("name", STREAMS)
def test_every_split_is_standardised_with_the_training_split_statistics(name: str) -> None:
    raw, normed = _stream(name), _stream(name, normalize=True)
    for task_id in (1, 2):
        r, n = raw.task(task_id), normed.task(task_id)
        assert r.input_mean is None and r.input_std is None
        values = r.train_x.double().flatten()  # one channel; the training split after the validation carve
        mean = values.sum() / values.numel()
        std = (((values - mean) ** 2).sum() / values.numel()).sqrt()
        assert n.input_mean == pytest.approx((float(mean),)) and n.input_std == pytest.approx((float(std),))
        for split in ("train", "val", "test"):
            x_raw, y_raw = r.split(split)
            x, y = n.split(split)
            assert torch.equal(y, y_raw)
            torch.testing.assert_close(x, ((x_raw.double() - mean) / std).float())
        assert float(n.train_x.mean()) == pytest.approx(0.0, abs=1e-5)
        assert float(n.train_x.std(correction=0)) == pytest.approx(1.0, abs=1e-5)


class _Altered(PermutedStream):
    """The same stream, with the source's test images and task 1's validation rows replaced."""

    def load(self) -> SourceData:
        data = super().load()
        gen = torch.Generator().manual_seed(7)
        # the rows task 1 holds out for validation (permuted: every training row belongs to every task)
        _, val_rows = stratified_split(
            data.train_y.numpy(), self.params.validation_fraction, rng_for(self.seed, 1, 1)
        )
        train_x = data.train_x.clone()
        train_x[torch.from_numpy(val_rows)] = torch.rand(len(val_rows), *data.input_shape, generator=gen) * 5
        test_x = torch.rand(data.test_x.shape, generator=gen) * 5 + 3
        return dataclasses.replace(data, train_x=train_x, test_x=test_x)


def test_statistics_ignore_test_and_validation_data() -> None:
    params = registry.get("benchmark", "permuted").params(source="synthetic", num_tasks=2, normalize=True)
    plain, altered = PermutedStream("til", params=params), _Altered("til", params=params)
    a, b = plain.task(1), altered.task(1)
    assert not torch.allclose(a.test_x, b.test_x) and not torch.allclose(a.val_x, b.val_x)  # data did change
    assert a.input_mean == b.input_mean and a.input_std == b.input_std  # statistics did not
    torch.testing.assert_close(a.train_x, b.train_x)


# ---- benchmark.seed: trial --------------------------------------------------------------------


def _experiment(
    trial_seed: int, bench_seed: int | str, name: str = "permuted", source: str = "synthetic"
) -> dict[str, Any]:
    return {
        "seed": trial_seed,
        "benchmark": {"name": name, "source": source, "num_tasks": 2, "seed": bench_seed},
        "backbone": {"name": "mlp", "hidden_dims": [8]},
        "algorithm": {"name": "finetuning"},
    }


def _built(
    trial_seed: int, bench_seed: int | str, name: str = "permuted", source: str = "synthetic"
) -> TaskStream:
    cfg = parse_experiment(_experiment(trial_seed, bench_seed, name, source))
    stream: TaskStream = registry.create(
        "benchmark", cfg.benchmark.name, cfg.paradigm, params=cfg.benchmark.params
    )
    return stream


def _perms(stream: TaskStream) -> list[torch.Tensor]:
    assert isinstance(stream, PermutedStream)
    return [stream.permutation(t) for t in (1, 2)]


def test_trial_benchmark_seed_follows_the_trial_seed() -> None:
    cfg = parse_experiment(_experiment(3, "trial"))
    assert cfg.benchmark.params.seed == 3  # type: ignore[attr-defined]
    logged = cfg.to_dict()["benchmark"]["seed"]
    assert logged == 3 and json.loads(json.dumps(logged)) == 3  # an int, JSON-able (an MLflow param)
    same = [_perms(_built(3, "trial")) for _ in range(2)]
    other = _perms(_built(4, "trial"))
    assert all(torch.equal(p, q) for p, q in zip(*same, strict=True))
    assert not any(torch.equal(p, q) for p, q in zip(same[0], other, strict=True))
    # the validation carve (digits: fixed images; rotated task 1: unrotated) and the class order move too
    rows = [
        {r.numpy().tobytes() for r in _built(s, "trial", "rotated", "digits").task(1).val_x}
        for s in (3, 3, 4)
    ]
    assert rows[0] == rows[1] and rows[0] != rows[2]
    orders = {_built(s, "trial", "split").class_order for s in range(4)}  # type: ignore[attr-defined]
    assert len(orders) > 1


def test_an_integer_benchmark_seed_stays_fixed_across_trial_seeds() -> None:
    first, second = _perms(_built(0, 5)), _perms(_built(1, 5))
    assert all(torch.equal(p, q) for p, q in zip(first, second, strict=True))
    assert parse_experiment(_experiment(1, 5)).benchmark.params.seed == 5  # type: ignore[attr-defined]


def test_unresolved_or_misspelt_trial_seed_is_refused() -> None:
    with pytest.raises(ValueError, match="unresolved"):
        build_stream("permuted", paradigm="til", source="synthetic", seed="trial")
    with pytest.raises(SpecError):
        parse_experiment(_experiment(0, "trail"))
