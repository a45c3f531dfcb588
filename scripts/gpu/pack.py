"""Pack what a GPU node without network needs for scripts/gpu_check.sh (issue 23) into parts
small enough for its transfers, with their sha256s.

The node has Python 3.12 with a CUDA build of torch (2.11), numpy, matplotlib, tensorboard,
PyYAML, absl-py and etils, and none of MuJoCo, MuJoCo Warp, Warp, tensordict or Hydra. The
bundle holds:

* ``site/``: the wheels below for that Python, installed here with ``pip install --no-deps
  --target`` (the versions this environment runs, which the tests passed with). dm-control is
  not among them: the models come from ``envs/models/`` (envs/models.py);
* ``warp-cache/``: MuJoCo Warp's and the renderer's kernels compiled ahead of time for sm_90
  (scripts/gpu/aot.py), a Warp kernel cache that ``URLB_WARP_CACHE`` points at;

as one tar stream compressed with xz (Warp's 299 MB library is 80 MB so; its wheel is 149 MB),
cut into parts of ``--part-mib`` (default 45 MiB: a 64 MiB transfer also carries the 14 MiB
working tree), plus ``bundle.json`` (versions, parts, sha256s) and ``SHA256SUMS``.
scripts/gpu/unpack.py joins, checks and installs them on the node; scripts/gpu_check.sh
``--bundle`` runs it first.

    python scripts/gpu/pack.py --aot build/gpu/warp-cache --out build/gpu/bundle
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

# What the check imports that the node lacks (tensordict needs pyvers, importlib-metadata and,
# before Python 3.13, orjson; Hydra needs omegaconf and antlr4).
PACKAGES = (
    "mujoco",
    "mujoco-warp",
    "warp-lang",
    "tensordict",
    "pyvers",
    "orjson",
    "importlib-metadata",
    "hydra-core",
    "omegaconf",
    "antlr4-python3-runtime",
)
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
)


def target_args(python: str) -> list[str]:
    args = ["--only-binary=:all:", "--no-deps", "--python-version", python, "--implementation", "cp"]
    for platform in PLATFORMS:
        args += ["--platform", platform]
    return args


def wheel_of(folder: Path, name: str, pinned: str) -> Path:
    stem = name.replace("-", "_").lower()
    found = [p for p in folder.glob("*.whl") if p.name.lower().startswith(f"{stem}-{pinned}-")]
    if len(found) != 1:
        raise SystemExit(f"expected one wheel of {name}=={pinned} in {folder}, found {found}")
    return found[0]


def fetch_wheel(wheels: Path, name: str, pinned: str, python: str) -> Path:
    """The wheel of ``name==pinned`` for ``python`` in ``wheels``, downloaded once; a package
    published as an sdist only (antlr4-python3-runtime 4.9.3, Hydra's parser runtime) must be
    pure Python, and is built into a ``py3-none-any`` wheel here."""
    stem = f"{name.replace('-', '_').lower()}-{pinned}-"
    if not any(p.name.lower().startswith(stem) for p in wheels.glob("*.whl")):
        pip = [sys.executable, "-m", "pip"]
        download = [*pip, "download", "-q", *target_args(python), "-d", str(wheels), f"{name}=={pinned}"]
        if subprocess.run(download, capture_output=True).returncode != 0:
            build = [*pip, "wheel", "-q", "--no-deps", "-w", str(wheels), f"{name}=={pinned}"]
            subprocess.run(build, check=True)
    wheel = wheel_of(wheels, name, pinned)
    if not wheel.name.endswith(("-any.whl", "manylinux_2_28_x86_64.whl", "x86_64.whl")):
        raise SystemExit(f"{wheel.name} is not for Linux x86-64")
    return wheel


def stage_site(stage: Path, wheels: Path, python: str) -> dict[str, str]:
    """Fetch the pinned wheels (kept in ``wheels`` between runs) and install them into
    ``stage/site`` for ``python``; returns ``{name: version}``."""
    pins = {name: version(name) for name in PACKAGES}
    wheels.mkdir(parents=True, exist_ok=True)
    files = [str(fetch_wheel(wheels, name, pinned, python)) for name, pinned in pins.items()]
    site = stage / "site"
    shutil.rmtree(site, ignore_errors=True)
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-compile", "--no-index", "--target"]
    subprocess.run([*install, str(site), *target_args(python), *files], check=True)
    return pins


def split_stream(stage: Path, out: Path, part_bytes: int) -> tuple[list[dict], str, int]:
    """``tar | xz -6`` of ``stage`` cut into parts; returns (parts, whole sha256, raw bytes)."""
    tar = subprocess.Popen(["tar", "-C", str(stage), "-cf", "-", "."], stdout=subprocess.PIPE)
    xz = subprocess.Popen(["xz", "-6", "-T2", "-c"], stdin=tar.stdout, stdout=subprocess.PIPE)
    tar.stdout.close()
    whole, parts, index = hashlib.sha256(), [], 0
    while True:
        name = f"bundle.tar.xz.part-{index:02d}"
        digest, written = hashlib.sha256(), 0
        with open(out / name, "wb") as part:
            while written < part_bytes:
                block = xz.stdout.read(min(1 << 20, part_bytes - written))
                if not block:
                    break
                part.write(block)
                digest.update(block)
                whole.update(block)
                written += len(block)
        if written == 0:
            (out / name).unlink()
            break
        parts.append({"name": name, "bytes": written, "sha256": digest.hexdigest()})
        index += 1
    if xz.wait() != 0 or tar.wait() != 0:
        raise SystemExit("tar | xz failed")
    raw = sum(p.stat().st_size for p in stage.rglob("*") if p.is_file())
    return parts, whole.hexdigest(), raw


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("build/gpu/bundle"))
    parser.add_argument("--aot", type=Path, required=True, help="scripts/gpu/aot.py's --out")
    parser.add_argument("--python", default="3.12")
    parser.add_argument("--part-mib", type=float, default=45.0)
    parser.add_argument("--work", type=Path, default=Path("build/gpu"), help="wheels/ and stage/ go here")
    args = parser.parse_args()
    start = time.perf_counter()
    aot = json.loads((args.aot / "aot.json").read_text())
    if aot["warp"] != version("warp-lang"):
        raise SystemExit(f"{args.aot} was compiled by Warp {aot['warp']}, this is {version('warp-lang')}")
    stage = args.work / "stage"
    pins = stage_site(stage, args.work / "wheels", args.python)
    shutil.rmtree(stage / "warp-cache", ignore_errors=True)
    shutil.copytree(args.aot, stage / "warp-cache")
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    parts, whole, raw = split_stream(stage, args.out, int(args.part_mib * 2**20))
    manifest = {
        "python": args.python,
        "packages": pins,
        "aot": {key: aot[key] for key in ("warp", "mujoco_warp", "arch", "cuda_compile_s", "bytes")}
        | {"modules": len(aot["variants"])},
        "raw_bytes": raw,
        "sha256": whole,
        "parts": parts,
    }
    (args.out / "bundle.json").write_text(json.dumps(manifest, indent=1) + "\n")
    (args.out / "SHA256SUMS").write_text("".join(f"{p['sha256']}  {p['name']}\n" for p in parts))
    packed = sum(p["bytes"] for p in parts)
    print(", ".join(f"{name} {pinned}" for name, pinned in pins.items()))
    print(f"AOT: {manifest['aot']['modules']} sm_{aot['arch']} modules, {aot['bytes'] / 2**20:.1f} MiB")
    print(
        f"{raw / 2**20:.0f} MiB staged -> {packed / 2**20:.1f} MiB xz in {len(parts)} parts of at most "
        f"{args.part_mib:g} MiB ({time.perf_counter() - start:.0f} s):"
    )
    for part in parts:
        print(f"  {part['name']}  {part['bytes'] / 2**20:5.1f} MiB  {part['sha256']}")


if __name__ == "__main__":
    main()
