"""Join, check and install a bundle made by scripts/gpu/pack.py, on the GPU node (the standard
library only: the node has Python 3.12 and nothing of ours).

    python3 scripts/gpu/unpack.py BUNDLE                 # which parts arrived, each checked
    python3 scripts/gpu/unpack.py BUNDLE --target DIR    # and install: DIR/site (PYTHONPATH),
                                                         # DIR/warp-cache (URLB_WARP_CACHE)

Parts arrive one transfer at a time; each is checked against the bundle's sha256 as soon as it
is there, so a broken transfer is named before the last one. Installing streams the parts, in
order, through xz into tar: nothing joined is written to disk but the installed files. A target
that already holds this bundle (same sha256) is left as it is.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import sys
import tarfile
import time
from pathlib import Path

MANIFEST = "bundle.json"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class Joined(io.RawIOBase):
    """The parts read back to back as one stream."""

    def __init__(self, paths: list[Path]):
        self.paths, self.file = list(paths), None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while True:
            if self.file is None:
                if not self.paths:
                    return 0
                self.file = open(self.paths.pop(0), "rb")
            n = self.file.readinto(buffer)
            if n:
                return n
            self.file.close()
            self.file = None


def check_parts(bundle: Path, manifest: dict) -> list[str]:
    """Problems with the parts (missing, wrong size or sha256); prints each part's state."""
    problems = []
    for part in manifest["parts"]:
        path = bundle / part["name"]
        if not path.exists():
            problems.append(f"{part['name']}: not here yet")
        elif path.stat().st_size != part["bytes"]:
            problems.append(f"{part['name']}: {path.stat().st_size} bytes, expected {part['bytes']}")
        elif sha256(path) != part["sha256"]:
            problems.append(f"{part['name']}: sha256 differs (a broken transfer)")
        else:
            print(f"  {part['name']}: ok ({part['bytes'] / 2**20:.1f} MiB)")
    return problems


def install(bundle: Path, manifest: dict, target: Path) -> None:
    marker = target / MANIFEST
    if marker.exists() and json.loads(marker.read_text()).get("sha256") == manifest["sha256"]:
        print(f"{target} already holds this bundle")
        return
    start = time.perf_counter()
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    digest = hashlib.sha256()

    class Hashed(io.RawIOBase):  # the joined stream's sha256, taken while it is read
        def __init__(self, raw):
            self.raw = raw

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            n = self.raw.readinto(buffer)
            digest.update(memoryview(buffer)[:n])
            return n

    stream = io.BufferedReader(Hashed(Joined([bundle / p["name"] for p in manifest["parts"]])), 1 << 20)
    with tarfile.open(fileobj=stream, mode="r|xz") as archive:
        if hasattr(tarfile, "data_filter"):
            archive.extractall(staging, filter="data")
        else:  # Python < 3.10.12 / 3.11.4: no extraction filters
            archive.extractall(staging)
    while stream.read(1 << 20):  # tar's end padding: hash the whole stream
        pass
    if digest.hexdigest() != manifest["sha256"]:
        raise SystemExit(f"the joined parts' sha256 differs from {MANIFEST}'s; nothing installed")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    marker.write_text(json.dumps(manifest, indent=1) + "\n")
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    print(f"installed into {target}: {size / 2**20:.0f} MiB in {time.perf_counter() - start:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--target", type=Path, default=None)
    args = parser.parse_args()
    manifest = json.loads((args.bundle / MANIFEST).read_text())
    print(f"bundle for Python {manifest['python']}: {len(manifest['parts'])} parts")
    problems = check_parts(args.bundle, manifest)
    for problem in problems:
        print(f"  {problem}")
    if problems:
        sys.exit(1)
    if args.target is not None:
        install(args.bundle, manifest, args.target.resolve())
        if sys.version_info[:2] != tuple(int(x) for x in manifest["python"].split(".")):
            here = sys.version.split()[0]
            print(f"warning: this is Python {here}; the bundle's wheels are for {manifest['python']}")


if __name__ == "__main__":
    main()
