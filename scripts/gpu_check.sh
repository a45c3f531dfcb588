#!/usr/bin/env bash
# GPU checks for the warp backend on CUDA, run on a machine with an NVIDIA GPU:
#   bash scripts/gpu_check.sh            # with the package installed in the current Python
# On a machine without network access, put the wheels it lacks in .whl/ (mujoco,
# mujoco-warp, warp-lang, dm-control and its deps, tensordict, torchrl, gymnasium) and
# they are installed to /tmp/site first. Prints GPU parity and a throughput table
# (1k-16k worlds, eager and CUDA-graph stepping).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 MUJOCO_GL=egl URLB_WARP_CACHE="${URLB_WARP_CACHE:-$PWD/.cache/warp}"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'"
python3 -m pytest -q -m gpu tests
python3 scripts/gpu_bench.py "$@"
# The runner on CUDA: warp backend, replay and updates on the GPU, URLB preset sizes
# (1024-wide networks, batch 1024, one update every 2 env steps), a short budget.
python3 pretrain.py agent=ddpg env=walker device=cuda backend=warp threads=null \
  protocol.pretrain_frames=20000 protocol.snapshot_frames=[] protocol.eval_every_frames=10000 \
  run_dir=/tmp/urlb_gpu_pretrain snapshot_root=/tmp/urlb_gpu_snapshots
python3 - <<'PY'
import csv
rows = list(csv.DictReader(open("/tmp/urlb_gpu_pretrain/time.csv")))
last = rows[-1]
updates_per_s = float(last["updates"]) / float(last["elapsed_s"])
print(f"pretrain on CUDA (urlb preset, ddpg, walker): {float(last['fps']):.0f} frames/s, {updates_per_s:.1f} updates/s")
PY
# METRA on CUDA with 64 worlds: skills, 1-step replay, the skill evaluator (48 rollouts on
# the warp backend) and the PNG, with everything on the GPU.
python3 pretrain.py agent=metra env=quadruped device=cuda backend=warp threads=null \
  protocol.num_envs=64 protocol.pretrain_frames=64000 protocol.snapshot_frames=[64000] \
  protocol.eval_every_frames=32000 run_dir=/tmp/urlb_gpu_metra snapshot_root=/tmp/urlb_gpu_snapshots
python3 - <<'PY'
import csv, json
rows = list(csv.DictReader(open("/tmp/urlb_gpu_metra/time.csv")))
coverage = [json.loads(l) for l in open("/tmp/urlb_gpu_metra/skills/coverage.jsonl")]
print(f"metra on CUDA (quadruped, 64 worlds): {float(rows[-1]['fps']):.0f} frames/s, coverage {coverage}")
PY
# Plan2Explore + Dreamer on CUDA at Rajeswar et al.'s sizes (50 x 50 sequences, 32x32
# latents, 4x400 heads, one update every 10 env steps): sequence replay on the GPU.
python3 pretrain.py agent=plan2explore env=walker device=cuda backend=warp threads=null \
  protocol.num_envs=8 protocol.pretrain_frames=24000 protocol.snapshot_frames=[] \
  protocol.eval_every_frames=24000 run_dir=/tmp/urlb_gpu_p2e snapshot_root=/tmp/urlb_gpu_snapshots
python3 - <<'PY'
import csv
rows = list(csv.DictReader(open("/tmp/urlb_gpu_p2e/time.csv")))
last = rows[-1]
print(f"plan2explore on CUDA (urlb sizes, walker, 8 worlds): {float(last['fps']):.0f} frames/s, "
      f"{float(last['updates']) / float(last['elapsed_s']):.2f} updates/s")
PY
# Pixels on CUDA: the env (physics x2, pose refresh and render in one CUDA graph) against
# physics-only steps, then DDPG from 84x84 frames with the replay and the encoder on the GPU.
python3 scripts/bench_envs.py --pixels --backends warp --domains walker quadruped --num-envs 64 256 1024 4096
python3 pretrain.py agent=ddpg env=walker obs=pixels device=cuda backend=warp threads=null \
  protocol.num_envs=16 protocol.pretrain_frames=40000 protocol.snapshot_frames=[] \
  protocol.eval_every_frames=40000 replay.capacity=100000 agent.batch_size=256 \
  run_dir=/tmp/urlb_gpu_pixels snapshot_root=/tmp/urlb_gpu_snapshots
python3 - <<'PY'
import csv
rows = list(csv.DictReader(open("/tmp/urlb_gpu_pixels/time.csv")))
last = rows[-1]
print(f"ddpg from pixels on CUDA (urlb preset, walker, 16 worlds): {float(last['fps']):.0f} frames/s, "
      f"{float(last['updates']) / float(last['elapsed_s']):.1f} updates/s")
PY
