"""urlb.run.sweep and scripts/sweep.py: completion from disk, cartesian blocks, and small real
sweeps through Hydra's joblib and submitit-local launchers (debug preset, tiny budgets) that
end in a real report; a rerun launches nothing that is complete, and cut-off runs are resumed
or redone without duplicating their records."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import random
import runpy
import shlex
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from urlb.data.records import mark_complete
from urlb.report.report import build_report
from urlb.report.tables import markdown
from urlb.run import sweep
from urlb.run.sweep import Job, Protocol, SweepError, SweepSpec, cartesian_blocks, job_state

ROOT = Path(__file__).resolve().parents[1]
PROTOCOL = Protocol(pretrain_frames=1000, snapshot_frames=(1000,), finetune_frames=500)
# The debug preset cut to one evaluation per run: a sweep of three runs takes seconds.
TINY = [
    "backend=cpu",
    "device=cpu",
    "console=false",
    "tensorboard=false",
    "protocol.pretrain_frames=1000",
    "protocol.snapshot_frames=[1000]",
    "protocol.finetune_frames=500",
]


# -- blocks and states, without launching anything ----------------------------------------------
def test_cartesian_blocks_cover_any_set_exactly():
    assert cartesian_blocks([("a", 1), ("b", 1), ("a", 2), ("b", 2)]) == [(["a", "b"], [1, 2])]
    # two agents missing the same seed: still one block
    assert cartesian_blocks([("a", 3), ("b", 3)]) == [(["a", "b"], [3])]
    grid = list(itertools.product("xyz", (1, 2, 3), ("s", "w")))
    generator = random.Random(0)
    for _ in range(200):
        points = generator.sample(grid, generator.randint(1, len(grid)))
        blocks = cartesian_blocks(points)
        covered = [point for block in blocks for point in itertools.product(*block)]
        assert sorted(covered) == sorted(points)  # exact cover: nothing missing, nothing twice
        assert len(blocks) <= len(points)


def make_pretrain(out: Path, seed: int = 1, frames: int = 1000) -> Path:
    run_dir = Job("pretrain", "ddpg", "walker", seed).run_dir(out)
    run_dir.mkdir(parents=True)
    mark_complete(run_dir, {"phase": "pretrain", "frames": frames, "pretrain_frames": frames})
    snapshot = out / "snapshots" / "ddpg" / "walker" / f"seed_{seed}" / "snapshot_1000.pt"
    snapshot.parent.mkdir(parents=True, exist_ok=True)
    snapshot.write_bytes(b"")
    return run_dir


def test_job_states_come_from_disk(tmp_path):
    pretrain = Job("pretrain", "ddpg", "walker", 1)
    finetune = Job("finetune", "ddpg", "walker", 1, "walker_stand", 1000)
    assert job_state(pretrain, tmp_path, PROTOCOL) == "new"
    make_pretrain(tmp_path)
    assert job_state(pretrain, tmp_path, PROTOCOL) == "complete"
    (tmp_path / "snapshots" / "ddpg" / "walker" / "seed_1" / "snapshot_1000.pt").unlink()
    assert job_state(pretrain, tmp_path, PROTOCOL) == "stale"  # a pretrain needs its snapshots
    run_dir = finetune.run_dir(tmp_path)
    run_dir.mkdir(parents=True)
    assert job_state(finetune, tmp_path, PROTOCOL) == "stale"
    (run_dir / "checkpoint.pt").write_bytes(b"")
    assert job_state(finetune, tmp_path, PROTOCOL) == "resume"
    record = {"frames": 500, "snapshot_frames": 1000, "pretrain_frames": 1000}
    mark_complete(run_dir, record)
    assert job_state(finetune, tmp_path, PROTOCOL) == "complete"
    mark_complete(run_dir, record | {"frames": 100_000})
    with pytest.raises(SweepError, match=r"another protocol: frames 100000 \(sweep: 500\)"):
        job_state(finetune, tmp_path, PROTOCOL)


def test_a_sweep_refuses_another_pretraining_seed(tmp_path):
    spec = SweepSpec(["ddpg"], ["walker"], [1], tmp_path, finetune_overrides=["snapshot_seed=2"])
    with pytest.raises(SweepError, match="snapshot_seed=2: a sweep finetunes each seed's own snapshots"):
        sweep.plan(spec, PROTOCOL)


def test_launcher_overrides_and_the_slurm_config():
    from hydra import compose, initialize_config_dir

    spec = SweepSpec(["ddpg"], ["walker"], [1], Path("out"), launcher="urlb_slurm", jobs=16)
    spec.launcher_overrides = ["hydra.launcher.partition=gpu"]
    overrides = sweep.launcher_overrides(spec)
    assert overrides == ["hydra/launcher=urlb_slurm", "hydra.launcher.array_parallelism=16", overrides[-1]]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base=None):
        cfg = compose("pretrain", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert launcher.gpus_per_node == 1 and launcher.max_num_timeout > 0 and launcher.array_parallelism == 16


def test_finetunes_wait_for_their_pretrain(tmp_path, monkeypatch):
    """The pretrain of seed 2 fails: its finetunes are not launched, seed 1's are."""
    launched = []

    def fake_multirun(command, **_):
        launched.append(command)
        values = dict(arg.split("=", 1) for arg in command[3:] if "=" in arg and not arg.startswith("hydra"))
        for agent, seed in itertools.product(values["agent"].split(","), values["seed"].split(",")):
            if "pretrain.py" in command[1] and seed == "1":
                make_pretrain(tmp_path, int(seed))
            elif "finetune.py" in command[1]:
                for task in values["task"].split(","):
                    job = Job("finetune", agent, "walker", int(seed), task, 1000)
                    job.run_dir(tmp_path).mkdir(parents=True)
                    mark_complete(
                        job.run_dir(tmp_path),
                        {"frames": 500, "snapshot_frames": 1000, "pretrain_frames": 1000},
                    )
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(sweep.subprocess, "run", fake_multirun)
    spec = SweepSpec(
        ["ddpg"], ["walker"], [1, 2], tmp_path, preset="debug", tasks=["walker_stand"], overrides=TINY
    )
    results = sweep.run_sweep(spec)
    assert [job.seed for job in results["pretrain"].failed] == [2]
    assert [job.seed for job in results["finetune"].launched] == [1]
    assert [job.seed for job in results["finetune"].blocked] == [2]
    assert "seed=1" in launched[-1] and "task=walker_stand" in launched[-1]


def test_a_run_cut_off_before_its_first_checkpoint_is_redone_from_nothing(tmp_path, capsys):
    """Its eval.jsonl would otherwise grow a second copy of the evaluations it already wrote."""
    jobs = [Job("finetune", "ddpg", "walker", seed, "walker_stand", 1000) for seed in (1, 2, 3)]
    stale, resumable, complete = (job.run_dir(tmp_path) for job in jobs)
    for run_dir in (stale, resumable, complete):
        run_dir.mkdir(parents=True)
        (run_dir / "eval.jsonl").write_text('{"frames": 500}\n')
    (resumable / "checkpoint.pt").write_bytes(b"")
    mark_complete(complete, {"frames": 500, "snapshot_frames": 1000, "pretrain_frames": 1000})
    done, pending = sweep.prepare(jobs, tmp_path, PROTOCOL)
    assert done == jobs[2:] and pending == jobs[:2]
    assert not stale.exists() and (resumable / "eval.jsonl").exists()
    assert "cut off before its first checkpoint; redoing it" in capsys.readouterr().out


# -- real sweeps ------------------------------------------------------------------------------------
def run_cli(out: Path, launcher: str, *extra: str) -> tuple[int, str]:
    """``python scripts/sweep.py ...`` run in this process (the multiruns it launches are real
    subprocesses); returns its exit code and what it printed."""
    script = str(ROOT / "scripts" / "sweep.py")
    argv = [script, "--agents", "ddpg", "--domains", "walker", "--preset", "debug", "--out", str(out)]
    argv += ["--launcher", launcher, *extra, "--override", *TINY]
    printed = io.StringIO()
    with mock.patch.object(sys, "argv", argv), contextlib.redirect_stdout(printed):
        try:
            runpy.run_path(script, run_name="__main__")
        except SystemExit as done:
            return int(done.code or 0), printed.getvalue()
    raise AssertionError("scripts/sweep.py did not exit")


def snapshot_of_files(root: Path) -> dict[str, tuple[int, bytes]]:
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.fixture(scope="module")
def joblib_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    code, printed = run_cli(out, "joblib", "--seeds", "1", "--tasks", "walker_stand")
    assert code == 0, printed
    return out, printed


def test_a_joblib_sweep_pretrains_finetunes_and_reports(joblib_sweep, tmp_path):
    out, stdout = joblib_sweep
    assert "pretrain: 0 complete before, 1 launched in 1 multirun(s), 0 failed" in stdout
    assert "finetune: 0 complete before, 1 launched in 1 multirun(s), 0 failed" in stdout
    assert "hydra/launcher=joblib" in stdout
    # one configuration folder per pretraining configuration: <seed>/<config>/snapshot_<frames>.pt
    (snapshot,) = (out / "snapshots" / "ddpg" / "walker" / "seed_1").glob("*/snapshot_1000.pt")
    assert (snapshot.parent / "config.json").is_file()
    run_dir = out / "finetune" / "ddpg" / "walker_stand" / "snapshot_1000" / "seed_1"
    records = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert [(r["frames"], r["snapshot_frames"], r["pretrain_frames"]) for r in records] == [(500, 1000, 1000)]
    assert json.loads((run_dir / "complete.json").read_text())["frames"] == 500
    report = build_report([out], reps=200, improvement_reps=50)
    assert report.tasks == ["walker_stand"] and report.methods["ddpg"].scores.shape == (1, 1)
    assert "| ddpg | measured | 1k / 1k / 500 | 1 x 1 |" in markdown(report)
    assert "left out 4 pretraining (zero-shot) records" in markdown(report)


def test_rerunning_a_complete_sweep_launches_nothing(joblib_sweep, capsys):
    out, _ = joblib_sweep
    before = snapshot_of_files(out)
    spec = SweepSpec(["ddpg"], ["walker"], [1], out, preset="debug", tasks=["walker_stand"], overrides=TINY)
    results = sweep.run_sweep(spec)
    assert [len(r.launched) for r in results.values()] == [0, 0]
    assert [len(r.commands) for r in results.values()] == [0, 0]
    after = snapshot_of_files(out)
    del before["sweep.json"], after["sweep.json"]  # the sweep's own record of its arguments
    assert after == before  # no file written, touched or added: no job ran


def test_a_submitit_local_sweep_resumes_a_cut_off_run_and_adds_a_seed(joblib_sweep, capfd):
    """Seed 1's walker_stand finetune was killed after its last checkpoint; the sweep, now with
    seeds 1 and 2 through submitit's local executor, resumes it without writing its records
    again, pretrains and finetunes seed 2, and leaves seed 1's pretrain alone."""
    out, _ = joblib_sweep
    stand = out / "finetune" / "ddpg" / "walker_stand" / "snapshot_1000" / "seed_1"
    (stand / "complete.json").unlink()
    records = (stand / "eval.jsonl").read_text()
    untouched = snapshot_of_files(out / "pretrain")
    spec = SweepSpec(["ddpg"], ["walker"], [1, 2], out, preset="debug", tasks=["walker_stand"])
    spec.launcher, spec.overrides = "submitit_local", TINY
    results = sweep.run_sweep(spec)
    printed = capfd.readouterr().out
    counts = [(len(r.complete), len(r.launched), len(r.commands), len(r.failed)) for r in results.values()]
    assert counts == [(1, 1, 1, 0), (0, 2, 1, 0)]
    assert "hydra/launcher=submitit_local" in shlex.join(results["finetune"].commands[0])
    assert len(list(out.glob("hydra/finetune_*/.submitit/*/*_result.pkl"))) == 2  # submitit ran both
    assert f"resuming from {stand / 'checkpoint.pt'}" in printed
    assert (stand / "eval.jsonl").read_text() == records
    seed_2 = stand.parent / "seed_2"
    assert [json.loads(line)["frames"] for line in (seed_2 / "eval.jsonl").read_text().splitlines()] == [500]
    now = snapshot_of_files(out / "pretrain")
    assert {key: now[key] for key in untouched} == untouched
    report = build_report([out / "finetune" / "ddpg" / "walker_stand"], reps=200, improvement_reps=50)
    assert report.methods["ddpg"].seeds == [1, 2]
