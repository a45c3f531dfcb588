"""Compare agents by IQM over the URLB suite: read the evaluation records of any set of
finetune run folders (or a sweep's folder) and report, per agent, IQM, mean, median and
optimality gap of expert-normalised scores with 95% stratified-bootstrap intervals,
probability of improvement between agents, performance profiles and per-task mean returns
(``urlb.report.report``, ``urlb.report.metrics``; rliable's conventions, Agarwal et al. 2021).

    python scripts/compare.py runs/sweep/walker --out reports/walker
    python scripts/compare.py runs/sweep/walker --out reports/walker --frames 50000 --published DIAYN APT
    python scripts/compare.py runs/sweep/a runs/sweep/b --out reports/ab --group-by snapshot_frames

Writes ``<out>/report.md`` (also printed), ``<out>/aggregates.csv`` and the figures
``aggregates.png`` (four panels), ``profiles.png``, ``per_task.png`` and ``improvement.png``.
``--published`` adds the URLB paper's numbers (``urlb.report.published``) as reference rows marked
published: names (``DIAYN APT``), ``auto`` (those matching a measured agent) or ``all``.

Runs of different protocols (pretrain, snapshot or finetune frames) are refused unless
``--group-by`` splits them into separate rows, and so are two disagreeing records of one run's
evaluation (a run written twice); runs that stopped early, tasks a method lacks and skipped
lines are listed under Notes. Exits 2 with one line on input a report cannot use.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from urlb.data.records import write_atomically
from urlb.report.report import PROTOCOL_FIELDS, ReportError, build_report, markdown, write_csv


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "paths", nargs="+", type=Path, help="run folders, eval.jsonl files or folders above them"
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for report.md, the CSV and figures")
    parser.add_argument(
        "--frames", type=int, help="score each run at this evaluation (default: its final one)"
    )
    parser.add_argument("--group-by", nargs="*", default=[], choices=PROTOCOL_FIELDS, help="protocol fields")
    parser.add_argument(
        "--published", nargs="*", default=[], help="published reference rows: names, auto, all"
    )
    parser.add_argument("--reps", type=int, default=50_000, help="bootstrap resamples for the aggregates")
    parser.add_argument("--profile-reps", type=int, default=2_000, help="resamples for profiles and P(X > Y)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--skip-bad-lines", action="store_true", help="report corrupt lines and go on")
    parser.add_argument("--no-figures", action="store_true")
    args = parser.parse_args()

    try:
        report = build_report(
            args.paths,
            frames=args.frames,
            group_by=args.group_by,
            published=args.published,
            reps=args.reps,
            improvement_reps=args.profile_reps,
            seed=args.seed,
            skip_bad_lines=args.skip_bad_lines,
        )
    except ReportError as error:
        print(f"compare: {error}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(report)
    figures = []
    if not args.no_figures:
        from urlb.report.plots import write_figures

        figures = write_figures(report, args.out)
        text += "\n" + "\n".join(f"![{path.stem}]({path.name})" for path in figures) + "\n"
    write_atomically(args.out / "report.md", text)
    write_csv(report, args.out / "aggregates.csv")
    print(text)
    print(f"wrote {args.out / 'report.md'}, {args.out / 'aggregates.csv'} and {len(figures)} figure(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
