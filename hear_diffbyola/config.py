"""Pretraining configuration: one dataclass per room, composed, read from YAML, overridden by 'section.key=value'.

Values reach the dataclasses from three places: a YAML file, typed values set by key (``set_values``,
what the CLI's named flags use) and ``section.key=value`` strings (``apply_overrides``, the CLI's
``--set``). Whatever their origin, ``PretrainConfig.from_dict`` checks each value against its field's
annotation (``check_value``), so a wrong type fails naming the key, the value and the type expected.
"""

from __future__ import annotations

import functools
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from .augment import AugmentConfig
from .dictconfig import DictConfig
from .encoder import EncoderConfig
from .errors import DiffByolaError
from .frontend import FrontendConfig
from .learner import LearnerConfig


class ConfigError(DiffByolaError, ValueError):
    """A configuration value or key is wrong; the message says which and what is valid."""


DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")  # what train.device may name


@dataclass(frozen=True)
class TrainConfig(DictConfig):
    section = "train"

    corpus: str = "embedded"  # 'embedded', a folder of audio, or a .csv/.txt list of files
    embedded_size: int = 2000  # clips in the embedded corpus
    embedded_duration: float = 2.0  # seconds per embedded clip
    max_bad_fraction: float = 0.01  # more unreadable files than this fails the run
    crop_seconds: float = 0.95  # 96 log-mel frames at 10 ms hop, as BYOL-A
    batch_size: int = 256  # global batch (split over DDP processes)
    epochs: int = 100
    steps: int | None = None  # if set, overrides epochs
    lr: float = 1e-3
    seed: int = 0
    norm_clips: int = 1000  # clips used to compute the pre-normalisation statistics
    checkpoint_every: int = 500  # steps
    log_every: int = 10  # steps between metrics rows
    num_workers: int = 2  # DataLoader worker processes (0 = load in the main process)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (bf16 on CUDA) | bf16 | off

    def __post_init__(self) -> None:
        checks = [
            (
                self.batch_size >= 2,
                f"train.batch_size must be >= 2 (the mix pairs clips in the batch), got {self.batch_size}",
            ),
            (self.epochs >= 1, f"train.epochs must be >= 1, got {self.epochs}"),
            (self.steps is None or self.steps >= 1, f"train.steps must be >= 1, got {self.steps}"),
            (self.lr > 0, f"train.lr must be > 0, got {self.lr}"),
            (self.crop_seconds > 0, f"train.crop_seconds must be > 0, got {self.crop_seconds}"),
            (
                self.checkpoint_every >= 1 and self.log_every >= 1,
                "train.checkpoint_every and train.log_every must be >= 1",
            ),
            (self.num_workers >= 0, f"train.num_workers must be >= 0, got {self.num_workers}"),
            (self.norm_clips >= 1, f"train.norm_clips must be >= 1, got {self.norm_clips}"),
            (self.amp in ("auto", "bf16", "off"), f"train.amp must be auto, bf16 or off, got {self.amp!r}"),
            (
                0.0 <= self.max_bad_fraction <= 1.0,
                f"train.max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}",
            ),
            (self.embedded_size >= 1, f"train.embedded_size must be >= 1 clip, got {self.embedded_size}"),
            (self.embedded_duration > 0, f"train.embedded_duration must be > 0 seconds, got {self.embedded_duration}"),
            (self.seed >= 0, f"train.seed must be >= 0 (numpy seeds are non-negative), got {self.seed}"),
            (
                bool(str(self.corpus).strip()),
                "train.corpus must be 'embedded', a folder of audio or a .csv/.txt list, got an empty string",
            ),
            (
                bool(DEVICE_PATTERN.match(str(self.device))),
                f"train.device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)


SECTIONS = {
    "frontend": FrontendConfig,
    "encoder": EncoderConfig,
    "augment": AugmentConfig,
    "learner": LearnerConfig,
    "train": TrainConfig,
}


@dataclass(frozen=True)
class PretrainConfig:
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.encoder.n_mels != self.frontend.n_mels:
            raise ConfigError(
                f"encoder.n_mels ({self.encoder.n_mels}) must equal frontend.n_mels ({self.frontend.n_mels})"
            )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name in SECTIONS:
            out[name] = getattr(self, name).to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict) -> PretrainConfig:
        unknown = set(d) - set(SECTIONS)
        if unknown:
            raise ConfigError(f"unknown config sections {sorted(unknown)}; valid sections: {sorted(SECTIONS)}")
        kwargs = {}
        for name, klass in SECTIONS.items():
            sec = d.get(name) or {}
            if not isinstance(sec, dict):
                raise ConfigError(f"config section '{name}' must be a mapping, got {type(sec).__name__}")
            types_ = field_types(name)
            sec = {k: check_value(f"{name}.{k}", v, types_[k]) if k in types_ else v for k, v in sec.items()}
            try:
                kwargs[name] = klass.from_dict(sec)
            except (TypeError, ValueError) as e:
                raise ConfigError(str(e)) from e
        try:
            return cls(**kwargs)
        except ValueError as e:
            raise ConfigError(str(e)) from e

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def load_yaml(path: str | Path) -> dict:
    """A config file's sections, {section: {key: value}}; ConfigError naming the file (and the line, for
    broken YAML) when it cannot be read, is not YAML, or is not a mapping of mappings."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; give a YAML file ('hear-diffbyola config' prints one)")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(
            f"config file {path} is not valid YAML{where}: {problem}; fix it there "
            "('hear-diffbyola config' prints a valid one)"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} cannot be read ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of sections (frontend, encoder, augment, learner, train)"
        )
    for name, sec in data.items():
        if sec is not None and not isinstance(sec, dict):
            raise ConfigError(
                f"config file {path}: section '{name}' must be a mapping of keys to values "
                f"(e.g. '{name}:' then indented 'key: value' lines), got {sec!r}"
            )
    return data


def field_types(section: str) -> dict[str, Any]:
    """{key: annotation} of a config section's dataclass fields (annotations resolved from their strings)."""
    return _field_types(SECTIONS[section])


@functools.cache
def _field_types(klass: type) -> dict[str, Any]:
    hints = typing.get_type_hints(klass)
    return {f.name: hints[f.name] for f in fields(klass)}


def _split_key(key: str, where: str) -> tuple[str, str]:
    """'section.name' -> (section, name), both known; ConfigError naming ``where`` otherwise."""
    section, dot, name = key.strip().partition(".")
    if not dot or not name:
        raise ConfigError(f"{where}: a key looks like section.key, e.g. learner.lam")
    if section not in SECTIONS:
        raise ConfigError(f"{where}: unknown section {section!r}; valid sections: {sorted(SECTIONS)}")
    valid = field_types(section)
    if name not in valid:
        raise ConfigError(f"{where}: unknown key {section}.{name}; valid keys: {sorted(valid)}")
    return section, name


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"

    args = typing.get_args(tp)
    if _is_union(tp):
        return " or ".join(_type_name(a) for a in args)
    if typing.get_origin(tp) is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} values ({', '.join(_type_name(a) for a in args)})"
    return getattr(tp, "__name__", str(tp))


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


class _Mismatch(Exception):
    """``value`` does not fit the annotation (internal: ``check_value`` turns it into a ConfigError)."""


class _NotFinite(_Mismatch):
    """A float value (or one inside a list) is NaN or Inf."""


def _coerce(value: Any, tp: Any) -> Any:
    """``value`` as a value of annotation ``tp``, or _Mismatch. Widening only: an int is a float, a
    list is a tuple, a string that reads as a number is a float (YAML 1.1 reads ``1e-5`` as text)."""
    if tp is Any:
        return value
    if _is_union(tp):
        for option in typing.get_args(tp):
            try:
                return _coerce(value, option)
            except _Mismatch:
                pass
        raise _Mismatch
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if len(value) != len(args):
            raise _Mismatch
        return tuple(_coerce(v, a) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:  # finite only: NaN passes every range check (comparisons are False), Inf most
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise _Mismatch from None
        else:
            raise _Mismatch
        if not math.isfinite(number):
            raise _NotFinite
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    return value  # an annotation this checker does not know: the dataclass's own checks decide


def check_value(key: str, value: Any, annotation: Any) -> Any:
    """``value`` for config key ``key`` (``section.name``) converted to its field's ``annotation``, or a
    ConfigError naming the key, the value and the type expected (a bool is no int; an int is a float)."""
    try:
        return _coerce(value, annotation)
    except _NotFinite:
        raise ConfigError(f"{key} must be a finite number, got {value!r}") from None
    except _Mismatch:
        raise ConfigError(f"{key} must be {_type_name(annotation)}, got {value!r} ({type(value).__name__})") from None


def set_values(d: dict, values: Mapping[str, Any]) -> dict:
    """A copy of ``d`` with typed values set by key, e.g. ``{"train.lr": 1e-5, "train.corpus": "/data/set #2"}``.

    The values are taken as they are (no parsing), so a string stays that string."""
    for name, sec in d.items():
        if sec is not None and not isinstance(sec, dict):
            raise ConfigError(f"config section '{name}' must be a mapping, got {type(sec).__name__}")
    d = {k: dict(v or {}) for k, v in d.items()}
    for key, value in values.items():
        section, name = _split_key(key, f"config key {key!r}")
        d.setdefault(section, {})[name] = value
    return d


def parse_override(item: str) -> tuple[str, Any]:
    """'section.key=value' -> (key, value). The value is read as YAML (0.5, true, null, [1, 2]), except
    for a text field, whose value is the text as written (so ``on`` and ``a #b`` stay text)."""
    key, sep, raw = item.partition("=")
    if not sep:
        raise ConfigError(f"override {item!r} must look like section.key=value, e.g. learner.lam=0.5")
    section, name = _split_key(key, f"override {item!r}")
    annotation = field_types(section)[name]
    options = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    if str in options and not (type(None) in options and raw.strip() in ("null", "~")):
        return f"{section}.{name}", raw
    try:
        return f"{section}.{name}", yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({e})") from e


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """Apply 'section.key=value' strings (see ``parse_override``); types are checked by ``PretrainConfig.from_dict``."""
    return set_values(d, dict(parse_override(item) for item in overrides))


def with_train(config: PretrainConfig, **changes) -> PretrainConfig:
    return replace(config, train=replace(config.train, **changes))
