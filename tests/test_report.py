"""urlb.report.report and scripts/compare.py on hand-made evaluation records: which runs count, the
refusals (mixed protocols, corrupt lines, a run passed twice), what is reported rather than
dropped (missing tasks, incomplete runs), published reference rows, and the outputs."""

from __future__ import annotations

import csv
import json
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest

from envs.tasks import EXPERT_SCORES
from urlb.report.metrics import iqm
from urlb.report.report import build_report
from urlb.report.runs import ReportError
from urlb.report.tables import markdown

ROOT = Path(__file__).resolve().parents[1]
WALKER = ["walker_stand", "walker_walk", "walker_run", "walker_flip"]


def write_run(root: Path, agent: str, task: str, seed: int, scores: dict[int, float], **protocol) -> Path:
    """A finetune run folder whose eval.jsonl scores ``scores[frames]`` (expert-normalised)."""
    protocol = {"pretrain_frames": 2000, "snapshot_frames": 2000, "finetune_frames": 1000} | protocol
    run_dir = root / agent / task / f"snapshot_{protocol['snapshot_frames']}" / f"seed_{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "eval.jsonl", "a") as file:
        for frames, score in scores.items():
            record = {"agent": agent, "domain": "walker", "task": task, "seed": seed, "phase": "finetune"}
            record |= {"frames": frames, "return": score * EXPERT_SCORES[task], "normalised_score": score}
            file.write(json.dumps(record | protocol) + "\n")
    return run_dir


def make_suite(root: Path, agents=("ddpg", "diayn"), seeds=(1, 2, 3), **protocol) -> dict:
    """Runs of every agent x walker task x seed with known final scores; returns them."""
    finals = {}
    for a, agent in enumerate(agents):
        for t, task in enumerate(WALKER):
            for seed in seeds:
                final = round(0.1 * (a + 1) + 0.05 * t + 0.01 * seed, 4)
                write_run(root, agent, task, seed, {500: final / 2, 1000: final}, **protocol)
                finals[(agent, task, seed)] = final
    return finals


def test_scores_are_each_runs_final_evaluation_or_a_chosen_frame_budget(tmp_path):
    finals = make_suite(tmp_path)
    report = build_report([tmp_path], reps=200)
    assert report.tasks == WALKER and set(report.methods) == {"ddpg", "diayn"}
    ddpg = np.array([[finals[("ddpg", task, seed)] for task in WALKER] for seed in (1, 2, 3)])
    np.testing.assert_allclose(report.methods["ddpg"].scores, ddpg)
    assert report.intervals["ddpg"]["IQM"].point == pytest.approx(iqm(ddpg))
    at_half = build_report([tmp_path], frames=500, reps=200)
    np.testing.assert_allclose(at_half.methods["ddpg"].scores, ddpg / 2)
    # diayn beats ddpg on every run here
    assert report.improvement[("ddpg", "diayn")].point == pytest.approx(0.0)


def test_mixed_protocols_are_refused_unless_grouped(tmp_path):
    make_suite(tmp_path / "a", agents=("ddpg",))
    make_suite(tmp_path / "b", agents=("diayn",), finetune_frames=500)
    with pytest.raises(ReportError) as error:
        build_report([tmp_path], reps=100)
    message = str(error.value)
    assert "finetune_frames" in message and "500 (diayn)" in message and "1k (ddpg)" in message
    assert "--group-by finetune_frames" in message and "\n" not in message
    grouped = build_report([tmp_path], group_by=["finetune_frames"], reps=100)
    assert set(grouped.methods) == {"ddpg [finetune 1k]", "diayn [finetune 500]"}


def test_different_snapshots_are_a_protocol_difference_too(tmp_path):
    make_suite(tmp_path, agents=("ddpg",), snapshot_frames=1000)
    make_suite(tmp_path, agents=("ddpg",), snapshot_frames=2000)
    with pytest.raises(ReportError, match="snapshot_frames 1k .* vs 2k"):
        build_report([tmp_path], reps=100)
    grouped = build_report([tmp_path], group_by=["snapshot_frames"], reps=100)
    assert set(grouped.methods) == {"ddpg [snapshot 1k]", "ddpg [snapshot 2k]"}


def test_a_missing_task_is_reported_and_aggregates_use_common_tasks(tmp_path):
    make_suite(tmp_path, agents=("ddpg",))
    for task in WALKER[:3]:
        for seed in (1, 2, 3):
            write_run(tmp_path, "diayn", task, seed, {1000: 0.5})
    write_run(tmp_path, "diayn", "walker_stand", 4, {1000: 0.9})  # a seed with one task only
    report = build_report([tmp_path], reps=100)
    assert report.tasks == WALKER[:3]
    assert report.methods["ddpg"].scores.shape == (3, 3)
    text = markdown(report)
    assert "diayn: no runs on walker_flip" in text
    assert "diayn seed 4: no run on walker_walk, walker_run" in text


def test_incomplete_runs_are_reported_not_scored(tmp_path):
    make_suite(tmp_path, agents=("ddpg",), seeds=(1, 2))
    cut = write_run(tmp_path, "ddpg", "walker_run", 3, {500: 0.7})
    report = build_report([tmp_path], reps=100)
    assert report.methods["ddpg"].seeds == [1, 2]
    assert any("incomplete run left out" in note and str(cut) in note for note in report.notes)


def test_a_corrupt_line_is_reported_by_file_and_line(tmp_path):
    make_suite(tmp_path, agents=("ddpg",))
    path = tmp_path / "ddpg" / "walker_walk" / "snapshot_2000" / "seed_2" / "eval.jsonl"
    with open(path, "a") as file:
        file.write('{"agent": "ddpg", "task": "walk\n')
    with pytest.raises(ReportError, match=f"{path}:3: not JSON"):
        build_report([tmp_path], reps=100)
    report = build_report([tmp_path], reps=100, skip_bad_lines=True)
    assert any(f"{path}:3" in note for note in report.notes)
    path.write_text(path.read_text().splitlines()[0] + "\n" + json.dumps({"agent": "ddpg"}) + "\n")
    with pytest.raises(ReportError, match=f"{path}:2: missing domain, task"):
        build_report([tmp_path], reps=100)


def test_duplicate_evaluations_count_once_and_a_run_passed_twice_is_refused(tmp_path):
    finals = make_suite(tmp_path / "sweep", agents=("ddpg",))
    # a rerun appended the same evaluations again
    stand = tmp_path / "sweep" / "ddpg" / "walker_stand" / "snapshot_2000" / "seed_1"
    lines = (stand / "eval.jsonl").read_text()
    (stand / "eval.jsonl").write_text(lines + lines)
    report = build_report([tmp_path / "sweep"], reps=100)
    assert report.methods["ddpg"].scores[0, 0] == pytest.approx(finals[("ddpg", "walker_stand", 1)])
    assert report.methods["ddpg"].scores.shape == (3, 4)
    assert any(str(stand) in note and "2 evaluation(s) written twice alike" in note for note in report.notes)
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "eval.jsonl").write_text(lines)
    with pytest.raises(ReportError, match="the same run is in"):
        build_report([tmp_path / "sweep", copy], reps=100)


def test_two_disagreeing_records_of_one_run_are_an_error(tmp_path):
    """Issue 22: a run written twice with other results (two runs in one folder) is refused,
    naming both lines, instead of the last record silently winning."""
    make_suite(tmp_path, agents=("ddpg",))
    again = write_run(tmp_path, "ddpg", "walker_stand", 1, {500: 0.0, 1000: 0.25})
    with pytest.raises(
        ReportError, match=r"two different records of one evaluation: .*eval.jsonl:1 and .*eval.jsonl:3"
    ):
        build_report([tmp_path], reps=100)
    assert (again / "eval.jsonl").exists()


def test_published_rows_are_aggregates_of_published_task_means(tmp_path):
    make_suite(tmp_path, agents=("diayn",))
    report = build_report([tmp_path], published=["auto"], reps=100)
    (row,) = report.published
    assert row.name == "DIAYN (published)" and row.tasks == WALKER
    # URLB's DIAYN: walker stand 631, walk 394, run 146, flip 306 over the expert returns
    expected = np.mean([631 / 984, 394 / 971, 146 / 796, 306 / 799])
    assert row.aggregates["Mean"] == pytest.approx(expected)
    assert row.aggregates["Optimality Gap"] == pytest.approx(1 - expected)
    assert "| *DIAYN (published)* | *published* | 2M / 2M / 100k |" in markdown(report)
    with pytest.raises(ReportError, match="no published URLB numbers for 'metra'"):
        build_report([tmp_path], published=["metra"], reps=100)


def run_compare(monkeypatch, *arguments: str) -> int:
    """``python scripts/compare.py ...`` in this process; returns its exit code."""
    script = str(ROOT / "scripts" / "compare.py")
    monkeypatch.setattr(sys, "argv", [script, *arguments])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(script, run_name="__main__")
    return done.value.code


def test_compare_writes_table_csv_and_figures(tmp_path, monkeypatch, capsys):
    make_suite(tmp_path / "runs")
    out = tmp_path / "report"
    arguments = ["--reps", "300", "--profile-reps", "100", "--published", "DIAYN"]
    assert run_compare(monkeypatch, str(tmp_path / "runs"), "--out", str(out), *arguments) == 0
    assert "| *DIAYN (published)* |" in capsys.readouterr().out
    assert "| diayn | measured | 2k / 2k / 1k | 3 x 4 |" in (out / "report.md").read_text()
    rows = list(csv.DictReader((out / "aggregates.csv").read_text().splitlines()))
    assert [row["source"] for row in rows] == ["measured", "measured", "published"]
    assert float(rows[0]["iqm_low"]) <= float(rows[0]["iqm"]) <= float(rows[0]["iqm_high"])
    for name in ("aggregates", "profiles", "per_task", "improvement"):
        assert (out / f"{name}.png").stat().st_size > 10_000


def test_compare_refuses_bad_input_with_one_line(tmp_path, monkeypatch, capsys):
    make_suite(tmp_path, agents=("ddpg",))
    make_suite(tmp_path, agents=("sac",), finetune_frames=500)
    assert run_compare(monkeypatch, str(tmp_path), "--out", str(tmp_path / "report")) == 2
    error = capsys.readouterr().err
    assert error.startswith("compare: records mix protocols: finetune_frames") and error.count("\n") == 1
    assert not (tmp_path / "report").exists()
