"""What every fixture generator of ``scripts/reference/`` does alike, in the standard library only
(the SUPE generator runs in a JAX venv without torch; the PDT one beside an old transformers):

* :func:`git` and :func:`prepare`: the reference checkout is at the fixture's commit, and either
  unmodified or with the generator's patch applied (once);
* :func:`reference_caller`: which function of the reference's own code drew a random tensor
  (the manifests name it beside every recorded draw).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def git(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=check)


def prepare(root: Path, commit: str, patch: Path | None = None) -> None:
    """Check the checkout's commit; apply ``patch`` unless applied already, or, without one,
    check that the tracked files are unmodified (the reference runs as published)."""
    head = git(root, "rev-parse", "HEAD").stdout.strip()
    if head != commit:
        raise SystemExit(f"{root} is at {head}; the fixtures are recorded from {commit}")
    if patch is None:
        if git(root, "status", "--porcelain", "--untracked-files=no").stdout.strip():
            raise SystemExit(f"{root} has local changes; this reference runs unmodified")
        return
    if git(root, "apply", "--reverse", "--check", str(patch), check=False).returncode == 0:
        return  # applied already
    done = git(root, "apply", str(patch), check=False)
    if done.returncode:
        raise SystemExit(f"git apply {patch} failed in {root}:\n{done.stderr}")


def reference_caller(marker: str) -> str:
    """``<file stem>.<qualified name>`` of the innermost function on the stack whose file path
    contains ``marker`` (the reference's own code: ``/agent/``, ``/iod/``), or ``?``."""
    frame = sys._getframe(1)
    while frame is not None:
        if marker in frame.f_code.co_filename:
            return f"{Path(frame.f_code.co_filename).stem}.{frame.f_code.co_qualname}"
        frame = frame.f_back
    return "?"
