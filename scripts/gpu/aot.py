"""Compile MuJoCo Warp's CUDA kernels ahead of time, on a machine with no GPU, for a GPU node
that should spend its minutes measuring rather than compiling (issue 23).

Warp compiles a module's kernels on first use and looks for them first in its kernel cache:
``<cache>/<warp version>/wp_<module>_<hash>/wp_<module>_<hash>.sm90.cubin`` beside a ``.meta``
file. Which modules a run needs (MuJoCo Warp builds many kernels in closures, specialised to a
model; each loads as a module of its own) and with which block size is only known by running
it, so this script steps each domain (states, then the 84x84 renderer) on Warp's CPU device,
recording every ``wp.launch`` and ``wp.launch_tiled``, and then compiles each module variant a
CUDA launch would load (the requested ``block_dim``, or Warp's CUDA default of 256) to an
sm_90 CUBIN in ``--out``, laid out as a kernel cache. H100 and H200 are both sm_90.

On the node, point ``URLB_WARP_CACHE`` at ``--out`` and set ``warp.config.cuda_output = "cubin"``
(``scripts/gpu/entry.py`` does, for the entry points): by default Warp prefers PTX when the
driver is newer than its toolkit, and would look for ``.sm75.ptx`` files instead.

    python scripts/gpu/aot.py --out build/gpu/warp-cache            # record, compile, write aot.json
    python scripts/gpu/aot.py --out build/gpu/warp-cache --check    # a fresh process finds them all

Each domain's first steps on the CPU device are timed; with an empty CPU cache (``--cpu-cache``,
default ``<out>/../warp-cpu-cache``; ``--fresh`` empties it) that is Warp's CPU compile of the
same modules, a lower bound of what the node would spend compiling for CUDA.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import time
from importlib.metadata import version
from pathlib import Path

import torch

DOMAINS = ("walker", "quadruped", "jaco")
CUDA_DEFAULT_BLOCK_DIM = 256  # warp._src.context._resolve_launch_block_dim on a CUDA device


@contextlib.contextmanager
def recorded_launches(launches: dict):
    """Record ``{module: {block_dim a CUDA launch would load}}`` for every ``wp.launch`` and
    ``wp.launch_tiled`` in the block (MuJoCo Warp calls them through the ``warp`` namespace)."""
    import warp as wp

    launch, launch_tiled = wp.launch, wp.launch_tiled

    def note(kernel, block_dim):
        cuda_block_dim = block_dim if block_dim is not None and block_dim > 0 else CUDA_DEFAULT_BLOCK_DIM
        launches.setdefault(kernel.module, set()).add(int(cuda_block_dim))

    def recording_launch(kernel, *args, **kwargs):
        note(kernel, kwargs.get("block_dim", args[11] if len(args) > 11 else None))
        return launch(kernel, *args, **kwargs)

    def recording_launch_tiled(*args, **kwargs):
        note(kwargs.get("kernel", args[0] if args else None), kwargs["block_dim"])
        return launch_tiled(*args, **kwargs)

    wp.launch, wp.launch_tiled = recording_launch, recording_launch_tiled
    try:
        yield launches
    finally:
        wp.launch, wp.launch_tiled = launch, launch_tiled


def exercise(domains, pixels: bool, worlds: int) -> dict[str, tuple[float, float]]:
    """Reset, set a state and step (eager, then the captured graph) each domain on Warp's CPU
    device, then the same with 84x84 frames; returns (wall, CPU) seconds per stage, CPU
    compiles included (the CPU seconds do not count other processes on a shared machine)."""
    from envs import make_env

    seconds = {}
    stages = [(domain, None) for domain in domains]
    if pixels:
        stages += [(domain, {}) for domain in domains]
    for domain, pixel_options in stages:
        start, cpu_start = time.perf_counter(), time.process_time()
        env = make_env(domain, worlds, backend="warp", device="cpu", seed=0, pixels=pixel_options)
        env.reset()
        action = torch.zeros(worlds, env.action_dim)
        for _ in range(3):  # the first graph step runs eagerly, the second captures, the third replays
            env.step(action)
        base = getattr(env, "env", env)  # a pixel env wraps the state env
        base.set_physics_state(base.physics_state())
        stage = f"{domain}{' 84x84 pixels' if pixel_options is not None else ''}"
        seconds[stage] = (time.perf_counter() - start, time.process_time() - cpu_start)
    return seconds


def cuda_variants(launches: dict) -> list:
    """``(module, block_dim)`` pairs to build: every recorded launch, plus the CUDA default of
    modules loaded on the CPU device without a recorded launch (Warp's own helpers)."""
    import warp._src.context as warp_context

    variants = {(module, block_dim) for module, dims in launches.items() for block_dim in dims}
    for module in list(warp_context.user_modules.values()):
        if module.execs and module not in launches:
            variants.add((module, CUDA_DEFAULT_BLOCK_DIM))
    return sorted(variants, key=lambda v: (v[0].name, v[1]))


def artifact(module, block_dim: int, arch: int, root: Path) -> tuple[Path, str, dict]:
    """(folder, CUBIN name, resolved options) of a module variant, named as Warp's loader names it."""
    module.get_module_hash(block_dim)
    options = module.resolved_options[block_dim]
    folder = root / module.get_module_identifier(block_dim)
    name = module._get_compile_output_name(None, arch, use_ptx=False, block_dim=block_dim)
    return folder, name, options


def compile_cubins(variants: list, arch: int, root: Path) -> list[dict]:
    rows = []
    for module, block_dim in variants:
        folder, name, options = artifact(module, block_dim, arch, root)
        start = time.perf_counter()
        compiled = module._compile(None, folder, name, output_arch=arch, use_ptx=False, options=options)
        rows.append(
            {
                "module": module.name,
                "block_dim": block_dim,
                "file": f"{folder.name}/{name}",
                "seconds": round(time.perf_counter() - start, 2),
                "compiled": compiled,
            }
        )
        print(f"  {folder.name}/{name} block_dim={block_dim} {rows[-1]['seconds']:.1f}s", flush=True)
    return rows


def missing_cubins(variants: list, arch: int, root: Path) -> list[str]:
    """Variants whose CUBIN or .meta is not where the loader will look: Warp's own cache test
    (``Module._compile`` returns False without compiling when both exist)."""
    missing = []
    for module, block_dim in variants:
        folder, name, _ = artifact(module, block_dim, arch, root)
        meta = folder / module._get_meta_name(block_dim=block_dim)
        if not (folder / name).exists() or not meta.exists():
            missing.append(f"{folder.name}/{name}")
    return missing


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="the AOT kernel cache (URLB_WARP_CACHE on the node)"
    )
    parser.add_argument("--arch", type=int, default=90)
    parser.add_argument("--domains", nargs="+", default=list(DOMAINS))
    parser.add_argument("--no-pixels", dest="pixels", action="store_false")
    parser.add_argument("--worlds", type=int, default=2, help="worlds per env while recording")
    parser.add_argument("--cpu-cache", type=Path, default=None, help="Warp's CPU kernel cache")
    parser.add_argument("--fresh", action="store_true", help="empty the CPU cache first (times compiles)")
    parser.add_argument("--check", action="store_true", help="only check that every variant is in --out")
    args = parser.parse_args()

    cpu_cache = args.cpu_cache or args.out.resolve().parent / "warp-cpu-cache"
    if args.fresh:
        shutil.rmtree(cpu_cache, ignore_errors=True)
    fresh = not cpu_cache.exists() or not any(cpu_cache.iterdir())
    os.environ["URLB_WARP_CACHE"] = str(cpu_cache)  # read by envs.backends.warp at Warp's init
    import warp as wp

    root = args.out / wp.config.version
    launches: dict = {}
    with recorded_launches(launches):
        seconds = exercise(args.domains, args.pixels, args.worlds)
    variants = cuda_variants(launches)
    cache_note = "empty CPU cache: compiles included" if fresh else f"CPU cache {cpu_cache} already filled"
    print(f"Warp CPU device, {args.worlds} worlds ({cache_note}):")
    for stage, (wall, cpu) in seconds.items():
        print(f"  {stage}: {wall:.1f} s ({cpu:.1f} s of CPU)")
    print(f"{len(variants)} module variants launched ({len(launches)} modules recorded)")
    if args.check:
        missing = missing_cubins(variants, args.arch, root)
        for name in missing:
            print(f"  missing: {name}")
        print(f"check: {len(variants) - len(missing)}/{len(variants)} sm_{args.arch} CUBINs in {root}")
        raise SystemExit(1 if missing else 0)

    start = time.perf_counter()
    rows = compile_cubins(variants, args.arch, root)
    total = time.perf_counter() - start
    for path in root.rglob("*"):  # the loader needs the CUBIN and .meta only
        if path.is_file() and path.suffix not in (".cubin", ".meta"):
            path.unlink()
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    manifest = {
        "warp": wp.config.version,
        "mujoco_warp": version("mujoco-warp"),
        "arch": args.arch,
        "worlds": args.worlds,
        "cpu_device_first_steps_s": {k: [round(w, 1), round(c, 1)] for k, (w, c) in seconds.items()},
        "cpu_cache_was_empty": fresh,
        "cuda_compile_s": round(total, 1),
        "bytes": size,
        "variants": rows,
        "sha256": {
            str(p.relative_to(args.out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        },
    }
    (args.out / "aot.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{len(rows)} sm_{args.arch} CUBINs in {total:.0f} s, {size / 2**20:.1f} MiB in {root}")


if __name__ == "__main__":
    main()
