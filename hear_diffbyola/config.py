"""Pretraining configuration: one dataclass per room, composed, read from YAML, overridden by 'section.key=value'."""
from __future__ import annotations

from .errors import DiffByolaError

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from .augment import AugmentConfig
from .dictconfig import DictConfig
from .encoder import EncoderConfig
from .frontend import FrontendConfig
from .learner import LearnerConfig


class ConfigError(DiffByolaError, ValueError):
    """A configuration value or key is wrong; the message says which and what is valid."""


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
            (self.batch_size >= 2, f"train.batch_size must be >= 2 (the mix pairs clips in the batch), got {self.batch_size}"),
            (self.epochs >= 1, f"train.epochs must be >= 1, got {self.epochs}"),
            (self.steps is None or self.steps >= 1, f"train.steps must be >= 1, got {self.steps}"),
            (self.lr > 0, f"train.lr must be > 0, got {self.lr}"),
            (self.crop_seconds > 0, f"train.crop_seconds must be > 0, got {self.crop_seconds}"),
            (self.checkpoint_every >= 1 and self.log_every >= 1, "train.checkpoint_every and train.log_every must be >= 1"),
            (self.num_workers >= 0, f"train.num_workers must be >= 0, got {self.num_workers}"),
            (self.norm_clips >= 1, f"train.norm_clips must be >= 1, got {self.norm_clips}"),
            (self.amp in ("auto", "bf16", "off"), f"train.amp must be auto, bf16 or off, got {self.amp!r}"),
            (0.0 <= self.max_bad_fraction <= 1.0, f"train.max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)


SECTIONS = {"frontend": FrontendConfig, "encoder": EncoderConfig, "augment": AugmentConfig,
            "learner": LearnerConfig, "train": TrainConfig}


@dataclass(frozen=True)
class PretrainConfig:
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.encoder.n_mels != self.frontend.n_mels:
            raise ConfigError(f"encoder.n_mels ({self.encoder.n_mels}) must equal frontend.n_mels ({self.frontend.n_mels})")

    def to_dict(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name in SECTIONS:
            out[name] = getattr(self, name).to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "PretrainConfig":
        unknown = set(d) - set(SECTIONS)
        if unknown:
            raise ConfigError(f"unknown config sections {sorted(unknown)}; valid sections: {sorted(SECTIONS)}")
        kwargs = {}
        for name, klass in SECTIONS.items():
            sec = d.get(name) or {}
            if not isinstance(sec, dict):
                raise ConfigError(f"config section '{name}' must be a mapping, got {type(sec).__name__}")
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
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections (frontend, encoder, augment, learner, train)")
    return data


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """Apply 'section.key=value' strings (value parsed as YAML: 0.5, true, null, [1, 2], text)."""
    d = {k: dict(v or {}) for k, v in d.items()}
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"override {item!r} must look like section.key=value, e.g. learner.lam=0.5")
        if section not in SECTIONS:
            raise ConfigError(f"override {item!r}: unknown section {section!r}; valid sections: {sorted(SECTIONS)}")
        valid = {f.name for f in fields(SECTIONS[section])}
        if name not in valid:
            raise ConfigError(f"override {item!r}: unknown key {section}.{name}; valid keys: {sorted(valid)}")
        d.setdefault(section, {})[name] = yaml.safe_load(value)
    return d


def with_train(config: PretrainConfig, **changes) -> PretrainConfig:
    return replace(config, train=replace(config.train, **changes))
