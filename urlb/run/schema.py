"""The typed schema of a run's configuration, checked once on the resolved config before
anything is built and before any folder is made (:func:`check_config`, called by
:func:`urlb.run.plan.build_plan`).

Each section of ``configs/pretrain.yaml`` and ``configs/finetune.yaml`` (and the presets) is a
dataclass below; a field's type says what a value may be and its metadata the bounds and an
example. A value of the wrong kind (``protocol.pretrain_frames=abc``), out of bounds (``seed=-1``,
zero or negative frame counts) or not whole (``2500.5`` frames) is refused in one line that
names the key and a value that works. Whole numbers written as floats (``replay.capacity=3e8``,
which Hydra reads as a float) become ints. The agent's own keys (``agent.*``) are its class's
constructor arguments and are checked there; keys no section declares pass through.

Imports: urlb.data.checkpoint (frame counts); nothing that builds.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Literal

from urlb.data.checkpoint import is_frame_count, parse_frames

SEED_MAX = 2**32 - 1  # numpy's and the env's seeds are unsigned 32-bit


class ConfigError(ValueError):
    """A configuration value the run cannot use; the message (one line) names the key and a fix."""


def whole(minimum: int, example: int, maximum: int | None = None, unit: str = "", optional: bool = False):
    """A whole-number field of at least ``minimum`` (and at most ``maximum``); ``optional``: the
    key may be absent."""
    meta = {"min": minimum, "max": maximum, "example": example, "unit": unit, "optional": optional}
    return field(default=None, metadata=meta)


def number(minimum: float, example: float, maximum: float | None = None, above: bool = False):
    """A real-number field of at least ``minimum`` (above it, with ``above``)."""
    return field(default=None, metadata={"min": minimum, "max": maximum, "example": example, "above": above})


def plain(example: Any = None, optional: bool = False):
    return field(default=None, metadata={"example": example, "optional": optional})


@dataclass
class Protocol:
    """``protocol.*``: the frame budgets and schedules, in frames over all worlds."""

    pretrain_frames: int = whole(1, 2_000_000, unit="frames")
    snapshot_frames: list[int] = whole(1, 100_000, unit="frames")
    finetune_frames: int = whole(1, 100_000, unit="frames")
    seed_frames: int = whole(0, 4000, unit="frames")
    eval_every_frames: int = whole(0, 10_000, unit="frames")  # 0: at the end only
    eval_episodes: int = whole(1, 10)
    updates_per_frame: float = number(0.0, 0.5)
    num_envs: int = whole(1, 16)
    log_every_frames: int = whole(0, 1000, unit="frames")
    checkpoint_every_frames: int = whole(0, 50_000, unit="frames")  # 0: never


@dataclass
class Replay:
    """``replay.*``."""

    capacity: int = whole(1, 1_000_000, unit="transitions")
    nstep: int = whole(1, 3)
    discount: float = number(0.0, 0.99, maximum=1.0)


@dataclass
class Obs:
    """``obs.*`` (``configs/obs``): the pixel keys only with ``obs=pixels``."""

    type: Literal["states", "pixels"] = plain("states")
    size: int = whole(1, 84, optional=True)
    frame_stack: int = whole(1, 3, optional=True)
    action_repeat: int = whole(1, 2, optional=True)
    camera: int | str | None = plain(0, optional=True)
    shadows: bool = plain(False, optional=True)


@dataclass
class SkillEval:
    """``skill_eval.*``."""

    rollouts: int = whole(0, 48)
    cell: float = number(0.0, 1.0, above=True)
    steps: int | None = whole(1, 1000)


@dataclass
class SkillSelection:
    """``skill_selection.*``."""

    candidates: int = whole(1, 48)


@dataclass
class Offline:
    """``offline.*``: dataset agents' pretraining, in gradient updates."""

    updates: int = whole(1, 50_000, unit="updates")
    snapshot_updates: list[int] = whole(1, 10_000, unit="updates")
    eval_every_updates: int = whole(0, 5000, unit="updates")
    log_every_updates: int = whole(0, 1000, unit="updates")
    checkpoint_every_updates: int = whole(0, 10_000, unit="updates")


@dataclass
class Run:
    """What every run's config holds."""

    seed: int = whole(0, 1, maximum=SEED_MAX)
    device: str = plain("auto")
    backend: Literal["auto", "cpu", "warp"] = plain("auto")
    threads: int | Literal["auto"] | None = whole(1, 1)
    resume: bool = plain(False)
    run_dir: str = plain("runs/<name>")
    snapshot_root: str = plain("snapshots")
    console: bool = plain(True)
    tensorboard: bool = plain(True)
    protocol: Protocol = plain()
    replay: Replay = plain()
    obs: Obs = plain()
    skill_eval: SkillEval = plain()
    skill_selection: SkillSelection = plain()


@dataclass
class PretrainRun(Run):
    """``configs/pretrain.yaml``."""

    save_dataset: bool = plain(False)
    dataset: str | None = plain("datasets/walker_random_1M")
    offline: Offline = plain()


@dataclass
class FinetuneRun(Run):
    """``configs/finetune.yaml``."""

    task: str = plain("walker_stand")
    snapshot: str | int | None = plain("2M")
    snapshot_seed: int = whole(0, 1, maximum=SEED_MAX)
    update_encoder: bool = plain(False)
    dataset: str | None = plain("datasets/walker_rnd_1M")
    inference_samples: int = whole(1, 10_000)


SCHEMAS = {"pretrain": PretrainRun, "finetune": FinetuneRun}


# -- checking -------------------------------------------------------------------------------------
def check_config(config: dict, phase: str, offline: bool = False) -> dict:
    """Check a resolved config (a plain dict) of a ``phase`` run against its schema, in place:
    whole numbers given as floats become ints. ``offline``: a dataset agent's pretraining
    (``offline.*`` counts, not ``protocol.snapshot_frames``). Raises :class:`ConfigError`."""
    _check_section(SCHEMAS[phase], config, "")
    if phase == "finetune" and is_frame_count(config.get("snapshot")):
        _check_frames_text(config["snapshot"])
    if phase == "pretrain" and not offline:
        _check_within(config, "protocol.snapshot_frames", "protocol.pretrain_frames", "frames")
    if phase == "pretrain" and offline:
        _check_within(config, "offline.snapshot_updates", "offline.updates", "updates")
    return config


def _check_section(schema, values, prefix: str) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix[:-1]}={values!r} is not a section of keys; check the config's layout")
    hints = typing.get_type_hints(schema)
    for spec in fields(schema):
        key = f"{prefix}{spec.name}"
        if spec.name not in values:
            if spec.metadata.get("optional"):
                continue
            raise ConfigError(
                f"{key} is missing from the config; add it (e.g. from configs/preset/urlb.yaml)"
            )
        kind = hints[spec.name]
        if is_dataclass(kind):
            _check_section(kind, values[spec.name], f"{key}.")
        else:
            values[spec.name] = _check_value(kind, values[spec.name], key, spec.metadata)


def _check_value(kind, value, key: str, meta) -> Any:
    """``value`` converted to ``kind``, or a :class:`ConfigError`."""
    options = _options(kind)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{key} is null; {_fix(key, meta)}")
    errors = []
    for option in (option for option in options if option is not type(None)):
        try:
            return _convert(option, value, key, meta)
        except ConfigError as error:
            errors.append(error)
    raise errors[0]


def _options(kind) -> tuple:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return tuple(option for arg in typing.get_args(kind) for option in _options(arg))
    return (kind,)


def _convert(kind, value, key: str, meta) -> Any:
    if typing.get_origin(kind) is Literal:
        allowed = typing.get_args(kind)
        if value not in allowed:
            raise ConfigError(
                f"{key}={value!r} is not one of {', '.join(map(str, allowed))}; {_fix(key, meta)}"
            )
        return value
    if typing.get_origin(kind) is list:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}={value!r} is not a list; {_fix(key, meta, listed=True)}")
        (item,) = typing.get_args(kind)
        converted = []
        for index, entry in enumerate(value):
            try:
                converted.append(_convert(item, entry, f"{key}[{index}]", meta))
            except ConfigError as error:
                problem = str(error).split("; ")[0]
                raise ConfigError(f"{problem}; {_fix(key, meta, listed=True)}") from None
        return converted
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} is not true or false; set {key}=true or {key}=false")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r} is not text; {_fix(key, meta)}")
        return value
    if kind is int:
        return _whole(value, key, meta)
    if kind is float:
        return _real(value, key, meta)
    raise TypeError(f"schema type {kind} of {key} is not handled")


def _whole(value, key: str, meta) -> int:
    unit = f" of {meta['unit']}" if meta.get("unit") else ""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key}={value!r} is not a whole number{unit}; {_fix(key, meta)}")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            near = f"{key}={math.floor(value)}" if math.isfinite(value) and value >= 0 else None
            raise ConfigError(f"{key}={value!r} is not a whole number{unit}; {_fix(key, meta, near)}")
        value = int(value)
    _bounds(value, key, meta)
    return value


def _real(value, key: str, meta) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{key}={value!r} is not a finite number; {_fix(key, meta)}")
    if meta.get("above") and value <= meta["min"]:
        raise ConfigError(f"{key}={value!r} must be above {meta['min']}; {_fix(key, meta)}")
    _bounds(value, key, meta)
    return float(value)


def _bounds(value, key: str, meta) -> None:
    low, high = meta.get("min"), meta.get("max")
    if low is not None and value < low:
        raise ConfigError(f"{key}={value!r} is below {low}; {_fix(key, meta)}")
    if high is not None and value > high:
        raise ConfigError(f"{key}={value!r} is above {high}; {_fix(key, meta)}")


def _fix(key: str, meta, instead: str | None = None, listed: bool = False) -> str:
    """``set e.g. key=example`` (the range too, where it has one)."""
    low, high = meta.get("min"), meta.get("max")
    example = instead or f"{key}={[meta.get('example')] if listed else _text(meta.get('example'))}"
    if low is not None and high is not None:
        return f"set a value in {low}..{high}, e.g. {example}"
    if low is not None:
        return f"set a value {'above' if meta.get('above') else 'of at least'} {low}, e.g. {example}"
    return f"set e.g. {example}"


def _text(value) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _check_frames_text(spec) -> None:
    try:
        frames = parse_frames(spec)
    except ValueError as error:
        raise ConfigError(f"snapshot={spec!r}: {error}; set e.g. snapshot=2M or snapshot=<path>") from error
    if frames < 0:
        raise ConfigError(f"snapshot={spec!r} is below 0 frames; set e.g. snapshot=2M or snapshot=<path>")


def _check_within(config: dict, listed: str, total: str, unit: str) -> None:
    section, name = listed.split(".")
    limit = config[total.split(".")[0]][total.split(".")[1]]
    outside = [value for value in config[section][name] if not 0 < value <= limit]
    if outside:
        raise ConfigError(
            f"{listed} {outside} lie outside 1..{total}={limit}: snapshots are taken within the run; "
            f"drop them or raise {total}"
        )
