#!/usr/bin/env bash
# The GPU check (issue 23): one run of a few minutes that answers what the README's GPU figures
# need, everything written under one folder (--out):
#   1. cpu-vs-warp parity on the device for walker, quadruped and jaco (the CPU tests' tolerance);
#   2. env throughput, 1k-16k worlds, eager vs CUDA graph, states and 84x84 pixels, next to the
#      physics-only ceiling of the same run;
#   3. one DDPG update at 1024 wide / batch 1024, eager and captured in a CUDA graph;
#   4. pretrain -> finetune through the entry points, DDPG and Plan2Explore, short budgets;
#   5. one markdown table naming the GPU (table.md), and the Warp modules compiled during the run
#      (compiled_here.txt: empty when the ahead-of-time kernels were all found).
#
#   bash scripts/gpu_check.sh                                   # package installed, GPU present
#   bash scripts/gpu_check.sh --bundle DIR --target DIR         # offline node: install the bundle of
#                                                               # scripts/gpu/pack.py first
#   bash scripts/gpu_check.sh --device cpu --quick --bundle ... # the rehearsal on a machine without GPU
# Options: --out DIR (default gpu_check_out), --worlds "1024 4096 16384", --pixel-worlds "1024 4096".
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=gpu_check_out DEVICE=cuda BUNDLE="" TARGET="" QUICK=0
WORLDS="1024 4096 16384" PIXEL_WORLDS="1024 4096"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --bundle) BUNDLE=$2; shift 2 ;;
    --target) TARGET=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --worlds) WORLDS=$2; shift 2 ;;
    --pixel-worlds) PIXEL_WORLDS=$2; shift 2 ;;
    --quick) QUICK=1; shift ;;
    *) echo "gpu_check.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
exec > >(tee -a "$OUT/log.txt") 2>&1
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 MUJOCO_GL=${MUJOCO_GL:-egl}
if [ -n "$BUNDLE" ]; then
  TARGET=${TARGET:-$BUNDLE/installed}
  $PY scripts/gpu/unpack.py "$BUNDLE" --target "$TARGET"
  TARGET=$(cd "$TARGET" && pwd)
  export PYTHONPATH="$TARGET/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" URLB_WARP_CACHE="$TARGET/warp-cache"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
CACHE=${URLB_WARP_CACHE:-$HOME/.cache/urlb/warp}
date -u +"%F %T UTC: gpu_check on $(hostname), device $DEVICE, Warp cache $CACHE"
touch "$OUT/.start"
if [ "$DEVICE" != cpu ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
fi

if [ "$QUICK" = 1 ]; then  # the rehearsal: a few worlds, tiny networks
  STEPS=3 ITERATIONS=2 PRESET=preset=debug
  DDPG="protocol.num_envs=2 protocol.pretrain_frames=600 protocol.finetune_frames=600 protocol.seed_frames=200"
  P2E="$DDPG"
else
  STEPS=50 ITERATIONS=50 PRESET=preset=urlb
  DDPG="protocol.num_envs=16 protocol.pretrain_frames=16000 protocol.finetune_frames=8000"
  P2E="protocol.num_envs=8 protocol.pretrain_frames=8000 protocol.finetune_frames=6000"
fi
# shellcheck disable=SC2086  # the world lists are word lists
$PY scripts/gpu_bench.py bench --out "$OUT" --device "$DEVICE" --worlds $WORLDS \
  --pixel-worlds $PIXEL_WORLDS --steps $STEPS --update-iterations $ITERATIONS

# Pretrain -> finetune through the entry points (scripts/gpu/entry.py: Warp loads CUBINs).
entry() { $PY scripts/gpu/entry.py "$@" device="$DEVICE" backend=warp $PRESET console=false tensorboard=false \
  snapshot_root="$OUT/snapshots"; }
for agent in ddpg plan2explore; do
  sizes=$DDPG; [ $agent = plan2explore ] && sizes=$P2E
  frames=$(sed -E 's/.*pretrain_frames=([0-9]+).*/\1/' <<<"$sizes")
  # shellcheck disable=SC2086
  entry pretrain.py agent=$agent env=walker $sizes "protocol.snapshot_frames=[$frames]" \
    protocol.eval_every_frames="$frames" run_dir="$OUT/runs/${agent}_pretrain"
  # shellcheck disable=SC2086
  entry finetune.py agent=$agent task=walker_run snapshot="$frames" $sizes \
    protocol.eval_every_frames=1000000 run_dir="$OUT/runs/${agent}_finetune"
done
$PY scripts/gpu_bench.py runs --out "$OUT" "$OUT"/runs/*

# What Warp had to compile here: the ahead-of-time kernels cover a module when nothing is new.
find "$CACHE" -newer "$OUT/.start" -type f \( -name '*.cubin' -o -name '*.ptx' -o -name '*.o' \) \
  > "$OUT/compiled_here.txt" || true
echo "Warp modules compiled during the check: $(wc -l < "$OUT/compiled_here.txt") (compiled_here.txt)"
$PY scripts/gpu_bench.py table --out "$OUT"
