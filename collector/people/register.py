"""The user register: who may sign at the stations, with which roles and qualifications.

A YAML file the gateway holds (``gateway.people.register``), deployed with its
configuration and loaded by :func:`collector.config.load_register`::

    users:
      - id: op-117                       # what records carry (operator, signed_by)
        name: Olga Petrova               # printed with her signatures (21 CFR 11.50)
        badge: "4711-0117"               # what her badge reads as (a station's label pattern
                                         # puts it in its ``operator`` group)
        roles: [inspector]               # inspector, supervisor, quality
        secret_hash: "scrypt$n=16384,r=8,p=5$..."   # her PIN or password: collector hash-password
        qualifications:                  # ISO 9001 7.2: competence, with its expiry
          - {plan: HX-4711, expires: 2027-06-30}
          - {plan: "*", expires: 2026-12-31, note: "general inspection training TR-114"}

Roles say what a person may do (see :mod:`collector.inspection.commands`); a
qualification says which plans (part numbers, ``*`` for all) a person may inspect, up to
and including its ``expires`` day. A person who left keeps their entry with
``disabled: true``: their id stays on the records, and nobody can sign with it.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from collector.people.accounts import checked_hash

#: a user id, as records carry it (the same rule as dashboard user names)
PersonId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")]
_NO_CONTROL = r"^[^\x00-\x1f\x7f-\x9f\u2028\u2029]*$"
#: what a badge reads as: any printable text (it is looked up, never recorded as typed)
BadgeCode = Annotated[str, Field(min_length=1, max_length=128, pattern=_NO_CONTROL)]
PrintedName = Annotated[str, Field(min_length=1, max_length=100, pattern=_NO_CONTROL)]
#: the part number of a plan, or "*" for every plan
PlanRef = Annotated[str, Field(min_length=1, max_length=200, pattern=_NO_CONTROL)]
_PERSON_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")


def is_person_id(text: str) -> bool:
    return _PERSON_ID.fullmatch(text) is not None


class Role(enum.StrEnum):
    """What a person may do at a station (each command names the roles it needs)."""

    INSPECTOR = "inspector"  # measures, re-measures, abandons, requests patrols
    SUPERVISOR = "supervisor"  # also invalidates values, acknowledges alerts, clears the andon
    QUALITY = "quality"  # also decides nonconformances (the MRB's disposition)


ANY_ROLE = frozenset(Role)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Qualification(_Frozen):
    """A person's competence for a plan (ISO 9001 7.2), valid up to and including ``expires``."""

    plan: PlanRef
    expires: dt.date
    note: str = Field(default="", max_length=200)


class Person(_Frozen):
    id: PersonId
    name: PrintedName
    badge: BadgeCode | None = None
    roles: tuple[Role, ...] = Field(min_length=1)
    #: the PIN or password, hashed by ``collector hash-password`` (never the secret itself)
    secret_hash: str = Field(repr=False)
    qualifications: tuple[Qualification, ...] = ()
    #: left the company, or suspended: kept for the records, cannot sign
    disabled: bool = False

    @field_validator("secret_hash")
    @classmethod
    def _hash_format(cls, v: str) -> str:
        return checked_hash(v)

    @field_validator("roles")
    @classmethod
    def _unique_roles(cls, v: tuple[Role, ...]) -> tuple[Role, ...]:
        if len(set(v)) != len(v):
            raise ValueError("a role is listed twice")
        return v

    def qualification_problem(self, part_number: str, today: dt.date) -> str | None:
        """Why this person may not inspect ``part_number`` today, or None when qualified."""
        if self.disabled:
            return f"{self.id} is disabled in the user register"
        matching = [q for q in self.qualifications if q.plan in (part_number, "*")]
        if not matching:
            return f"{self.id} ({self.name}) has no qualification for {part_number}"
        latest = max(q.expires for q in matching)
        if latest < today:
            return f"{self.id}'s qualification for {part_number} expired on {latest.isoformat()}"
        return None


class UserRegister(_Frozen):
    """Everyone who may sign at this gateway's stations."""

    users: tuple[Person, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> UserRegister:
        ids = [u.id for u in self.users]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            raise ValueError(f"user id(s) {', '.join(twice)} appear more than once")
        badges = [u.badge for u in self.users if u.badge is not None]
        twice = sorted({b for b in badges if badges.count(b) > 1})
        if twice:
            raise ValueError(f"badge(s) {', '.join(twice)} belong to more than one user")
        for u in self.users:
            other = next((o for o in self.users if o is not u and o.id == u.badge), None)
            if other is not None:
                raise ValueError(f"{u.id}'s badge {u.badge!r} is the user id of {other.id}")
        return self

    @cached_property
    def _by_id(self) -> dict[str, Person]:
        return {u.id: u for u in self.users}

    @cached_property
    def _by_badge(self) -> dict[str, Person]:
        return {u.badge: u for u in self.users if u.badge is not None}

    def find(self, badge_or_id: str) -> Person | None:
        """The person a badge or a typed user id names."""
        return self._by_badge.get(badge_or_id) or self._by_id.get(badge_or_id)

    def get(self, user_id: str) -> Person | None:
        return self._by_id.get(user_id)


@dataclass(frozen=True, slots=True)
class Signature:
    """A person's signature, as a record carries it (see ``collector.inspection.models``)."""

    user: str
    name: str | None
    method: str  # a SignatureMethod value: secret, badge, session, dashboard

    def fields(self, meaning: str) -> dict[str, str | None]:
        return {
            "signed_by": self.user,
            "signer_name": self.name,
            "signature_meaning": meaning,
            "signature_method": self.method,
        }


@dataclass(frozen=True, slots=True)
class Actor:
    """Who gives a command, how that was established, and what they may do."""

    user: str
    name: str | None
    roles: frozenset[Role]
    method: str  # secret, badge, session, dashboard
    #: where the command came from, for the audit trail ("operator view", "mqtt", ...)
    channel: str

    @classmethod
    def of(cls, person: Person, method: str, channel: str) -> Actor:
        return cls(person.id, person.name, frozenset(person.roles), method, channel)

    @property
    def signature(self) -> Signature:
        return Signature(self.user, self.name, self.method)
