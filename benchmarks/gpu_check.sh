#!/usr/bin/env bash
# The GPU checks of issue 13, as one prepared script: run it on the GPU machine from the repository
# root, with .gpu/bundle.tar.xz carried (make gpu-bundle). It writes everything under $OUT:
#   machine.txt   the GPU, driver, Python and torch seen
#   bench/        batching.md and batching.png from `bench_batching.py --quick --device cuda`
#   tune.txt      `nexus tune --quick` on the benchmark's MLP, on the GPU
# PYTHON and DEVICE choose the interpreter and the device (defaults python3, cuda); DEVICE=cpu
# PYTHON=.venv/bin/python tries the bundle on a CPU machine.
set -uo pipefail
OUT=${OUT:-/tmp/nexus-gpu-check}
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
SITE=$(mktemp -d /tmp/nexus-site.XXXXXX)
PROJECT=$(mktemp -d /tmp/nexus-project.XXXXXX)
mkdir -p "$OUT/bench"
export PYTHONUNBUFFERED=1

"$PYTHON" -c "import tarfile, sys; tarfile.open('.gpu/bundle.tar.xz').extractall(sys.argv[1])" "$SITE" || exit 1
# the package and the files it ships, but never the repository root: its triton/ would shadow torch's triton
cp -r nexus model_repository_templates loadtest "$SITE/"
export PYTHONPATH="$SITE"

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo "no nvidia-smi"
  "$PYTHON" -c "import sys, torch, pytriton; print(sys.version); print('torch', torch.__version__, 'cuda', torch.cuda.is_available()); print('tritonserver from', pytriton.__file__)"
} 2>&1 | tee "$OUT/machine.txt"

echo "== bench_batching.py --quick --device $DEVICE"
timeout 300 "$PYTHON" benchmarks/bench_batching.py --quick --device "$DEVICE" --out "$OUT/bench" 2>&1 | tee "$OUT/bench/log.txt"
echo "bench exit: ${PIPESTATUS[0]}" | tee -a "$OUT/bench/log.txt"

echo "== nexus tune --quick on the benchmark's MLP (instances of kind auto: the GPU where Triton sees one)"
(
  cd "$PROJECT" || exit 1
  git init -q -b main && git -c user.name=gpu -c user.email=gpu@nexusml.invalid commit -q --allow-empty -m gpu
  "$PYTHON" - "$OLDPWD/benchmarks" <<'EOF' || exit 1
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from _bench_models import MODELS, export
from nexus.registry import Project
reference = MODELS["mlp"]
Project.open(Path.cwd(), env={}).store(export(reference, Path("mlp.pt")), "mlp", signature=reference.signature)
EOF
  timeout 200 "$PYTHON" -m nexus tune mlp --p99 20ms --quick --budget 2m
) 2>&1 | tee "$OUT/tune.txt"
echo "tune exit: ${PIPESTATUS[0]}" | tee -a "$OUT/tune.txt"
