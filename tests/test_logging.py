"""The logger: TensorBoard events read back, CSV rows, resume without duplicates, progress line."""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from urlb.measure.logging import Logger, format_duration, git_revision, write_run_info


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    accumulator = EventAccumulator(str(run_dir / "tb"))
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def _rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        return list(reader.fieldnames), list(reader)


def _frames(path: Path) -> list[int]:
    return [int(row["frame"]) for row in _rows(path)[1]]


# -- TensorBoard and CSV ----------------------------------------------------------------------
def test_tensorboard_events_read_back_with_tags_steps_and_values(tmp_path):
    with Logger(tmp_path, total_frames=1000, console=False) as logger:
        logger.log("train", {"actor_loss": torch.tensor(0.25), "critic_q": 1.5}, frame=100)
        logger.log("train", {"actor_loss": torch.tensor(0.125), "critic_q": 2.5}, frame=200)
        logger.log("eval", {"episode_return": 321.0}, frame=200)
        logger.log("time", {"fps": 850.0}, frame=200)
    scalars = _scalars(tmp_path)
    assert set(scalars) == {"train/actor_loss", "train/critic_q", "eval/episode_return", "time/fps"}
    assert scalars["train/actor_loss"] == [(100, 0.25), (200, 0.125)]
    assert scalars["train/critic_q"] == [(100, 1.5), (200, 2.5)]
    assert scalars["eval/episode_return"] == [(200, 321.0)]


def test_csv_rows_per_namespace(tmp_path):
    with Logger(tmp_path, total_frames=1000, use_tensorboard=False, console=False) as logger:
        logger.log("train", {"loss": 0.5, "q": torch.tensor(1.0)}, frame=10)
        logger.log("train", {"loss": 0.25, "q": 2}, frame=20)
        logger.log("eval", {"episode_return": 7.5}, frame=20)
    columns, rows = _rows(tmp_path / "train.csv")
    assert columns == ["frame", "loss", "q"]
    assert rows == [{"frame": "10", "loss": "0.5", "q": "1.0"}, {"frame": "20", "loss": "0.25", "q": "2.0"}]
    assert _rows(tmp_path / "eval.csv") == (
        ["frame", "episode_return"],
        [{"frame": "20", "episode_return": "7.5"}],
    )
    assert not (tmp_path / "time.csv").exists()
    assert not (tmp_path / "tb").exists()


def test_csv_header_widens_when_a_new_key_appears(tmp_path):
    with Logger(tmp_path, total_frames=1000, use_tensorboard=False, console=False) as logger:
        logger.log("train", {"loss": 1.0}, frame=1)
        logger.log("train", {"loss": 2.0, "entropy": 0.5}, frame=2)
        logger.log("train", {"entropy": 0.25}, frame=3)
    columns, rows = _rows(tmp_path / "train.csv")
    assert columns == ["frame", "loss", "entropy"]
    assert [(row["loss"], row["entropy"]) for row in rows] == [("1.0", ""), ("2.0", "0.5"), ("", "0.25")]


def test_resume_drops_what_was_logged_after_the_checkpoint(tmp_path):
    with Logger(tmp_path, total_frames=1000, console=False) as first_run:
        for frame in (100, 200, 300, 400, 500):
            first_run.log("train", {"loss": float(frame)}, frame)
            first_run.log("eval", {"episode_return": -float(frame)}, frame)
    # Crashed after frame 500; the last checkpoint was taken at frame 300.
    with Logger(tmp_path, total_frames=1000, console=False, start_frame=300) as resumed:
        resumed.log("train", {"loss": 4000.0}, 400)
        resumed.log("eval", {"episode_return": 4000.0}, 400)
    assert _frames(tmp_path / "train.csv") == [100, 200, 300, 400]
    assert _frames(tmp_path / "eval.csv") == [100, 200, 300, 400]
    assert _rows(tmp_path / "train.csv")[1][-1]["loss"] == "4000.0"
    scalars = _scalars(tmp_path)
    assert scalars["train/loss"] == [(100, 100.0), (200, 200.0), (300, 300.0), (400, 4000.0)]
    assert scalars["eval/episode_return"] == [(100, -100.0), (200, -200.0), (300, -300.0), (400, 4000.0)]


def test_fresh_run_starts_with_empty_history(tmp_path):
    with Logger(tmp_path, total_frames=1000, console=False) as old_run:
        old_run.log("train", {"loss": 1.0}, 0)
        old_run.log("train", {"loss": 2.0}, 100)
    with Logger(tmp_path, total_frames=1000, console=False) as new_run:
        new_run.log("train", {"loss": 3.0}, 0)
    assert _frames(tmp_path / "train.csv") == [0]
    assert _scalars(tmp_path)["train/loss"] == [(0, 3.0)]


# -- metric values ----------------------------------------------------------------------------
def test_tensors_are_converted_to_floats(tmp_path):
    with Logger(tmp_path, total_frames=10, use_tensorboard=False, console=False) as logger:
        with_grad = (torch.ones(3, requires_grad=True) * 2).mean()
        logger.log("train", {"zero_dim": torch.tensor(1.5), "grad": with_grad, "one": torch.tensor([3])}, 1)
    assert _rows(tmp_path / "train.csv")[1] == [
        {"frame": "1", "zero_dim": "1.5", "grad": "2.0", "one": "3.0"}
    ]


def test_bad_metrics_are_refused_with_their_name(tmp_path):
    with Logger(tmp_path, total_frames=10, use_tensorboard=False, console=False) as logger:
        with pytest.raises(ValueError, match=r"train/q is a tensor of shape \(4,\)"):
            logger.log("train", {"q": torch.zeros(4)}, 1)
        with pytest.raises(TypeError, match="train/name is a str"):
            logger.log("train", {"name": "walker"}, 1)
        with pytest.raises(ValueError, match="unknown namespace 'debug'"):
            logger.log("debug", {"loss": 1.0}, 1)
        with pytest.raises(ValueError, match="frame column"):
            logger.log("eval", {"frame": 1.0}, 1)


# -- progress line ----------------------------------------------------------------------------
def test_progress_line_shows_fps_eta_and_extras(tmp_path, capsys):
    clock = FakeClock()
    logger = Logger(tmp_path, 2_000_000, use_tensorboard=False, label="pretrain", clock=clock)
    clock.now += 10.0
    logger.progress(8_500, {"eval/return": torch.tensor(123.4)})
    logger.close()
    line = capsys.readouterr().err
    remaining_s = (2_000_000 - 8_500) / 850
    expected = f"[pretrain] 8,500/2,000,000 frames (0.4%) | 850 fps | ETA {format_duration(remaining_s)}"
    assert line == f"{expected} | eval/return 123.4\n"
    assert format_duration(remaining_s) == "39m03s"


def test_progress_is_rate_limited_and_fps_uses_a_sliding_window(tmp_path, capsys):
    clock = FakeClock()
    logger = Logger(tmp_path, 10_000, use_tensorboard=False, clock=clock, fps_window_s=30.0)
    clock.now += 1.0
    logger.progress(100)
    clock.now += 0.5
    logger.progress(150)  # too soon: skipped
    logger.progress(150, force=True)
    frame = 150
    for frames_per_second in [100] * 60 + [1000] * 40:  # a minute at 100 fps, then 40 s at 1000
        clock.now += 1.0
        frame += frames_per_second
        logger.progress(frame)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 + 1 + 60 + 40
    assert re.search(r"\| 100 fps \|", lines[0])
    assert re.search(r"\| 1,000 fps \| ETA", lines[-1])  # the 30 s window sees only the new speed


def test_progress_before_any_frames_and_silent_console(tmp_path, capsys):
    clock = FakeClock()
    logger = Logger(tmp_path, 1000, use_tensorboard=False, clock=clock)
    logger.progress(0)
    assert capsys.readouterr().err == "[run] 0/1,000 frames (0.0%) | ? fps | ETA ?\n"
    quiet = Logger(tmp_path, 1000, use_tensorboard=False, console=False, clock=clock)
    quiet.progress(500, force=True)
    assert capsys.readouterr().err == ""


def _eta_lines(clock, logger, phases, log_every=1000):
    """Log as the online loop does (``time/updates``, then a progress line) every ``log_every``
    frames through ``phases``: ``(frames, frames per second, updates per frame)``."""
    frame, updates = 0, 0
    for frames, fps, updates_per_frame in phases:
        for _ in range(frames // log_every):
            clock.now += log_every / fps
            frame += log_every
            updates += int(log_every * updates_per_frame)
            logger.log("time", {"fps": fps, "updates": updates}, frame)
            logger.progress(frame)
    logger.close()


def test_eta_does_not_extrapolate_seed_frames_issue_23(tmp_path, capsys):
    """Issue 23: the README's first command printed "ETA 21m" during the 4,000 seed frames (random
    actions at ~1,600 fps) and "ETA 111h" at the first update. Seed frames give no ETA now, and the
    first ETA is the update phase's own, whatever the window held before."""
    clock = FakeClock()
    logger = Logger(tmp_path, 2_000_000, use_tensorboard=False, label="pretrain", clock=clock)
    _eta_lines(clock, logger, [(4_000, 1_600, 0.0), (6_000, 5.0, 0.5)])
    lines = capsys.readouterr().err.splitlines()
    seed = [line for line in lines if int(line.split()[1].split("/")[0].replace(",", "")) <= 4_000]
    assert seed and all(line.endswith("ETA ? (no update yet)") for line in seed)
    update_etas = [line.rsplit("ETA ", 1)[1] for line in lines[len(seed) :]]
    assert update_etas[0] == format_duration((2_000_000 - 5_000) / 5.0)  # 110h50m00s
    assert update_etas[-1] == format_duration((2_000_000 - 10_000) / 5.0)


def test_first_eta_after_seed_frames_ignores_them_inside_the_window(tmp_path, capsys):
    # Many worlds: the seed frames and the first update-phase frames fit in one 30 s window; the
    # rate at the first update-phase line must still be the update phase's 50 fps, not a blend.
    clock = FakeClock()
    logger = Logger(tmp_path, 1_000_000, use_tensorboard=False, clock=clock, fps_window_s=30.0)
    _eta_lines(clock, logger, [(4_000, 1_000, 0.0), (1_000, 50, 0.5)])
    last = capsys.readouterr().err.splitlines()[-1]
    assert "| 50 fps |" in last
    assert last.endswith(f"ETA {format_duration((1_000_000 - 5_000) / 50)}")


@pytest.mark.parametrize(("seconds", "text"), [(42.4, "42s"), (2334, "38m54s"), (11112, "3h05m12s")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


# -- run directory ----------------------------------------------------------------------------
def test_write_run_info_records_resolved_config_and_git_revision(tmp_path):
    config = OmegaConf.create(
        {"agent": {"name": "ddpg", "lr": 1e-4}, "seed": 3, "tag": "${agent.name}_${seed}"}
    )
    info = write_run_info(tmp_path, config, extra={"snapshot": "none"})
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == {
        "agent": {"name": "ddpg", "lr": 1e-4},
        "seed": 3,
        "tag": "ddpg_3",
    }
    saved = json.loads((tmp_path / "run.json").read_text())
    assert saved == info
    assert {"git_revision", "git_dirty", "hostname", "python", "torch", "start_time", "command"} <= set(saved)
    assert saved["snapshot"] == "none" and saved["torch"] == torch.__version__
    repository = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(repository), "rev-parse", "HEAD"], capture_output=True, text=True)
    expected = head.stdout.strip() if head.returncode == 0 else "unknown"
    assert saved["git_revision"] == expected


def test_write_run_info_accepts_a_plain_dict(tmp_path):
    write_run_info(tmp_path, {"seed": 1, "agent": {"name": "sac"}})
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == {"seed": 1, "agent": {"name": "sac"}}
    with pytest.raises(ValueError, match="git_revision"):
        write_run_info(tmp_path, {"seed": 1}, extra={"git_revision": "mine"})


def test_git_revision_outside_a_checkout_is_unknown(tmp_path):
    assert git_revision(tmp_path) == ("unknown", None)
