"""The offline GPU node's bundle (issue 23): parts packed, checked and joined back; the table of
scripts/gpu_bench.py; and (slow) ahead-of-time CUBINs named where Warp's loader looks."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def script(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pack, unpack = script("scripts/gpu/pack.py"), script("scripts/gpu/unpack.py")


@pytest.fixture
def bundle(tmp_path):
    if shutil.which("xz") is None or shutil.which("tar") is None:
        pytest.skip("needs tar and xz")
    stage, out = tmp_path / "stage", tmp_path / "bundle"
    (stage / "site" / "pkg").mkdir(parents=True)
    (stage / "warp-cache").mkdir()
    (stage / "site" / "pkg" / "__init__.py").write_text("VALUE = 42\n")
    (stage / "site" / "pkg" / "blob.bin").write_bytes(os.urandom(40_000))  # xz cannot shrink it
    (stage / "warp-cache" / "wp_m.sm90.cubin").write_bytes(os.urandom(10_000))
    out.mkdir()
    parts, whole, raw = pack.split_stream(stage, out, part_bytes=16_384)
    manifest = {"python": "3.12", "sha256": whole, "parts": parts, "raw_bytes": raw}
    (out / "bundle.json").write_text(json.dumps(manifest))
    return stage, out, manifest


def test_parts_join_back_into_the_staged_files(bundle, tmp_path):
    stage, out, manifest = bundle
    assert len(manifest["parts"]) >= 3 and all(p["bytes"] <= 16_384 for p in manifest["parts"])
    assert unpack.check_parts(out, manifest) == []
    target = tmp_path / "installed"
    unpack.install(out, manifest, target)
    for name in ("site/pkg/__init__.py", "site/pkg/blob.bin", "warp-cache/wp_m.sm90.cubin"):
        assert (target / name).read_bytes() == (stage / name).read_bytes()
    assert json.loads((target / "bundle.json").read_text())["sha256"] == manifest["sha256"]
    (target / "site" / "pkg" / "__init__.py").write_text("changed")
    unpack.install(out, manifest, target)  # the same bundle again: left as it is
    assert (target / "site" / "pkg" / "__init__.py").read_text() == "changed"


def test_a_missing_or_broken_part_is_named_before_anything_is_installed(bundle):
    _, out, manifest = bundle
    first, second = (out / p["name"] for p in manifest["parts"][:2])
    first.write_bytes(b"x" + first.read_bytes()[1:])
    second.unlink()
    problems = unpack.check_parts(out, manifest)
    assert problems == [
        f"{first.name}: sha256 differs (a broken transfer)",
        f"{second.name}: not here yet",
    ]


def test_the_table_names_the_device_and_every_measure(tmp_path):
    bench = script("scripts/gpu_bench.py")
    facts = {"device": "NVIDIA H100 80GB HBM3", "torch": "2.11.0+cu130", "warp": "1.19.0"}
    rows = [
        {"kind": "parity", "task": "walker_run", "first_step": 0.1, "six_steps": 0.3, "urlb": 0.2},
        *(
            {
                "kind": "states",
                "domain": "walker",
                "worlds": 4096,
                "graph": graph,
                "env_steps_per_s": rate,
                "frames_per_s": rate,
                "physics_frames_per_s": 2 * rate,
            }
            for graph, rate in ((False, 1000.0), (True, 4000.0))
        ),
        {
            "kind": "update",
            "hidden": 1024,
            "batch": 1024,
            "eager_updates_per_s": 300.0,
            "graph_updates_per_s": 900,
        },
    ]
    (tmp_path / "bench.json").write_text(json.dumps({"facts": facts, "rows": rows}))
    text = bench.table(tmp_path)
    assert text.startswith("NVIDIA H100 80GB HBM3: torch 2.11.0+cu130")
    assert "| parity cpu vs warp | walker_run | pass: worst error 0.30 x tolerance |" in text
    assert "| states frames/s | walker, 4096 worlds | 1,000 | 4,000 | 8,000 | 0.50 |" in text
    assert "| DDPG updates/s | 1024 wide, batch 1024 | 300.0 | 900 |" in text
    assert (tmp_path / "table.md").read_text() == text


@pytest.mark.slow  # Warp compiles a kernel for its CPU device and for sm_90 (NVRTC, no GPU needed)
@pytest.mark.warp
def test_aot_cubins_are_named_as_the_loader_looks_for_them(tmp_path, monkeypatch):
    import warp as wp

    aot = script("scripts/gpu/aot.py")
    wp.config.kernel_cache_dir = str(tmp_path / "cpu")
    wp.init()

    @wp.kernel
    def double(x: wp.array(dtype=float)):
        i = wp.tid()
        x[i] = 2.0 * x[i]

    launches: dict = {}
    x = wp.ones(8, dtype=float, device="cpu")
    with aot.recorded_launches(launches):
        wp.launch(double, dim=8, inputs=[x], device="cpu", block_dim=64)
        wp.launch(double, dim=8, inputs=[x], device="cpu")
    assert launches == {double.module: {64, 256}}  # CUDA loads the 64 and the default 256 variants
    variants = aot.cuda_variants(launches)
    root = tmp_path / "aot"
    assert len(aot.missing_cubins(variants, 90, root)) == len(variants) == 2
    rows = aot.compile_cubins(variants, 90, root)
    assert all(row["compiled"] and row["file"].endswith(".sm90.cubin") for row in rows)
    assert aot.missing_cubins(variants, 90, root) == []
    # Warp's own cache test, as Module.load runs it on an sm_90 device with cuda_output="cubin":
    # nothing to compile.
    for module, block_dim in variants:
        folder, name, options = aot.artifact(module, block_dim, 90, root)
        assert not module._compile(None, folder, name, output_arch=90, use_ptx=False, options=options)


def test_warp_keeps_its_versioned_cache_folder_for_every_env(tmp_path):
    """Each WarpBackend initialises Warp; only the first may set the cache folder, or later envs'
    kernels land in the unversioned folder, compiled again by every process (and the
    ahead-of-time CUBINs, which lie in ``<cache>/<warp version>/``, would be missed)."""
    code = (
        "from envs.backends.warp import _init_warp\n"
        "wp = _init_warp(); first = wp.config.kernel_cache_dir\n"
        "_init_warp(); print(first == wp.config.kernel_cache_dir, first.endswith(wp.config.version))"
    )
    env = dict(os.environ, URLB_WARP_CACHE=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.stdout.split()[-2:] == ["True", "True"], done.stderr[-2000:]
