"""Running a loop in its run folder: make the one logger at the right clock, continue from the
start :func:`urlb.run.folder.open_run` decided (fresh or a checkpoint), run, and mark the run
complete.

Imports: urlb.data, urlb.run.build, urlb.run.folder.
"""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig

from urlb.data.records import mark_complete
from urlb.run.build import build_logger
from urlb.run.folder import Start


def execute(
    plan: DictConfig,
    start: Start,
    make_loop: Callable,
    total: int,
    label: str,
    record: dict,
    finish: Callable | None = None,
) -> tuple[dict, object]:
    """Run the loop that ``make_loop(logger)`` builds to ``total`` on its clock, in ``plan.run_dir``
    (``finish(loop)``: a last output written before the run is marked complete), from
    ``start``: fresh, or continuing its checkpoint (the loop drops the records written after
    it, and the logger its rows). Call it inside :func:`urlb.run.folder.open_run`, which holds the
    folder's lock and decided ``start``. ``complete.json`` (``record`` plus the clock reached) is
    written last, so its presence means every output is on disk. Returns the last evaluation's
    returns and the loop."""
    clock = 0 if start.state is None else int(start.state["clock"])
    logger = build_logger(plan, total, clock, label)
    try:
        loop = make_loop(logger)
        if start.state is not None:
            loop.restore(start.state)
        result = loop.run()
    finally:
        logger.close()
    if finish is not None:
        finish(loop)
    mark_complete(start.run_dir, record | {loop.clock_key: loop.clock})
    return result, loop
