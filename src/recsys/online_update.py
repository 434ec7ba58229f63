"""How an event moves a customer's vector: the EMA at a rate (recsys.ema) or fold-in in
one of its recency forms (recsys.fold_in). RECSYS_ONLINE_UPDATE names one for every
version, or `auto` (the default): each version is served with the update the batch chose
for it on a replay of its holdout (batch.online_update), kept in the version's meta."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from recsys.fold_in import Recency
from recsys.settings import Settings

UpdateKind = Literal["ema", "fold_in"]

# The model meta fields (recsys.keys.model_meta) of the update a version was given.
KIND_FIELD = "online_update"
RATE_FIELD = "online_update_ema_rate"
HALF_LIFE_EVENTS_FIELD = "online_update_half_life_events"
STEP_FIELD = "online_update_step"


@dataclass(frozen=True)
class OnlineUpdate:
    kind: UpdateKind
    ema_rate: float = 0.0  # the EMA's share of the way toward the item (kind "ema")
    recency: Recency = field(default_factory=Recency)  # fold-in's form (kind "fold_in")

    @property
    def name(self) -> str:
        """As the replay names its variants: "ema 0.3", "fold-in h8 step0.2"."""
        return f"ema {self.ema_rate:g}" if self.kind == "ema" else self.recency.name

    def meta(self) -> dict[str, float | str]:
        return {
            KIND_FIELD: self.kind,
            RATE_FIELD: self.ema_rate,
            HALF_LIFE_EVENTS_FIELD: self.recency.half_life_events,
            STEP_FIELD: self.recency.step,
        }

    @classmethod
    def from_meta(cls, meta: Mapping[str, str]) -> OnlineUpdate | None:
        """The update the batch chose for a version; None when it chose none (a version
        from before the choice, or a holdout too small to choose on)."""
        kind = meta.get(KIND_FIELD)
        if kind not in ("ema", "fold_in"):
            return None
        recency = Recency(float(meta[HALF_LIFE_EVENTS_FIELD]), float(meta[STEP_FIELD]))
        return cls("ema" if kind == "ema" else "fold_in", float(meta[RATE_FIELD]), recency)

    @classmethod
    def from_settings(cls, settings: Settings) -> OnlineUpdate:
        """The update the settings name (`auto` falls back to the EMA at its rate)."""
        if settings.online_update != "fold_in":
            return cls("ema", settings.ema_rate)
        recency = Recency(settings.fold_in_half_life_events, settings.fold_in_step)
        return cls("fold_in", settings.ema_rate, recency)


def resolve(settings: Settings, meta: Mapping[str, str], can_fold_in: bool) -> OnlineUpdate:
    """The update a version is served with: the batch's choice under `auto` (else the
    settings' EMA), the settings' under `ema` or `fold_in`; the EMA at the settings' rate
    wherever fold-in is asked for and the version cannot fold in (trained by Spark)."""
    chosen = OnlineUpdate.from_meta(meta) if settings.online_update == "auto" else None
    update = chosen or OnlineUpdate.from_settings(settings)
    if update.kind == "fold_in" and not can_fold_in:
        return OnlineUpdate("ema", settings.ema_rate)
    return update
