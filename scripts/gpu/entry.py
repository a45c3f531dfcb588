"""Run an entry point with Warp loading CUDA kernels as CUBINs, which is how scripts/gpu/aot.py
compiled them ahead of time: by default Warp 1.19 prefers PTX when the driver is newer than
its toolkit, looks for ``.sm75.ptx`` files, finds none and compiles every module again.

    python scripts/gpu/entry.py pretrain.py agent=ddpg env=walker device=cuda ...
"""

from __future__ import annotations

import runpy
import sys


def main() -> None:
    import warp

    warp.config.cuda_output = "cubin"  # before Warp's first compile or load
    script, sys.argv = sys.argv[1], sys.argv[1:]  # the entry point sees its own argv (Hydra's overrides)
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
