#!/usr/bin/env bash
# GPU check: a HAT sweep on permuted digits with a larger MLP, run twice on one NVIDIA GPU, with
# `resources.gpus: 1` (one trial per GPU) and then `0.25` (four trials packed per GPU). Prints, for
# both: trials per minute and their ratio, the device each trial reported to MLflow (clsweep.device),
# whether each trial's process was seen on the GPU, its peak GPU memory, and `nvidia-smi` while the
# packed trials run. Then bench_loop.py's same-loop rows (ewc, er, agem against Finetuning) on cuda,
# which do not change the exit status. Installs nothing: it uses the repository's .venv (or
# $CLSWEEP_PYTHON). Takes about 6-9 minutes on one GPU. Exit status: 0 ok, 1 a check failed, 3 no GPU here.
#
#   benchmarks/gpu_check.sh            # from the repository root, on a machine with an NVIDIA GPU
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${CLSWEEP_PYTHON:-$ROOT/.venv/bin/python}"
SAMPLES="${GPU_CHECK_SAMPLES:-8}"

no_gpu() {
    echo "gpu_check: no usable NVIDIA GPU on this machine ($1); this check needs one. Nothing was run." >&2
    exit 3
}

command -v nvidia-smi >/dev/null 2>&1 || no_gpu "nvidia-smi not found"
nvidia-smi -L >/dev/null 2>&1 || no_gpu "nvidia-smi -L failed"
[ -x "$PY" ] || { echo "gpu_check: no Python at $PY (set CLSWEEP_PYTHON)" >&2; exit 1; }
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
    || no_gpu "torch.cuda.is_available() is False"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/clsweep-gpu-check.XXXXXX")"
echo "gpu_check: working in $WORK"
nvidia-smi -L
export RAY_AUTH_MODE=disabled

write_sweep() {  # name gpus cpus
    cat >"$WORK/$1.yaml" <<EOF
name: $1
experiment:
  seed: 0
  paradigm: til
  benchmark: {name: permuted, source: digits, num_tasks: 5, seed: 0}
  backbone: {name: hat_mask_mlp, hidden_dims: [1024, 1024]}
  algorithm: {name: hat}
  train: {epochs: 10, batch_size: 64, lr: 0.05}
search:
  experiment.algorithm.s_max: {log_uniform: [25, 800]}
  experiment.train.lr: {log_uniform: [0.01, 0.1]}
searcher: {name: random, samples: $SAMPLES, seed: 0}
resources: {cpus: $3, gpus: $2}
retries: 0
EOF
}

run_sweep() {  # name -> prints nothing; writes $WORK/<name>.{log,seconds,smi}
    local name="$1" start end sampler
    nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits -lms 500 \
        >"$WORK/$name.smi" 2>/dev/null &
    sampler=$!
    (sleep 45 && nvidia-smi >"$WORK/$name.nvidia-smi.txt" 2>&1) &
    start=$(date +%s.%N)
    "$PY" -m clsweep run "$WORK/$name.yaml" --storage "$WORK/runs" --no-report >"$WORK/$name.log" 2>&1 \
        || echo "gpu_check: clsweep run $name exited $? (see $WORK/$name.log)" >&2
    end=$(date +%s.%N)
    kill "$sampler" 2>/dev/null || true
    wait 2>/dev/null || true
    echo "$start $end" >"$WORK/$name.seconds"
    tail -n 6 "$WORK/$name.log"
}

write_sweep gpu_whole 1 2
write_sweep gpu_packed 0.25 2
echo "== gpus: 1 (one trial per GPU), $SAMPLES trials"
run_sweep gpu_whole
echo "== gpus: 0.25 (four trials packed per GPU), $SAMPLES trials"
run_sweep gpu_packed
echo "== nvidia-smi while the packed trials ran"
cat "$WORK/gpu_packed.nvidia-smi.txt" 2>/dev/null || echo "(no snapshot)"
echo "== the baselines' time over Finetuning on cuda (bench_loop.py, same loop; informational)"
"$PY" "$ROOT/benchmarks/bench_loop.py" --device cuda --epochs 10 --repeats 3 --algorithms "" 2>&1 \
    | grep -E " ratio |skipped" || echo "gpu_check: bench_loop.py --device cuda printed no ratio" >&2

"$PY" - "$WORK" <<'EOF'
import json
import sys
from pathlib import Path

import clsweep

work = Path(sys.argv[1])
ok, rates = True, {}
for name in ("gpu_whole", "gpu_packed"):
    start, end = map(float, (work / f"{name}.seconds").read_text().split())
    df = clsweep.load(name, storage=work / "runs")
    tags = df.attrs["sweep"].tags
    peaks: dict[int, float] = {}
    for line in (work / f"{name}.smi").read_text().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0].isdigit() and parts[1].replace(".", "").isdigit():
            peaks[int(parts[0])] = max(peaks.get(int(parts[0]), 0.0), float(parts[1]))
    done = df[df.status.isin(["finished", "pruned"])]
    rates[name] = len(done) / ((end - start) / 60)
    print(f"\n{name}: {len(done)}/{len(df)} trials done in {end - start:.0f}s: {rates[name]:.2f} trials/min")
    for row in df.itertuples():
        device = tags.get(row.run_id, {}).get("clsweep.device", "?")
        pids = set()
        for result in (work / "runs" / name / row.trial_id).glob("result.json"):
            for text in result.read_text().splitlines():
                if text.strip():
                    pids.add(int(json.loads(text).get("trial_pid", -1)))
        seen = sorted(p for p in pids if p in peaks)
        peak = max((peaks[p] for p in seen), default=float("nan"))
        print(f"  trial {row.trial_id} {row.status:<8} device (MLflow) {device:<5} pid(s) {sorted(pids)} "
              f"on the GPU: {'yes' if seen else 'NO'}  peak GPU memory {peak:.0f} MiB")
        if row.status != "failed" and (device != "cuda" or not seen):
            ok = False
    if len(done) != len(df):
        ok = False
print(f"\ntrials per minute: gpus 1 -> {rates['gpu_whole']:.2f}, gpus 0.25 -> {rates['gpu_packed']:.2f}; "
      f"packed / whole = {rates['gpu_packed'] / rates['gpu_whole']:.2f}x")
print("gpu_check:", "ok" if ok else "FAILED (a trial did not run on cuda, or did not finish)")
sys.exit(0 if ok else 1)
EOF
