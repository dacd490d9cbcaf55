#!/usr/bin/env bash
# The worker's CUDA path on a GPU machine (issue 13, item 2), as one short prepared run:
#   1. torch sees a CUDA device (else exit 2: nothing below would test the GPU);
#   2. the device-path and runtime unit tests, CUDA ones included (a CUDA test that skips fails);
#   3. a short embedded `python -m bench` with the worker and the direct baseline on cuda
#      (INFERNO_DEVICE=cuda: the bench's server inherits it, and the direct baseline reads it
#      through WorkerSettings), its JSON checked to say cuda and to have no failed request.
# Results go to $OUT when set (the device machine's return folder), else to ./gpu-check/.
# Usage: bench/gpu_check.sh [python]   (default .venv/bin/python, else python3). ~2 minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
[[ -x $PY ]] || PY=python3
DEST=${OUT:-gpu-check}
mkdir -p "$DEST"
export INFERNO_DEVICE=cuda

"$PY" -c 'import sys, torch
ok = torch.cuda.is_available()
print("torch", torch.__version__, "cuda", torch.version.cuda,
      torch.cuda.get_device_name(0) if ok else "no CUDA device")
sys.exit(0 if ok else 2)' | tee "$DEST/device.txt"

# -rs lists skips; with a GPU present a CUDA test must run, so any skip of one fails the check.
"$PY" -m pytest -q -p no:cacheprovider -rs tests/unit/worker/test_device_path.py \
    tests/unit/worker/test_runtime.py 2>&1 | tee "$DEST/pytest.txt"
if grep -Eq "SKIPPED.*needs a CUDA device" "$DEST/pytest.txt"; then
    echo "gpu_check: a CUDA test skipped on a machine with CUDA" >&2
    exit 1
fi

timeout 300 "$PY" -m bench --mode embedded --model mlp --concurrency 1,16,64 --duration 5 \
    --warmup 1 --json >"$DEST/bench-cuda.json"
"$PY" - "$DEST/bench-cuda.json" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
devices = {d["device"] for d in report["direct"]}
assert devices and all(d.startswith("cuda") for d in devices), f"direct ran on {devices}"
assert report["errors"] == 0, f"{report['errors']} request(s) failed"
for level in report["levels"]:
    print({k: level.get(k) for k in ("concurrency", "req_per_s", "p50_ms", "p99_ms", "mean_batch",
                                          "infer_ms_per_batch")})
print("gpu_check: ok")
EOF
