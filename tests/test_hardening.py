"""Issue 22, hardening: a snapshot is data, never code; no run loses or mixes another's results.

One test (or a few) per item of the issue, each failing on the code before it: a crafted
snapshot refused with no file written (1), two configurations' snapshots kept apart and a
lookup that asks which (2), a finished run never restarted (3), rewrites that survive a crash
(4), a torn last record line (5), one run per folder (6), the finetune folder of each
pretraining seed (7), a divergence on a checkpoint frame (8), oversize runs refused before any
allocation (9), the config's values checked at the start (10), a full disk and stray temp files
(11). Runs are the debug preset cut to 20 frames of 2 jaco worlds, run in this process.
"""

from __future__ import annotations

import errno
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from urlb.data.checkpoint import (
    SnapshotAmbiguousError,
    checkpoint_path,
    load_snapshot,
    save_snapshot,
)
from urlb.data.records import (
    DiskFullError,
    RecordsError,
    append_record,
    keep_records_until,
    mark_complete,
    write_atomically,
)
from urlb.run.folder import FolderBusyError, FolderLock, RunFolderError, open_run
from urlb.run.plan import build_plan, write_plan
from urlb.run.resolvers import register_resolvers
from urlb.run.schema import ConfigError

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = str(ROOT / "configs")
# 20 frames of 2 jaco worlds (250-step episodes keep the one evaluation short), a checkpoint
# every 10 frames, one snapshot at the end: seconds on a CPU.
TINY = [
    "preset=debug",
    "backend=cpu",
    "device=cpu",
    "threads=1",
    "tensorboard=false",
    "console=false",
    "protocol.num_envs=2",
    "protocol.eval_episodes=1",
    "protocol.seed_frames=10",
    "protocol.checkpoint_every_frames=10",
    "skill_eval.rollouts=0",
]
PRETRAIN = ["env=jaco", "protocol.pretrain_frames=20", "protocol.snapshot_frames=[20]"]
FINETUNE = ["task=jaco_reach_top_left", "protocol.finetune_frames=20"]


def composed(config: str, *overrides: str):
    register_resolvers()
    with initialize_config_dir(config_dir=CONFIGS, version_base=None):
        cfg = compose(config, overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def pretrain(run_dir: Path, snapshots: Path, *overrides: str) -> dict:
    from urlb.run.pretrain import main

    cfg = composed(
        "pretrain",
        "agent=ddpg",
        *TINY,
        *PRETRAIN,
        f"run_dir={run_dir}",
        f"snapshot_root={snapshots}",
        *overrides,
    )
    return main(cfg, "ddpg")


def finetune(run_dir: Path, snapshots: Path, *overrides: str) -> dict:
    from urlb.run.finetune import main

    cfg = composed(
        "finetune",
        "agent=ddpg",
        *TINY,
        *FINETUNE,
        f"run_dir={run_dir}",
        f"snapshot_root={snapshots}",
        *overrides,
    )
    return main(cfg, "ddpg")


def files_of(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``folder`` (its lock file aside) with its mtime and content."""
    return {
        str(path.relative_to(folder)): (path.stat().st_mtime_ns, path.read_bytes())
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != ".lock"
    }


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> Path:
    """One complete tiny pretraining: ``root/pre`` and its snapshot under ``root/snapshots``."""
    root = tmp_path_factory.mktemp("pretrained")
    pretrain(root / "pre", root / "snapshots")
    return root


# -- 1: a snapshot is data -----------------------------------------------------------------------------------
def crafted_snapshots(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Snapshots that ``torch.load(weights_only=True)`` accepts whose stored agent config would
    write files (numpy.savetxt, builtins.open "w") or read the environment if instantiated."""
    configs = {
        "savetxt": (
            {"_target_": "numpy.savetxt", "fname": str(tmp_path / "written.txt"), "X": [[1.0]]},
            "agents",
        ),
        "open": (
            {
                "_target_": "agents.ddpg.DDPGAgent",
                "reward_model": {
                    "_target_": "builtins.open",
                    "file": str(tmp_path / "victim.txt"),
                    "mode": "w",
                },
            },
            "agents",
        ),
        "interpolation": (
            {"_target_": "agents.ddpg.DDPGAgent", "hidden_dim": "${oc.env:HOME}"},
            "interpolation",
        ),
    }
    made = {}
    for name, (agent, error) in configs.items():
        config = {"agent": agent, "obs": {"type": "states"}, "run_dir": str(tmp_path / "elsewhere")}
        payload = {
            "agent": {},
            "agent_name": "ddpg",
            "domain": "jaco",
            "seed": 1,
            "frames": 20,
            "config": config,
        }
        made[name] = (save_snapshot(tmp_path / f"{name}.pt", payload), error)
    return made


def test_a_crafted_snapshot_is_refused_and_writes_no_file(tmp_path, monkeypatch):
    from urlb.run.collect import collect_from_config

    (tmp_path / "victim.txt").write_text("precious")
    for name, (path, error) in crafted_snapshots(tmp_path).items():
        with pytest.raises(ValueError, match=error):
            finetune(tmp_path / "fine", tmp_path, f"snapshot={path}")
        with initialize_config_dir(config_dir=CONFIGS, version_base=None):
            cfg = compose(
                "collect",
                overrides=[
                    "env=jaco",
                    "backend=cpu",
                    "device=cpu",
                    "policy=snapshot",
                    f"snapshot={path}",
                    f"out={tmp_path / 'data'}",
                ],
            )
        with pytest.raises(ValueError, match=error):
            collect_from_config(cfg)
        script = str(ROOT / "scripts" / "skill_report.py")
        monkeypatch.setattr(
            sys, "argv", [script, str(path), "--out", str(tmp_path / "report"), "--backend", "cpu"]
        )
        with pytest.raises(ValueError, match=error):
            runpy.run_path(script, run_name="__main__")
        assert not (tmp_path / "written.txt").exists(), name
        assert (tmp_path / "victim.txt").read_text() == "precious", name
        for made in ("fine", "data", "report", "elsewhere"):
            assert not (tmp_path / made).exists(), (name, made)


# -- 2: snapshots belong to their configuration --------------------------------------------------------------
def test_two_configurations_keep_their_snapshots_and_a_lookup_asks_which(pretrained, tmp_path):
    snapshots = tmp_path / "snapshots"
    shutil.copytree(pretrained / "snapshots", snapshots)
    (first,) = snapshots.glob("ddpg/jaco/seed_1/*/snapshot_20.pt")
    before = first.read_bytes()
    pretrain(tmp_path / "other_lr", snapshots, "agent.lr=1e-3")  # another run_dir and another lr
    found = sorted(snapshots.glob("ddpg/jaco/seed_1/*/snapshot_20.pt"))
    assert len(found) == 2 and first in found and first.read_bytes() == before  # nothing replaced
    with pytest.raises(
        SnapshotAmbiguousError,
        match=r"snapshot=20 matches 2 configurations.*agent\.lr=0\.0001.*snapshot=<path>",
    ):
        finetune(tmp_path / "fine", snapshots, "snapshot=20")
    assert not (tmp_path / "fine").exists()
    finetune(tmp_path / "fine", snapshots, f"snapshot={first}")  # the one named by its path
    (record,) = [json.loads(line) for line in (tmp_path / "fine" / "eval.jsonl").read_text().splitlines()]
    assert record["snapshot_frames"] == 20 and record["snapshot_seed"] == 1
    config = json.loads((first.parent / "config.json").read_text())
    assert config["agent"]["lr"] == 1e-4 and config["written_by"] == str(pretrained / "pre")


# -- 3: a finished run is never restarted --------------------------------------------------------------------
def test_a_finished_run_is_never_restarted(pretrained):
    run_dir = pretrained / "pre"
    before = files_of(run_dir)
    assert "complete.json" in before and "checkpoint.pt" in before
    assert pretrain(run_dir, pretrained / "snapshots", "resume=true") == {}
    with pytest.raises(RunFolderError, match="holds a complete run.*never redone.*another run_dir"):
        pretrain(run_dir, pretrained / "snapshots")
    assert files_of(run_dir) == before


def test_records_without_a_checkpoint_are_refused_with_the_choice(tmp_path):
    run_dir = tmp_path / "cut"
    run_dir.mkdir()
    (run_dir / "eval.jsonl").write_text('{"frames": 20, "task": "jaco_reach_top_left"}\n')
    before = files_of(run_dir)
    for resume in ("resume=false", "resume=true"):
        with pytest.raises(
            RunFolderError, match=r"no checkpoint.pt to continue from.*rm -r .*another run_dir"
        ):
            pretrain(run_dir, tmp_path / "snapshots", resume)
    assert files_of(run_dir) == before


# -- 4: every rewrite is atomic ------------------------------------------------------------------------------
def test_every_rewrite_survives_a_crash_before_its_rename(tmp_path, monkeypatch):
    """A crash hook (KeyboardInterrupt, as a kill would land) just before each writer's rename:
    the file keeps its old content and no temp file stays; and a rewrite that succeeds is a new
    file renamed in (another inode), never the old one edited in place."""
    run_dir = tmp_path / "run"
    cfg = composed(
        "pretrain", "agent=ddpg", *TINY, *PRETRAIN, f"run_dir={run_dir}", f"snapshot_root={tmp_path}"
    )
    plan, _ = build_plan(cfg, "pretrain", "ddpg")
    run_dir.mkdir()
    records = '{"frames": 10}\n{"frames": 20}\n'
    files = {"eval.jsonl": records, "complete.json": "old", "config.yaml": "old", "run.json": "old"}
    files |= {"skill_selection.json": "old"}
    for name, text in files.items():
        (run_dir / name).write_text(text)
    save_snapshot(checkpoint_path(run_dir), {"clock": 10})
    writers = {
        "eval.jsonl": lambda: keep_records_until(run_dir / "eval.jsonl", "frames", 10),
        "complete.json": lambda: mark_complete(run_dir, {"frames": 20}),
        "config.yaml": lambda: write_plan(plan),
        "checkpoint.pt": lambda: save_snapshot(checkpoint_path(run_dir), {"clock": 20}),
        "skill_selection.json": lambda: write_atomically(run_dir / "skill_selection.json", "new"),
    }
    before = files_of(run_dir)

    def crash(*args):
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(os, "replace", crash)
        for write in writers.values():
            with pytest.raises(KeyboardInterrupt):
                write()
    assert files_of(run_dir) == before  # every file as it was, and no temp file left
    for name, write in writers.items():
        inode = (run_dir / name).stat().st_ino
        write()
        assert (run_dir / name).stat().st_ino != inode, f"{name} was rewritten in place"
    assert (run_dir / "eval.jsonl").read_text() == '{"frames": 10}\n'
    assert load_snapshot(checkpoint_path(run_dir))["clock"] == 20
    assert (run_dir / "config.yaml").read_text() != "old" and "git_revision" in (
        run_dir / "run.json"
    ).read_text()


# -- 5: a torn last line -------------------------------------------------------------------------------------
def test_resume_drops_a_torn_last_line_and_refuses_a_corrupt_one(tmp_path, capsys):
    path = tmp_path / "eval.jsonl"
    path.write_text('{"frames": 10}\n{"frames": 20}\n{"frames": 30, "ret')  # disk full mid-line
    keep_records_until(path, "frames", 20)
    assert path.read_text() == '{"frames": 10}\n{"frames": 20}\n'
    assert f"{path}: dropped a torn last line" in capsys.readouterr().out
    path.write_text('{"frames": 10}\n{"frames": 2\n{"frames": 30}\n')
    with pytest.raises(RecordsError, match=f"{path}:2: not a JSON record"):
        keep_records_until(path, "frames", 30)
    # a resume is refused by it before anything in the folder is touched
    cfg = composed("pretrain", "agent=ddpg", *TINY, *PRETRAIN, f"run_dir={tmp_path}", "resume=true")
    plan, _ = build_plan(cfg, "pretrain", "ddpg")
    save_snapshot(checkpoint_path(tmp_path), {"clock": 30})
    before = files_of(tmp_path)
    with pytest.raises(RecordsError, match=f"{path}:2"):
        with open_run(plan, "pretrain"):
            pass
    assert files_of(tmp_path) == before


# -- 6: one run per folder -----------------------------------------------------------------------------------
def test_a_second_run_in_a_busy_folder_is_refused_before_writing(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("the first run's plan\n")
    (run_dir / "run.json").write_text("{}\n")
    before = files_of(run_dir)
    with FolderLock(run_dir, "run_dir"):  # the first run, still running
        with pytest.raises(
            FolderBusyError, match=rf"{run_dir} is in use by another run \(pid {os.getpid()} on "
        ):
            pretrain(run_dir, tmp_path / "snapshots")
    assert files_of(run_dir) == before


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path, capsys):
    """A process that took the lock as urlb.run.folder does and died without releasing it."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    died = textwrap.dedent(
        f"""
        import fcntl, json, os, socket
        descriptor = os.open({str(run_dir / ".lock")!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder = {{"pid": os.getpid(), "host": socket.gethostname(), "started": "then", "command": "x"}}
        os.write(descriptor, json.dumps(holder).encode())
        os._exit(0)
        """
    )
    subprocess.run([sys.executable, "-c", died], check=True)
    holder = json.loads((run_dir / ".lock").read_text())
    with FolderLock(run_dir, "run_dir", "pretrain"):
        printed = capsys.readouterr().out
    assert (
        f"stale lock of a run that died (pid {holder['pid']} on" in printed and "which has exited" in printed
    )
    assert (run_dir / ".lock").read_text() == ""  # released cleanly


def test_hydra_writes_nothing_in_the_run_folder():
    for config, extra in (("pretrain", []), ("finetune", ["task=walker_stand", "snapshot=2M"])):
        hydra = composed(config, *extra).hydra
        assert hydra.output_subdir is None and hydra.run.dir == "."
        assert all("filename" not in handler for handler in hydra.job_logging.handlers.values())


# -- 7: the finetune folder names the pretraining seed -------------------------------------------------------
def test_finetunes_of_different_pretraining_seeds_have_their_own_folders():
    folders = {
        seed: composed(
            "finetune", "task=walker_stand", "snapshot=2M", "seed=1", f"snapshot_seed={seed}"
        ).run_dir
        for seed in (1, 2)
    }
    assert folders[1] != folders[2] and "pretrain_seed_2/seed_1" in folders[2]


# -- 8: divergence -------------------------------------------------------------------------------------------
def diverging_loop(run_dir: Path):
    """DDPG with lr=1e10 on 2 walker worlds: its first update, at frame 100, is on a checkpoint
    frame (one every 50 frames) and puts 1e10 in the critic with every loss still finite."""
    from agents.ddpg import DDPGAgent
    from envs import make_env
    from urlb.data.replay import ReplayBuffer
    from urlb.loop.online import OnlineLoop, Schedule
    from urlb.measure.logging import Logger

    torch.manual_seed(0)
    env = make_env("walker_stand", 2, backend="cpu", seed=0)
    agent = DDPGAgent(env.obs_dim, env.action_dim, hidden_dim=16, batch_size=16, lr=1e10)
    schedule = Schedule(200, 100, 0.5, 10_000, 1000, 50)
    logger = Logger(run_dir, 200, use_tensorboard=False, console=False)
    replay = ReplayBuffer(1000, 2, "cpu", nstep=3)
    return OnlineLoop(env, None, agent, replay, logger, schedule, run_dir, 0, {}, task="walker_stand")


def test_a_divergence_on_a_checkpoint_frame_keeps_the_last_good_checkpoint(tmp_path):
    from urlb.loop.base import NonFiniteLossError

    loop = diverging_loop(tmp_path)
    with pytest.raises(
        NonFiniteLossError,
        match=r"critic\.\S+ reaches 1\.0e\+10 .* frame 100 \(update 1\).*last good checkpoint \(frame 50\)",
    ):
        loop.run()
    assert load_snapshot(checkpoint_path(tmp_path))["clock"] == 50
    # acting with non-finite weights names the frame and the cause
    with torch.no_grad():
        loop.agent.actor.policy[0].weight.fill_(float("nan"))
    with pytest.raises(
        NonFiniteLossError,
        # TruncatedNormal's argument check (ValueError) or, where the noise hook skips it, the
        # env's refusal of the non-finite action (RuntimeError)
        match=r"could not act at frame 100 .*actor\.\S+ is not finite.*(ValueError: Expected parameter loc"
        r"|RuntimeError: action contains NaN)",
    ):
        loop.collect()


def test_a_resume_with_another_learning_rate_is_refused_naming_it(tmp_path):
    cfg = composed("pretrain", "agent=ddpg", *TINY, *PRETRAIN, f"run_dir={tmp_path}")
    plan, _ = build_plan(cfg, "pretrain", "ddpg")
    tmp_path.mkdir(exist_ok=True)
    write_plan(plan)
    save_snapshot(checkpoint_path(tmp_path), {"clock": 10})
    cfg = composed(
        "pretrain",
        "agent=ddpg",
        *TINY,
        *PRETRAIN,
        f"run_dir={tmp_path}",
        "resume=true",
        "agent.lr=1e-3",
        "console=true",
    )
    changed, _ = build_plan(cfg, "pretrain", "ddpg")
    with pytest.raises(
        RunFolderError,
        match=r"differs from the one .* started with \(config.yaml\): agent\.lr 0\.0001 -> 0\.001, ",
    ):
        with open_run(changed, "pretrain"):
            pass
    cfg = composed(
        "pretrain", "agent=ddpg", *TINY, *PRETRAIN, f"run_dir={tmp_path}", "resume=true", "console=true"
    )
    with open_run(build_plan(cfg, "pretrain", "ddpg")[0], "pretrain") as start:  # only the console changed
        assert start.state == {"clock": 10}


# -- 9: sizes refused before any allocation ------------------------------------------------------------------
def test_oversize_runs_are_refused_before_any_allocation(tmp_path):
    """In a fresh process whose peak resident memory is read at the end: the three runs of the
    issue, on a host said to have 4 GiB free, are refused with the figure and a size that fits,
    and nothing big was ever allocated (before: 3e8 allocated 4 GB before its refusal)."""
    script = textwrap.dedent(
        f"""
        import json, resource, sys
        sys.path.insert(0, {str(ROOT / "tests")!r})
        import urlb.data.memory as memory
        memory.available_memory = lambda device: 4 * 2**30
        from test_hardening import composed, TINY
        from urlb.run.pretrain import main
        messages = []
        for extra in (["replay.capacity=1e12"], ["replay.capacity=3e8"], ["protocol.num_envs=100000"]):
            cfg = composed("pretrain", "agent=ddpg", *TINY, "env=walker", "run_dir={tmp_path}/run", *extra)
            try:
                main(cfg, "ddpg")
                messages.append(None)
            except ValueError as error:
                messages.append(str(error))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({{"messages": messages, "peak": peak}}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    capacity, capacity_3e8, worlds = out["messages"]
    assert re.match(
        r"this run needs about [\d.]+ GiB on cpu \(worlds .*replay [\d.]+ GiB \(1000000000000 transitions",
        capacity,
    )
    assert "lower replay.capacity (e.g. replay.capacity=" in capacity
    assert "(e.g. replay.capacity=" in capacity_3e8 and "300000000 transitions" in capacity_3e8
    assert "worlds 2" in worlds and "(e.g. protocol.num_envs=" in worlds and "cpu has 4.0 GiB free" in worlds
    assert all("\n" not in message and "nothing was allocated" in message for message in out["messages"])
    assert out["peak"] < 1.5e9, (
        f"peak resident memory {out['peak'] / 1e9:.1f} GB: something big was allocated"
    )
    assert not (tmp_path / "run").exists()


# -- 10: the config's values, once, at the start -------------------------------------------------------------
@pytest.mark.parametrize(
    "override, message",
    [
        (
            "protocol.pretrain_frames=abc",
            "protocol.pretrain_frames='abc' is not a whole number of frames; set a value of at least 1",
        ),
        ("protocol.pretrain_frames=-5", "protocol.pretrain_frames=-5 is below 1; set a value of at least 1"),
        ("protocol.pretrain_frames=0", "protocol.pretrain_frames=0 is below 1"),
        (
            "protocol.pretrain_frames=2500.5",
            "protocol.pretrain_frames=2500.5 is not a whole number of frames; set a value of at least 1, "
            "e.g. protocol.pretrain_frames=2500",
        ),
        ("seed=-1", "seed=-1 is below 0; set a value in 0..4294967295, e.g. seed=1"),
        ("protocol.finetune_frames=0", "protocol.finetune_frames=0 is below 1"),
        ("replay.capacity=1e3.5", "replay.capacity='1e3.5' is not a whole number of transitions"),
    ],
)
def test_bad_values_are_refused_in_one_line_before_any_folder(tmp_path, override, message):
    with pytest.raises(ConfigError) as raised:
        pretrain(tmp_path / "run", tmp_path / "snapshots", override)
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)
    assert not any(tmp_path.iterdir())


# -- 11: a full disk, and what killed writers leave ----------------------------------------------------------
def test_a_full_disk_says_so_with_the_path_and_the_size(tmp_path, monkeypatch):
    """Simulated: the file writer fails with ENOSPC inside torch.save, which wraps it in its
    stream writer's RuntimeError (as the issue's ``[enforce fail at inline_container.cc:672]``)."""
    path = save_snapshot(tmp_path / "checkpoint.pt", {"clock": 1})
    real_save = torch.save

    def full_disk(payload, file, *args, **kwargs):
        class Full:
            def write(self, data):
                raise OSError(errno.ENOSPC, "No space left on device")

        try:
            real_save(payload, Full())
        except OSError as error:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos") from error

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(DiskFullError, match=rf"no space left on device: {path} needs about 4\.0 MB"):
        save_snapshot(path, {"clock": 2, "replay": torch.zeros(1_000_000)})
    monkeypatch.undo()
    assert load_snapshot(path)["clock"] == 1 and sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint.pt"
    ]


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 1 MB tmpfs, where this test may mount one (root in a container that allows it)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if result.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({result.stderr.strip() or 'mount failed'}); "
            "the simulated test covers a full disk"
        )
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_real_full_disk_keeps_the_old_file(small_tmpfs, capsys):
    path = save_snapshot(small_tmpfs / "checkpoint.pt", {"clock": 1})
    message = rf"^no space left on device: {path} needs about 4\.0 MB; [\d.]+ [kM]B free there"
    with pytest.raises(DiskFullError, match=message):
        save_snapshot(path, {"clock": 2, "replay": torch.zeros(1_000_000)})
    assert load_snapshot(path)["clock"] == 1 and [p.name for p in small_tmpfs.iterdir()] == ["checkpoint.pt"]
    records, ballast = small_tmpfs / "eval.jsonl", small_tmpfs / "ballast"
    ballast.write_bytes(bytes(500_000))
    with pytest.raises(DiskFullError, match=f"^no space left on device: {records} needs about 100"):
        for frames in range(10):
            append_record(records, {"frames": frames, "filler": "x" * 100_000})
    ballast.unlink()  # space freed; then a resume drops the torn last line and keeps the rest
    keep_records_until(records, "frames", 10)
    assert "dropped a torn last line" in capsys.readouterr().out
    kept = [json.loads(line)["frames"] for line in records.read_text().splitlines()]
    assert kept == list(range(len(kept))) and 3 <= len(kept) <= 5


def test_stray_temp_files_of_dead_writers_are_removed_at_the_next_start(tmp_path, capsys):
    run_dir, snapshots = tmp_path / "run", tmp_path / "snapshots" / "ddpg" / "jaco" / "seed_1" / "0123abcd00"
    stray = [
        run_dir / ".checkpoint.pt.1a2b3c4d.tmp",
        run_dir / ".complete.json.5e6f7a8b.tmp",
        run_dir / ".eval.jsonl.9c0d1e2f.tmp",
        run_dir / ".train.csv.tmp",
        run_dir / "skills" / ".coverage.jsonl.0a1b2c3d.tmp",
        snapshots / ".snapshot_2000.pt.4e5f6a7b.tmp",
    ]
    for path in stray:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 1000)
    (run_dir / ".plan.0a0b0c0d.tmp").mkdir()
    kept = [run_dir / "config.yaml", snapshots / "snapshot_1000.pt", snapshots / "config.json"]
    for path in kept:
        path.write_text("kept")
    cfg = composed("pretrain", "agent=ddpg", *TINY, *PRETRAIN, f"run_dir={run_dir}")
    plan, _ = build_plan(cfg, "pretrain", "ddpg")
    with open_run(plan, "pretrain", also_lock=[snapshots]) as start:
        assert start.fresh
    assert not any(path.exists() for path in stray) and not (run_dir / ".plan.0a0b0c0d.tmp").exists()
    assert all(path.read_text() == "kept" for path in kept)
    printed = capsys.readouterr().out
    assert f"removed 6 temp file(s) that killed writers left in {run_dir}" in printed
    assert f"removed 1 temp file(s) that killed writers left in {snapshots}" in printed
