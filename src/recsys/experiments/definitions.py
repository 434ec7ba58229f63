"""What an experiment is (its variants, their traffic shares and what each changes), as
read from the file RECSYS_EXPERIMENTS_FILE names."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from recsys.diversity import mmr_for
from recsys.ids import ExternalId
from recsys.index.base import Mmr
from recsys.settings import Settings

# Assignment maps each customer to one of this many buckets; a share is a number of them,
# so no share may be finer than one bucket.
BUCKETS: Final = 10_000
SHARE_TOLERANCE: Final = 1e-9
# The ANN candidates MMR reranks: enough to pick from at the largest k, few enough that
# the engine's MMR (quadratic in k times the pool) stays a sub-millisecond query.
MIN_CANDIDATE_POOL: Final = 10
MAX_CANDIDATE_POOL: Final = 1_000

# Experiment and variant names go into Redis keys, Prometheus labels and URL paths.
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
]

# What an unknown customer (or a failed Redis or index) gets: trending with the request's
# rules, or nothing at all (what the fallback is worth).
FallbackPolicy = Literal["trending", "none"]


class Variant(BaseModel):
    """One arm. Every knob left None is the service's default, so a variant with none set
    is the control as the service runs today."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    share: float = Field(gt=0, le=1, description="share of customers, the shares sum to 1")
    model_version: ExternalId | None = Field(default=None, description="serve this version")
    diversity_lambda: float | None = Field(
        default=None, ge=0, le=1, description="MMR trade-off replacing RECSYS_DIVERSITY_LAMBDA"
    )
    candidate_pool: int | None = Field(
        default=None,
        ge=MIN_CANDIDATE_POOL,
        le=MAX_CANDIDATE_POOL,
        description="nearest items MMR reranks (never fewer than k)",
    )
    fallback_policy: FallbackPolicy | None = None

    def relevance(self, requested: float | None, default: float) -> float:
        """The diversity_lambda a request gets: its own if it names one (a client's explicit
        choice is kept), else this variant's, else the service default."""
        if requested is not None:
            return requested
        return default if self.diversity_lambda is None else self.diversity_lambda

    def mmr(self, k: int, relevance: float) -> Mmr | None:
        """The MMR of a request for k items (None at relevance 1: the plain query), over this
        variant's candidate pool if it sets one."""
        found = mmr_for(k, relevance)
        if found is None or self.candidate_pool is None:
            return found
        return Mmr(relevance=found.relevance, candidates=max(k, self.candidate_pool))


# Outside any experiment a request runs as a variant with no knob set: the service defaults.
CONTROL = Variant(name="default", share=1.0)


class Experiment(BaseModel):
    """Variants splitting the customers; the first variant is the control every other one
    is tested against."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    variants: list[Variant] = Field(min_length=2, max_length=10)
    enabled: bool = True
    # Changing the salt reshuffles who gets which variant (a new experiment on the same
    # customers without carrying over the old split).
    salt: Annotated[str, StringConstraints(max_length=64, pattern=r"^[A-Za-z0-9_.:-]*$")] = ""
    description: str = Field(default="", max_length=500)

    @field_validator("variants")
    @classmethod
    def _valid_split(cls, variants: list[Variant]) -> list[Variant]:
        twice = sorted(name for name, n in Counter(v.name for v in variants).items() if n > 1)
        if twice:
            raise ValueError(f"variant names must be unique, repeated: {', '.join(twice)}")
        total = math.fsum(v.share for v in variants)
        if abs(total - 1.0) > SHARE_TOLERANCE:
            raise ValueError(f"variant shares must sum to 1, they sum to {total:.12g}")
        thin = [v.name for v in variants if v.share * BUCKETS < 1 - SHARE_TOLERANCE]
        if thin:
            raise ValueError(
                f"a share below 1/{BUCKETS} would never be assigned: {', '.join(thin)}"
            )
        return variants

    @property
    def control(self) -> Variant:
        return self.variants[0]

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)


class Experiments(BaseModel):
    """Every defined experiment. At most one is enabled: it is the experiment of every
    /recommend request, so no customer is in two at once and no two treatments mix.
    Disabled ones stay defined so their results can still be read."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experiments: list[Experiment] = Field(default_factory=list, max_length=100)

    @field_validator("experiments")
    @classmethod
    def _one_at_a_time(cls, experiments: list[Experiment]) -> list[Experiment]:
        twice = sorted(n for n, c in Counter(e.name for e in experiments).items() if c > 1)
        if twice:
            raise ValueError(f"experiment names must be unique, repeated: {', '.join(twice)}")
        enabled = [e.name for e in experiments if e.enabled]
        if len(enabled) > 1:
            raise ValueError(
                f"at most one experiment may be enabled, {len(enabled)} are: {', '.join(enabled)}"
            )
        return experiments

    @property
    def active(self) -> Experiment | None:
        """The experiment /recommend requests are in, if any."""
        return next((e for e in self.experiments if e.enabled), None)

    def get(self, name: str) -> Experiment | None:
        return next((e for e in self.experiments if e.name == name), None)

    def pinned_versions(self) -> list[str]:
        """The model versions the active experiment's variants serve instead of the live one."""
        active = self.active
        if active is None:
            return []
        return sorted({v.model_version for v in active.variants if v.model_version})


class ExperimentsFileError(ValueError):
    """The experiments file is missing, unreadable or invalid; the message is one line
    naming the file and the field."""


def load_experiments(path: Path) -> Experiments:
    """The experiments a JSON (.json) or YAML (.yaml, .yml) file defines."""
    suffix = path.suffix.lower()
    if suffix not in {".json", ".yaml", ".yml"}:
        raise ExperimentsFileError(f"{path}: an experiments file is .json, .yaml or .yml")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ExperimentsFileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = json.loads(text) if suffix == ".json" else _yaml(text)
    except ValueError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ExperimentsFileError(f"{path}: not valid {suffix[1:].upper()}: {first}") from exc
    try:
        return Experiments.model_validate(data)
    except ValidationError as exc:
        raise ExperimentsFileError(f"{path}: {describe_errors(exc)}") from exc


def experiments_from_settings(settings: Settings) -> Experiments:
    """The configured experiments; none when RECSYS_EXPERIMENTS_FILE is unset."""
    if settings.experiments_file is None:
        return Experiments()
    return load_experiments(settings.experiments_file)


def describe_errors(exc: ValidationError) -> str:
    """Pydantic's errors on one line, each led by its field (experiments[0].variants[1].share)."""
    return "; ".join(f"{_field(e['loc'])}: {e['msg']}" for e in exc.errors())


def _field(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "file"


def _yaml(text: str) -> Any:
    import yaml  # imported here, only for a YAML file

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from exc
