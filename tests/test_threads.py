"""torch's CPU threads chosen per run (issue 23): the rule, the override, the print, and the env
keeping its own torch work off MuJoCo's pool."""

from __future__ import annotations

import os

import pytest
import torch
from omegaconf import OmegaConf

from envs import make_env
from urlb.run.build import prepare_process
from urlb.run.threads import busy_cores, choose_threads, mujoco_pool_threads, others_busy


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("num_envs", "backend", "device", "cores", "busy", "threads"),
    [
        (1, "cpu", "cpu", 2, 0.2, 2),  # DDPG at 1 world, idle: 1.14-1.34x with 2 threads
        (1, "cpu", "cpu", 2, 7.5, 1),  # ... with other runs on the machine: 3-6 frames/s with 2, 31-89 with 1
        (16, "cpu", "cpu", 2, 0.0, 2),  # the pool steps between updates: 1.40-1.59x with 2 threads
        (256, "cpu", "cpu", 2, 0.0, 2),
        (256, "cpu", "cpu", 2, 1.0, 1),  # another process holds a core
        (4, "cpu", "cpu", 16, 0.0, 16),
        (4, "cpu", "cpu", 16, 6.0, 10),  # less what other processes hold
        (1, "auto", "cpu", 8, 0.0, 8),
        (64, "auto", "cpu", 8, 0.0, 8),
        (64, "warp", "cpu", 2, 0.0, 2),  # Warp's CPU device runs kernels on one thread
        (4096, "warp", "cuda", 16, 0.0, 16),
        (4096, "auto", "cuda", 16, 40.0, 1),
    ],
)
def test_choose_threads(num_envs, backend, device, cores, busy, threads):
    chosen, why = choose_threads(num_envs, backend, device, cores, busy)
    assert chosen == threads and why


def test_pool_threads_match_the_cpu_backend():
    assert make_env("walker_stand", 3, backend="cpu").backend.nthread == mujoco_pool_threads(
        3, os.cpu_count()
    )


def _plan(threads, num_envs=1, backend="cpu"):
    return OmegaConf.create(
        {
            "device": "cpu",
            "seed": 0,
            "backend": backend,
            "threads": threads,
            "protocol": {"num_envs": num_envs},
        }
    )


def test_prepare_process_applies_auto_and_prints_the_choice(capsys, monkeypatch):
    monkeypatch.setattr("urlb.run.threads.available_cores", lambda: 2)
    monkeypatch.setattr("urlb.run.threads.busy_cores", lambda: 0.1)
    prepare_process(_plan("auto", num_envs=1))
    assert torch.get_num_threads() == 2
    prepare_process(_plan("auto", num_envs=256))
    assert torch.get_num_threads() == 2
    monkeypatch.setattr("urlb.run.threads.busy_cores", lambda: 1.2)
    prepare_process(_plan("auto", num_envs=256))
    assert torch.get_num_threads() == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("[threads] torch uses 2 CPU threads (1 world, no MuJoCo pool: 2 of 2 cores")
    assert out[1].startswith(
        "[threads] torch uses 2 CPU threads (2 of 2 cores for the updates; MuJoCo's pool"
    )
    assert (
        out[2].startswith("[threads] torch uses 1 CPU thread (1 of 2 cores for the updates")
        and "1 busy" in out[2]
    )


def test_an_int_overrides_and_null_keeps_torch_default(capsys):
    prepare_process(_plan(3, num_envs=256))
    assert torch.get_num_threads() == 3
    torch.set_num_threads(2)
    prepare_process(_plan(None))
    assert torch.get_num_threads() == 2
    assert "threads=null" in capsys.readouterr().out


@pytest.mark.parametrize("bad", [0, -1, "two", True])
def test_bad_thread_settings_are_refused(bad):
    with pytest.raises(ValueError, match="threads="):
        prepare_process(_plan(bad))


def test_collect_configs_name_their_worlds_at_the_top(capsys, monkeypatch):
    monkeypatch.setattr("urlb.run.threads.busy_cores", lambda: 0.0)
    plan = OmegaConf.create({"device": "cpu", "seed": 0, "backend": "cpu", "threads": "auto", "num_envs": 1})
    prepare_process(plan)
    assert "1 world" in capsys.readouterr().out


def test_env_step_runs_its_torch_work_on_one_thread_and_restores_the_callers():
    env = make_env("quadruped_walk", 4, backend="cpu", nthread=2)
    assert env.torch_threads == 1
    seen = []
    observe = env.observe
    env.observe = lambda view: seen.append(torch.get_num_threads()) or observe(view)
    torch.set_num_threads(2)
    env.reset()
    env.step(torch.zeros(4, env.action_dim))
    assert seen[-1] == 1 and torch.get_num_threads() == 2
    one_world = make_env("walker_stand", 1, backend="cpu")
    assert one_world.torch_threads is None  # no pool: the caller's threads are not touched


def test_others_busy_from_two_samples():
    """Per core (busy ticks, all ticks): core 0 busy 50 of 100 ticks, core 1 all 100; this
    process used 0.5 of a core, so other processes kept 1.0 busy. A core with no ticks counts 0."""
    before = {0: (1000, 5000), 1: (2000, 5000), 2: (7, 9)}
    after = {0: (1050, 5100), 1: (2100, 5100), 2: (7, 9)}
    assert others_busy(before, after, own=0.5) == pytest.approx(1.0)
    assert others_busy(before, after, own=3.0) == 0.0  # never below zero


def test_busy_cores_sees_a_spinning_process():
    """Regression (issue 23's thread table): the 1-minute load average counted a run that had
    just ended as busy, so the next run at one world took one thread on an idle machine. The
    measure is of now: a process spinning beside this one counts (this process's own time is
    subtracted: test_others_busy_from_two_samples)."""
    import subprocess
    import sys

    code = "import time\nend = time.time() + 3\nwhile time.time() < end: pass"
    spinner = subprocess.Popen([sys.executable, "-c", code])
    try:
        busy = busy_cores(window_s=0.5)
    finally:
        spinner.kill()
        spinner.wait()
    assert busy >= 0.6
