"""A/B experiment config (the TOML contract) and sticky arm assignment.

The config file is written by people and by external checks, so its shape is strict: unknown
keys, zero weights, duplicate arms or a missing bundle directory are refused with a message
that names the offending key. Assignment must give a user the same arm in every worker and
after every restart, so it hashes (salt, user_id) with keyed BLAKE2b, never Python's `hash`.
"""

from __future__ import annotations

import bisect
import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.arms import DEFAULT_ARM, Arm
from service.errors import DuetError, RequestError

BUCKETS = 10_000
"""Assignment granularity: an arm's share is a whole number of 0.01% buckets."""

Policy = Literal["score", "popularity_blend", "genre_diversity"]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class ExperimentConfigError(DuetError):
    """The experiment config is unreadable or invalid; the message names every problem."""

    code = "experiment_invalid"


class UnknownArmError(RequestError):
    """An override header or admin request names an arm the experiment does not have."""

    code = "unknown_arm"

    def __init__(self, arm: str, known: tuple[str, ...], *, field: str = "X-Duet-Arm") -> None:
        super().__init__(f"unknown arm {arm!r}; known arms: {', '.join(known)}", field=field)
        self.arm = arm
        self.known = known


class _ArmSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: Name
    weight: float = Field(gt=0, le=1_000_000)
    bundle: str = Field(min_length=1, max_length=4096)
    control: bool = False
    nprobe: int | None = Field(default=None, ge=1, le=65_536)
    ef_search: int | None = Field(default=None, ge=1, le=65_536)
    overfetch: float | None = Field(default=None, ge=1, le=20)
    policy: Policy = "score"
    popularity_weight: float | None = Field(default=None, ge=0, le=1)
    diversity: float | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="after")
    def _policy_params_match(self) -> Self:
        if self.popularity_weight is not None and self.policy != "popularity_blend":
            raise ValueError("popularity_weight applies only to policy 'popularity_blend'")
        if self.diversity is not None and self.policy != "genre_diversity":
            raise ValueError("diversity applies only to policy 'genre_diversity'")
        return self


class _ExperimentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    name: Name
    salt: str = Field(min_length=1, max_length=256)
    allow_override: bool = False
    arms: list[_ArmSpec] = Field(min_length=1, max_length=16)

    @model_validator(mode="after")
    def _arms_consistent(self) -> Self:
        names = [arm.name for arm in self.arms]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"duplicate arm names: {', '.join(duplicates)}")
        controls = [arm.name for arm in self.arms if arm.control]
        if len(controls) > 1:
            raise ValueError(f"at most one arm may set control = true, got {', '.join(controls)}")
        total = sum(arm.weight for arm in self.arms)
        starved = [arm.name for arm in self.arms if arm.weight / total * BUCKETS < 1]
        if starved:
            raise ValueError(f"arms too small to get any traffic (< 0.01%): {', '.join(starved)}")
        return self


@dataclass(frozen=True)
class ServingParams:
    """Per-arm knobs for the request path; `None` means the bundle's own default."""

    policy: Policy = "score"
    nprobe: int | None = None
    ef_search: int | None = None
    overfetch: float | None = None
    popularity_weight: float | None = None
    diversity: float | None = None


@dataclass(frozen=True)
class ArmConfig:
    name: str
    weight: float
    bundle: Path
    params: ServingParams = ServingParams()


@dataclass(frozen=True)
class ExperimentConfig:
    """A validated experiment; the control arm is the one marked `control`, else the first."""

    name: str
    salt: str
    allow_override: bool
    arms: tuple[ArmConfig, ...]
    control: str
    source: Path | None = None

    @property
    def arm_names(self) -> tuple[str, ...]:
        return tuple(arm.name for arm in self.arms)

    def arm(self, name: str) -> ArmConfig:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise UnknownArmError(name, self.arm_names)

    @classmethod
    def implicit(cls, bundle: Path) -> ExperimentConfig:
        """The single arm served when no experiment file is configured."""
        arm = ArmConfig(name=DEFAULT_ARM, weight=1.0, bundle=bundle)
        return cls(name=DEFAULT_ARM, salt="", allow_override=False, arms=(arm,), control=arm.name)


def _format_errors(error: ValidationError) -> str:
    lines = []
    for detail in error.errors(include_url=False):
        where = ".".join(
            f"[{part}]" if isinstance(part, int) else str(part) for part in detail["loc"]
        ).replace(".[", "[")
        message = str(detail["msg"]).removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    return "; ".join(lines)


def parse_experiment(
    data: Mapping[str, Any], *, base_dir: Path, source: Path | None = None
) -> ExperimentConfig:
    """Validate parsed TOML; relative bundle paths are resolved against `base_dir`."""
    try:
        spec = _ExperimentSpec.model_validate(dict(data))
    except ValidationError as error:
        raise ExperimentConfigError(f"invalid experiment config: {_format_errors(error)}") from None
    arms = []
    missing = []
    for index, arm in enumerate(spec.arms):
        bundle = Path(arm.bundle).expanduser()
        bundle = (bundle if bundle.is_absolute() else base_dir / bundle).resolve()
        if not bundle.is_dir():
            missing.append(f"arms[{index}].bundle ({arm.name}): no bundle directory at {bundle}")
        params = ServingParams(
            policy=arm.policy,
            nprobe=arm.nprobe,
            ef_search=arm.ef_search,
            overfetch=arm.overfetch,
            popularity_weight=arm.popularity_weight,
            diversity=arm.diversity,
        )
        arms.append(ArmConfig(name=arm.name, weight=arm.weight, bundle=bundle, params=params))
    if missing:
        raise ExperimentConfigError(f"invalid experiment config: {'; '.join(missing)}")
    control = next((arm.name for arm in spec.arms if arm.control), spec.arms[0].name)
    return ExperimentConfig(
        name=spec.name,
        salt=spec.salt,
        allow_override=spec.allow_override,
        arms=tuple(arms),
        control=control,
        source=source,
    )


def load_experiment(path: Path) -> ExperimentConfig:
    """Read and validate an experiment TOML file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ExperimentConfigError(f"cannot read experiment config {path}: {error}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ExperimentConfigError(f"experiment config {path} is not TOML: {error}") from None
    return parse_experiment(data, base_dir=path.resolve().parent, source=path)


class Assigner:
    """Maps a user to an arm: keyed BLAKE2b of the user id → bucket → arm by cumulative weight.

    Stable contract: `bucket = int.from_bytes(blake2b(user_id, key=blake2b(salt).digest(),
    digest_size=8), "big") % 10_000`; arms own consecutive bucket ranges in config order.
    """

    def __init__(self, config: ExperimentConfig) -> None:
        key = hashlib.blake2b(config.salt.encode()).digest()
        self._hasher = hashlib.blake2b(key=key, digest_size=8)
        self._names = config.arm_names
        total = sum(arm.weight for arm in config.arms)
        cumulative = 0.0
        bounds = []
        for arm in config.arms:
            cumulative += arm.weight
            bounds.append(round(cumulative / total * BUCKETS))
        bounds[-1] = BUCKETS
        self._bounds = tuple(bounds)
        self._allow_override = config.allow_override

    def bucket(self, user_id: str) -> int:
        hasher = self._hasher.copy()
        hasher.update(user_id.encode())
        return int.from_bytes(hasher.digest(), "big") % BUCKETS

    def assign(self, user_id: str) -> str:
        if len(self._names) == 1:
            return self._names[0]
        return self._names[bisect.bisect_right(self._bounds, self.bucket(user_id))]

    def choose(self, user_id: str, override: str | None = None) -> str:
        """The user's arm, or `override` when the config allows overrides.

        An override is ignored when not allowed (the response names the arm actually served);
        when allowed, an unknown arm raises `UnknownArmError`.
        """
        if override is None or not self._allow_override:
            return self.assign(user_id)
        if override not in self._names:
            raise UnknownArmError(override, self._names)
        return override


class ExperimentRouter:
    """The weighted `ArmRouter`: each user's sticky arm, the control as default."""

    def __init__(self, config: ExperimentConfig, arms: Mapping[str, Arm]) -> None:
        if tuple(arms) != config.arm_names:
            raise ValueError("arms must match the experiment's arms, in order")
        self.config = config
        self._assigner = Assigner(config)
        self._arms = MappingProxyType(dict(arms))
        self._default = arms[config.control]

    @property
    def arms(self) -> Mapping[str, Arm]:
        return self._arms

    @property
    def default(self) -> Arm:
        return self._default

    def choose(self, user_id: str, override: str | None = None) -> Arm:
        return self._arms[self._assigner.choose(user_id, override)]
