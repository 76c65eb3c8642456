"""The operator commands: one typed vocabulary for the operator view and the MQTT command topics.

Each command is a pydantic model; :data:`Command` is their union, discriminated on the
``command`` key. Both ways in (``POST /station/<id>/command`` and a station's command
topics) send the same JSON and parse it with :func:`parse_request`::

    {"command": "invalidate",
     "args": {"record_id": "0195...", "reason": "probe contaminated"},
     "signer": {"user": "qe-7", "secret": "..."},          # badge or user id, PIN or password
     "request_id": "a1b2"}                                  # echoed in the MQTT reply

so the same argument, length and character checks apply to both, and every free-text
argument has the type of the record field it ends up in (``Text``, ``PersonId`` of
:mod:`collector.inspection.models`): nothing is journaled that a recorder would refuse.

Each model also says who may give it: the roles (``roles``), whether the signer's secret
is needed every time, whatever the configuration says (``always_signed``: the commands that
change evidence), whether it may be given on a gateway without a user register, where
nobody can be authenticated (``without_register``), and what the signature on its records
means (``meaning``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, TypeAdapter, ValidationError, model_validator

from collector.errors import CollectorError
from collector.inspection.models import NO_CONTROL, PersonId, SignatureMeaning, Text
from collector.people.register import ANY_ROLE, Role

RecordId = Annotated[str, Field(pattern=r"^[0-9A-Fa-f-]{26,36}$")]
#: what a scanner typed (the station strips the terminator and matches its label pattern)
ScanCode = Annotated[str, Field(min_length=1, max_length=512)]
CharacteristicId = Annotated[str, Field(min_length=1, max_length=200, pattern=NO_CONTROL)]
RequestId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
Decision = Literal["scrap", "rework", "use_as_is", "return_to_supplier", "regrade"]
SUPERVISION = frozenset({Role.SUPERVISOR, Role.QUALITY})


class CommandError(CollectorError):
    """An operator command that cannot be carried out (unknown record, nothing to re-measure)."""


class CommandRefused(CommandError):
    """A command refused before it was carried out, and why.

    ``kind`` says what an HTTP answer's status is: ``invalid`` (400), ``unauthenticated``
    (401), ``forbidden`` (403), ``not_found`` (404), ``busy`` (503).
    """

    def __init__(self, message: str, kind: str = "invalid") -> None:
        super().__init__(message)
        self.kind = kind


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    roles: ClassVar[frozenset[Role]] = ANY_ROLE
    always_signed: ClassVar[bool] = False
    without_register: ClassVar[bool] = False
    meaning: ClassVar[SignatureMeaning | None] = None


class Scan(_Command):
    """A scanned code: a part label, or a badge (which then asks for the PIN)."""

    command: Literal["scan"]
    code: ScanCode
    without_register = True


class SignIn(_Command):
    """The signer (badge or user id, and secret) signs in at the station."""

    command: Literal["sign_in"]
    meaning = SignatureMeaning.SIGNED_IN


class SignOut(_Command):
    command: Literal["sign_out"]
    without_register = True
    meaning = SignatureMeaning.SIGNED_OUT


class Patrol(_Command):
    """The next part is a patrol inspection."""

    command: Literal["patrol"]
    without_register = True
    meaning = SignatureMeaning.PATROL_REQUESTED


class Abandon(_Command):
    """The part in progress is given up: recorded as incomplete."""

    command: Literal["abandon"]
    reason: Text = "abandoned"
    without_register = True
    meaning = SignatureMeaning.ABANDONED


class Remeasure(_Command):
    """The next reading re-measures a characteristic (default: the last measured); the reason is signed."""

    command: Literal["remeasure"]
    reason: Text
    characteristic: CharacteristicId | None = None
    always_signed = True
    meaning = SignatureMeaning.REMEASURED


class Release(_Command):
    """The signer releases the part just completed (where releases are signed one by one)."""

    command: Literal["release"]
    always_signed = True
    meaning = SignatureMeaning.RELEASED


class Invalidate(_Command):
    """A value is declared void (it stays; an invalidation record points at it)."""

    command: Literal["invalidate"]
    record_id: RecordId
    reason: Text
    roles = SUPERVISION
    always_signed = True
    meaning = SignatureMeaning.INVALIDATED


class Dispose(_Command):
    """The decision on a nonconformance: the quality team's (the MRB's)."""

    command: Literal["dispose"]
    nonconformance_id: RecordId
    decision: Decision
    concession: Text | None = None
    comment: Text | None = None
    #: only on the acknowledgement topic, from a dashboard that authenticated its user; the
    #: gateway still looks the person up in its register and checks the quality role
    by: PersonId | None = None
    roles = frozenset({Role.QUALITY})
    always_signed = True
    meaning = SignatureMeaning.DISPOSITIONED

    @model_validator(mode="after")
    def _concession(self) -> Dispose:
        if self.decision == "use_as_is" and not self.concession:
            raise ValueError("use as is needs a concession (deviation permit) reference")
        return self


class AndonOff(_Command):
    command: Literal["andon_off"]
    roles = SUPERVISION
    meaning = SignatureMeaning.ANDON_CLEARED


class AckAlert(_Command):
    """An alert about a record of this station is acknowledged.

    ``by`` is honoured only on the acknowledgement topic, which only dashboards may write
    (the dashboard authenticated its user); everywhere else the signer is who acknowledges.
    """

    command: Literal["ack_alert"]
    record_id: RecordId
    comment: Text | None = None
    by: PersonId | None = None
    #: from the characteristic's reaction plan: required when it has one (the station checks)
    cause: Text | None = None
    action: Text | None = None
    roles = SUPERVISION
    meaning = SignatureMeaning.ACKNOWLEDGED


Command = Annotated[
    Scan | SignIn | SignOut | Patrol | Abandon | Remeasure | Release | Invalidate | Dispose | AndonOff | AckAlert,
    Field(discriminator="command"),
]
COMMAND_ADAPTER: TypeAdapter[Command] = TypeAdapter(Command)
#: every command by name, in the order a help text lists them
COMMANDS: dict[str, type[_Command]] = {
    m.model_fields["command"].annotation.__args__[0]: m  # type: ignore[union-attr]
    for m in (Scan, SignIn, SignOut, Remeasure, Invalidate, Dispose, Abandon, Patrol, AndonOff, AckAlert, Release)
}
#: the commands that always need the signer's secret (a configuration cannot waive it)
ALWAYS_SIGNED = frozenset(name for name, m in COMMANDS.items() if m.always_signed)


class Signer(BaseModel):
    """Who signs a command: a badge or user id, and that person's PIN or password."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user: Annotated[str, Field(min_length=1, max_length=128, pattern=NO_CONTROL)]
    secret: Annotated[SecretStr, Field(min_length=1, max_length=128)]


class Request(BaseModel):
    """A command as it arrives, with its signer and the requester's id for the reply."""

    model_config = ConfigDict(frozen=True)

    command: Command
    signer: Signer | None = None
    request_id: RequestId | None = None

    @property
    def name(self) -> str:
        return self.command.command


_ENVELOPE = frozenset({"command", "args", "signer", "request_id"})


def parse_request(body: Any) -> Request:
    """A command request from its JSON form; raises CommandRefused with a readable reason.

    The reason names the command and the argument, never the value (it may be a secret,
    or text that is not fit for a log line).
    """
    if not isinstance(body, Mapping):
        raise CommandRefused("a command is a JSON object")
    unknown = sorted(str(k)[:40] for k in set(body) - _ENVELOPE)
    if unknown:
        known = ", ".join(sorted(_ENVELOPE))
        raise CommandRefused(f"unknown key(s) {', '.join(repr(k) for k in unknown)} (a command has {known})")
    name = body.get("command")
    if not isinstance(name, str) or name not in COMMANDS:
        shown = repr(name[:40]) if isinstance(name, str) else repr(type(name).__name__)
        raise CommandRefused(f"unknown command {shown} (known: {', '.join(COMMANDS)})")
    args = body.get("args")
    if args is None:
        args = {}
    if not isinstance(args, Mapping):
        raise CommandRefused("args must be an object")
    if "command" in args:
        raise CommandRefused(f"{name} takes no command")
    try:
        command = COMMAND_ADAPTER.validate_python({**args, "command": name})
    except ValidationError as exc:
        raise CommandRefused(_explain(name, exc)) from None
    signer = None
    if body.get("signer") is not None:
        try:
            signer = Signer.model_validate(body["signer"])
        except ValidationError as exc:
            raise CommandRefused(_explain("signer", exc, prefix="signer.")) from None
    request_id = body.get("request_id")
    if request_id is not None:
        try:
            request_id = TypeAdapter(RequestId).validate_python(request_id)
        except ValidationError:
            raise CommandRefused("request_id must be 1 to 64 letters, digits, '.', '_', ':' or '-'") from None
    return Request(command=command, signer=signer, request_id=request_id)


def _explain(name: str, exc: ValidationError, prefix: str = "") -> str:
    reasons = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = [str(part) for part in err["loc"] if part != name]
        field = prefix + ".".join(loc) if loc else prefix.rstrip(".")
        kind = err["type"]
        ctx = err.get("ctx") or {}
        bare = field.removeprefix(prefix)
        if kind == "missing":
            reason = f"{name} needs {bare}"
        elif kind == "extra_forbidden":
            reason = f"{name} takes no {bare}"
        elif kind in ("string_type", "model_type", "dict_type"):
            reason = f"{field} must be {'a string' if kind == 'string_type' else 'an object'}"
        elif kind in ("string_too_long", "too_long"):
            reason = f"{field} is longer than {ctx.get('max_length')} characters"
        elif kind in ("string_too_short", "too_short"):
            reason = f"{field} must not be empty"
        elif kind == "string_pattern_mismatch":
            if field.endswith("_id") and field != f"{prefix}request_id":
                reason = f"{field} is not a record id"
            elif field in ("by", "operator"):
                reason = f"{field} is not a user id (letters, digits, '.', '_', '@', '-')"
            else:
                reason = f"{field} contains a control character or a line break"
        elif kind == "literal_error":
            reason = f"{field} must be {ctx.get('expected')}"
        else:
            reason = str(err["msg"]).removeprefix("Value error, ")
            reason = f"{field}: {reason}" if field else reason
        if reason not in reasons:
            reasons.append(reason)
    return "; ".join(reasons)
