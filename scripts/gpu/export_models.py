"""Export the domains' MuJoCo models from dm_control into ``envs/models/`` (MJCF text, asset
files, a manifest with sha256s), so that envs run without dm_control (:mod:`envs.models`).
Run it again after changing a domain's ``mjcf`` builder or dm_control's version;
``tests/test_models.py`` fails while the export differs from dm_control's build.

    python scripts/gpu/export_models.py                 # into envs/models/
    python scripts/gpu/export_models.py --out /tmp/m    # elsewhere
"""

from __future__ import annotations

import argparse
from pathlib import Path

from envs.models import MODELS, MODELS_DIR, write_exported


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=MODELS_DIR)
    args = parser.parse_args()
    manifest = write_exported(args.out)
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(
        f"exported {', '.join(MODELS)} (mujoco {manifest['mujoco']}, dm_control {manifest['dm_control']}) "
        f"into {args.out}: {size / 1e3:.0f} kB"
    )


if __name__ == "__main__":
    main()
