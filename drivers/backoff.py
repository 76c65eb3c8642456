"""Reconnect back-off shared by every driver that reopens a link: serial ports and Modbus TCP."""

from __future__ import annotations

import random

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Backoff(BaseModel):
    """Reconnect delays: ``min_delay`` doubling up to ``max_delay``, each stretched by up to ``jitter``.

    Jitter keeps a cabinet of gateways from hammering a shared USB hub in lockstep after a
    power blip.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_delay: float = Field(default=0.2, gt=0)
    max_delay: float = Field(default=10.0, gt=0)
    factor: float = Field(default=2.0, ge=1)
    jitter: float = Field(default=0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> Backoff:
        if self.max_delay < self.min_delay:
            raise ValueError("max_delay must not be smaller than min_delay")
        return self

    def delays(self, rng: random.Random) -> BackoffDelays:
        return BackoffDelays(self, rng)


class BackoffDelays:
    """The delay sequence of one outage."""

    def __init__(self, policy: Backoff, rng: random.Random) -> None:
        self._policy = policy
        self._rng = rng
        self._next = policy.min_delay

    def __next__(self) -> float:
        base = self._next
        self._next = min(base * self._policy.factor, self._policy.max_delay)
        return base * (1.0 + self._rng.uniform(0.0, self._policy.jitter))
