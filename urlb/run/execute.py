"""Running a loop in its run folder: decide fresh start or resume, make the one logger at the
right clock, run, and mark the run complete.

Imports: urlb.data, urlb.run.build.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from urlb.data.checkpoint import checkpoint_path, load_snapshot
from urlb.data.records import clear_complete, mark_complete
from urlb.loop.base import record_files
from urlb.run.build import build_logger


def execute(
    plan: DictConfig,
    make_loop: Callable,
    total: int,
    label: str,
    record: dict,
    evaluators=(),
    finish: Callable | None = None,
) -> tuple[dict, object]:
    """Run the loop that ``make_loop(logger)`` builds to ``total`` on its clock, in ``plan.run_dir``
    (``evaluators``: the loop's extra measurements, whose records count as the run's too;
    ``finish(loop)``: a last output written before the run is marked complete).

    With ``resume=true`` and a checkpoint in the folder, the loop continues from it (and the
    logger from its clock); without one a fresh start is refused if the folder already holds
    records of another run. ``complete.json`` (``record`` plus the clock reached) is written
    last, so its presence means every output is on disk. Returns the last evaluation's
    returns and the loop."""
    run_dir = Path(plan.run_dir)
    clear_complete(run_dir)  # a (re)started run is incomplete until it ends
    checkpoint = checkpoint_path(run_dir)
    state = load_snapshot(checkpoint) if plan.resume and checkpoint.exists() else None
    if state is None:
        start_fresh(run_dir, record_files(run_dir, evaluators), plan.resume, label)
    logger = build_logger(plan, total, 0 if state is None else int(state["clock"]), label)
    try:
        loop = make_loop(logger)
        if state is not None:
            loop.restore(state)
        result = loop.run()
    finally:
        logger.close()
    if finish is not None:
        finish(loop)
    mark_complete(run_dir, record | {loop.clock_key: loop.clock})
    return result, loop


def start_fresh(run_dir: Path, records: list[Path], resume: bool, label: str) -> None:
    """A fresh start never appends to another run's records: refused without ``resume``; with
    it (a run killed before its first checkpoint) the records are redone from the start."""
    stale = [path for path in records if path.exists()]
    if not stale:
        return
    if not resume:
        raise ValueError(
            f"{run_dir} already holds a run ({stale[0].name}); continue it with resume=true, or "
            "start over in another run_dir (or delete that folder)"
        )
    for path in stale:
        path.unlink()
    print(f"[{label}] resume=true but no checkpoint in {run_dir}: starting fresh")
