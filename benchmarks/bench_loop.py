"""Task-loop overhead: clsweep's loop against a plain PyTorch loop doing the same work, side by side.

Work: permuted digits, 5 tasks, MLP 64-256-256, batch 64, plain SGD, EPOCHS epochs per task,
evaluation of every seen task (validation and test) after each task, in both loops.
Algorithms: Finetuning, and HAT (the plain loop writes HAT's update out: annealed masks, sparsity
term, gradient conditioning, embedding compensation, clipping, clamping).

Run:  .venv/bin/python benchmarks/bench_loop.py [--epochs 10] [--repeats 5] [--device cpu]
Prints one line per algorithm with the median wall time of each loop and their ratio
(targets: Finetuning at most 1.3, HAT at most 1.1). Runs are interleaved (clsweep, plain,
clsweep, ...) so that load from other processes hits both alike; the ratio printed is the median
of the REPEATS adjacent pairs' ratios, their range beside it (load that comes and goes over
seconds slows the two runs of a pair alike, and would skew a ratio of separate medians). Both
loops update with SGD's foreach kernels, the optimiser clsweep builds.

Then, through clsweep's own loop, side by side with Finetuning (same data, MLP, budget):
- ``--baselines ewc,er,agem``: each method's time over Finetuning's (targets: ewc <= 1.3x,
  er <= 1.5x, agem <= 2x);
- the floor under ER's ratio: Finetuning whose every step trains on twice the rows (batch 128,
  twice the epochs: the same steps, each on as many rows as ER's current + replay batch; on all
  five tasks, where ER replays on tasks 2-5 only, so it bounds that floor from above);
- the plateau schedule's cost: Finetuning under ``plateau`` with a patience that never runs out
  (so it trains exactly EPOCHS epochs per task, plus one validation pass per epoch) over the
  fixed schedule; the ratio is the price of those validation passes.

``--device cuda`` runs these same-loop rows on the GPU (``benchmarks/gpu_check.sh`` does); the
plain-loop rows are CPU-only and are skipped there. ``--hidden 16,16`` runs them on a narrow MLP,
where the matrix products cost next to nothing and each step's time is the per-operation overhead,
the regime a small model meets on an accelerator: there twice the rows cost about what one batch
does, and a method's ratio is the cost of the extra operations its step runs.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from torch import nn

from clsweep.experiment import run_experiment
from clsweep.spec import parse_experiment
from clsweep.training import NonFiniteLossError


def config(algorithm: str, epochs: int, device: str = "cpu", hidden: tuple[int, ...] = (256, 256)) -> dict:
    backbone = "hat_mask_mlp" if algorithm == "hat" else "mlp"
    algo = (
        {"name": "hat", "s_max": 400, "sparsity_strength": 0.75}
        if algorithm == "hat"
        else {"name": algorithm}
    )
    return {
        "seed": 0,
        "device": device,
        "benchmark": {"name": "permuted", "source": "digits", "num_tasks": 5},
        "backbone": {"name": backbone, "hidden_dims": list(hidden)},
        "algorithm": algo,
        "train": {"epochs": epochs, "batch_size": 64, "optimizer": "sgd", "lr": 0.05},
    }


def plain_loop(tasks: list, algorithm: str, epochs: int, seed: int = 0) -> list[list[float]]:
    """The same training written directly in PyTorch: no framework, batches drawn by index."""
    torch.manual_seed(seed)
    dims = [64, 256, 256]
    layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
    hat = algorithm == "hat"
    s_max, c = 400.0, 0.75
    emb = nn.ParameterList(nn.Parameter(torch.randn(d)) for d in dims[1:]) if hat else None
    cumulative = [torch.zeros(d) for d in dims[1:]]
    stored: list[list[torch.Tensor]] = []
    heads: list[nn.Linear] = []
    rows: list[list[float]] = []

    def features(x: torch.Tensor, masks: list[torch.Tensor] | None) -> torch.Tensor:
        h = x.flatten(1)
        for i, layer in enumerate(layers):
            h = torch.relu(layer(h))
            if masks is not None:
                h = h * masks[i]
        return h

    for t, task in enumerate(tasks):
        heads.append(nn.Linear(256, task.num_classes))
        params = list(layers.parameters()) + list(heads[-1].parameters()) + (list(emb) if hat else [])
        opt = torch.optim.SGD(params, lr=0.05, foreach=True)  # the update clsweep's make_optimizer builds
        n = task.train_x.shape[0]
        B = math.ceil(n / 64)
        if hat:
            with torch.no_grad():
                for e in emb:
                    e.normal_()
            free = [1 - m for m in cumulative]
            free_total = float(sum(f.sum() for f in free))
            mult = []
            for i, layer in enumerate(layers):
                w = cumulative[i].view(-1, 1).expand_as(layer.weight)
                if i > 0:
                    w = torch.minimum(w, cumulative[i - 1].view(1, -1).expand_as(layer.weight))
                mult.append((layer.weight, 1 - w))
                mult.append((layer.bias, 1 - cumulative[i]))
        for _ in range(epochs):
            order = torch.randperm(n)
            for b in range(B):
                idx = order[b * 64 : (b + 1) * 64]
                x, y = task.train_x[idx], task.train_y[idx]
                if hat:
                    s = 1 / s_max + (s_max - 1 / s_max) * b / max(1, B - 1) if B > 1 else s_max
                    masks = [torch.sigmoid(s * e) for e in emb]
                    loss = nn.functional.cross_entropy(heads[-1](features(x, masks)), y)
                    reg = sum((m * f).sum() for m, f in zip(masks, free, strict=True)) / free_total
                    loss = loss + c * reg
                else:
                    loss = nn.functional.cross_entropy(heads[-1](features(x, None)), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if hat:
                    if t > 0:
                        torch._foreach_mul_([p.grad for p, _ in mult], [m for _, m in mult])
                    with torch.no_grad():
                        for e in emb:
                            num = torch.cosh(torch.clamp(s * e, -50, 50)) + 1
                            e.grad.mul_(s_max / s * num / (torch.cosh(e) + 1))
                    torch.nn.utils.clip_grad_norm_(params, 10000.0)
                opt.step()
                if hat:
                    with torch.no_grad():
                        for e in emb:
                            e.clamp_(-6, 6)
        if hat:
            binary = [(e.detach() > 0).float() for e in emb]
            stored.append(binary)
            cumulative = [torch.maximum(a, m) for a, m in zip(cumulative, binary, strict=True)]
        row = []
        with torch.no_grad():
            for j in range(t + 1):
                masks = stored[j] if hat else None
                for x, y in ((tasks[j].val_x, tasks[j].val_y), (tasks[j].test_x, tasks[j].test_y)):
                    row.append(float((heads[j](features(x, masks)).argmax(1) == y).float().mean()))
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--algorithms", default="finetuning,hat")
    parser.add_argument("--baselines", default="ewc,er,agem")
    parser.add_argument("--device", default="cpu", help="device of the same-loop rows (cpu, cuda)")
    parser.add_argument(
        "--hidden", default="256,256", help="hidden widths of the MLP in the same-loop rows (e.g. 16,16)"
    )
    args = parser.parse_args()
    args.hidden = hidden_widths(parser, args.hidden)
    torch.set_num_threads(1)
    if args.device != "cpu":
        print(f"plain-loop rows skipped: the plain loop runs on the CPU only (--device {args.device})")
    elif args.algorithms:
        plain_rows(args)
    if args.baselines:
        same_loop_rows(args)


def hidden_widths(parser: argparse.ArgumentParser, text: str) -> tuple[int, ...]:
    """``--hidden``'s comma-separated widths, or the parser's one-line error (exit status 2)."""
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        widths = ()
    if not widths or min(widths) < 1:
        parser.error(f"--hidden: comma-separated positive integers, got {text!r}")
    return widths


def pair_ratio(ours: list[float], base: list[float]) -> str:
    """``ratio R (pairs LO-HI``: the median of the adjacent runs' ratios, and their range. Load from
    other processes that comes and goes over seconds slows both runs of a pair alike, where it
    would skew a ratio of separate medians."""
    ratios = sorted(o / b for o, b in zip(ours, base, strict=True))
    return f"ratio {statistics.median(ratios):4.2f} (pairs {ratios[0]:.2f}-{ratios[-1]:.2f}"


def _timed(cfg: object) -> float:
    t0 = time.perf_counter()
    run_experiment(cfg)  # type: ignore[arg-type]
    return time.perf_counter() - t0


def same_loop_rows(args: argparse.Namespace) -> None:
    """Baselines and the plateau schedule against Finetuning, all through clsweep's loop."""
    dev, hidden = args.device, args.hidden
    fixed = parse_experiment(config("finetuning", args.epochs, dev, hidden))
    plateau_raw = config("finetuning", args.epochs, dev, hidden)
    plateau_raw["train"].pop("epochs")
    plateau_raw["train"]["schedule"] = {"name": "plateau", "max_epochs": args.epochs, "patience": 10**6}
    variants = {
        name: parse_experiment(config(name, args.epochs, dev, hidden)) for name in args.baselines.split(",")
    }
    doubled = config("finetuning", 2 * args.epochs, dev, hidden)
    doubled["train"]["batch_size"] = 128
    variants["finetuning 2x rows"] = parse_experiment(doubled)
    variants["plateau schedule"] = parse_experiment(plateau_raw)
    run_experiment(fixed)
    for name, cfg in variants.items():
        try:
            run_experiment(cfg)  # warm-up
        except NonFiniteLossError as err:  # e.g. EWC's default lambda on a narrow MLP: no time to compare
            print(f"{name:<17} not timed: {err} (MLP 64-{'-'.join(map(str, hidden))})", flush=True)
            continue
        base, ours = [], []
        for _ in range(args.repeats):  # interleaved: each run of the method next to one of Finetuning
            base.append(_timed(fixed))
            ours.append(_timed(cfg))
        a, b = statistics.median(ours), statistics.median(base)
        print(
            f"{name:<17} {a:6.2f}s  finetuning {b:6.2f}s  {pair_ratio(ours, base)}; same loop on {dev}; "
            f"MLP 64-{'-'.join(map(str, hidden))}; {args.epochs} epochs x 5 tasks, median of {args.repeats})",
            flush=True,
        )


def plain_rows(args: argparse.Namespace) -> None:
    for algorithm in args.algorithms.split(","):
        cfg = parse_experiment(config(algorithm, args.epochs))
        from clsweep.experiment import build

        stream, _ = build(cfg)
        tasks = [stream.task(t) for t in range(1, stream.num_tasks + 1)]
        run_experiment(cfg)  # warm-up: first-call costs (imports, allocator) kept out of both timings
        plain_loop(tasks, algorithm, 1)
        ours, plain = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            result = run_experiment(cfg)
            ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            plain_loop(tasks, algorithm, args.epochs)
            plain.append(time.perf_counter() - t0)
        a, b = statistics.median(ours), statistics.median(plain)
        acc = result.to_dict()["acc"]
        print(
            f"{algorithm:<11} clsweep {a:6.2f}s  plain {b:6.2f}s  {pair_ratio(ours, plain)}; "
            f"clsweep ACC {acc:.3f}; {args.epochs} epochs x 5 tasks, median of {args.repeats})",
            flush=True,
        )


if __name__ == "__main__":
    main()
