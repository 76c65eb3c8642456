"""Commands from people into the gateway: parse, authenticate, authorise, and refuse on the record.

Three ways in, one vocabulary (:mod:`collector.inspection.commands`):

- the operator view (HTTP): a sign-in with badge or user id and PIN or password opens a
  session bound to the station; commands then come from the signed-in person, and those
  that need it carry the signer's secret again (re-authentication at the moment of signing);
- a station's command topic, ``<prefix>/<site>/<line>/<station>/command``: every command
  carries its signer's credentials, checked against the user register (so it is only for
  TLS connections, and the broker's ACL lets only operator-view accounts write there);
- a station's acknowledgement topic, ``.../ack``: ``ack_alert`` only, with the dashboard's
  signed-in user in ``by``. MQTT does not tell a subscriber who published; the ACL does:
  only dashboard accounts may write this topic, and the dashboard authenticated its user.

Whoever is not authenticated, lacks the role a command needs, or acts on another station's
record is refused with a readable reason, and the refusal is an audit record in the
station's chain (``command_refused``), at most ``refusal_records_per_minute`` of them: the
rest are counted, logged once per burst, and the next record says how many were left out.

Checking a secret costs a scrypt hash (a quarter of a second or more on a Pi), so it never
happens in the gateway's processing thread or in the MQTT client's network thread: the
view's request threads do it for their requests, and one worker thread here for MQTT
commands, behind a bounded queue.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import queue
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from collector.config import PeopleSettings
from collector.errors import CollectorError
from collector.inspection.commands import (
    AckAlert,
    CommandRefused,
    Dispose,
    Request,
    Scan,
    SignIn,
    parse_request,
)
from collector.people.authentication import AuthenticationFailed, Authenticator, Session, Sessions
from collector.people.register import Actor, Role, Signature, UserRegister, is_person_id

if TYPE_CHECKING:
    from collector.gateway.daemon import Gateway, _Call
    from collector.inspection.station import Outcome

log = logging.getLogger(__name__)

VIEW = "operator view"
MQTT = "command topic"
ACK = "acknowledgement topic"
#: MQTT commands waiting for their signer's secret to be checked, at most
MQTT_BACKLOG = 64
_SUPERVISION = frozenset({Role.SUPERVISOR, Role.QUALITY})


class PeopleRules:
    """The station's view of the user register (:class:`collector.inspection.station.PeopleGate`)."""

    def __init__(self, settings: PeopleSettings, register: UserRegister) -> None:
        self.settings = settings
        self.register = register

    @property
    def badge_alone(self) -> bool:
        return "sign_in" not in self.settings.secret_required

    @property
    def signed_release(self) -> bool:
        return self.settings.signed_release

    def identify(self, badge: str) -> Signature | None:
        person = self.register.find(badge)
        if person is None or person.disabled:
            return None
        return Signature(person.id, person.name, "badge")

    def competence(self, user: str, part_number: str, today: dt.date) -> str | None:
        if not self.settings.competence_gate:
            return None
        person = self.register.get(user)
        if person is None:
            return f"{user} is not in the user register"
        return person.qualification_problem(part_number, today)


class RefusalBudget:
    """At most ``per_minute`` refusal records a minute; beyond, counted (and said in the next)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._lock = threading.Lock()
        self._window = clock()
        self._used = 0
        self._left_out = 0  # refusals not recorded since the last one that was
        self.not_recorded = 0  # in all

    def take(self) -> int | None:
        """None: do not record this one; else how many were left out before it."""
        now = self._clock()
        with self._lock:
            if now - self._window >= 60:
                self._window, self._used = now, 0
            if self._used >= self.per_minute:
                if self._left_out == 0:
                    log.warning(
                        "over %d refused commands a minute: the rest are counted, not recorded", self.per_minute
                    )
                self._left_out += 1
                self.not_recorded += 1
                return None
            self._used += 1
            left_out, self._left_out = self._left_out, 0
            return left_out


class Intake:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        settings = gateway.settings.people
        register = gateway.config.register
        self.settings = settings
        self.register = register
        self.rules = PeopleRules(settings, register) if settings is not None and register is not None else None
        self.authenticator = (
            Authenticator(
                register,
                max_failures=settings.max_failures,
                lockout=settings.lockout,
                checks_per_second=settings.checks_per_second,
                burst=max(6, int(3 * settings.checks_per_second)),
            )
            if settings is not None and register is not None
            else None
        )
        self.sessions = Sessions(settings.session_idle_timeout if settings is not None else 900.0)
        self.budget = RefusalBudget(settings.refusal_records_per_minute if settings is not None else 30)
        self.refused: Counter[str] = Counter()  # refused commands by kind (invalid, unauthenticated ...)
        self.busy = 0  # MQTT commands refused because the worker's queue was full
        self._queue: queue.Queue[tuple[str, str, bytes] | None] = queue.Queue(MQTT_BACKLOG)
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopped = False

    # -- who gives the command -------------------------------------------------------------------
    def authorise(self, station: str, request: Request, channel: str, session: Session | None = None) -> Actor | None:
        """The person the command comes from (None: nobody, where that is allowed).

        Raises CommandRefused (after putting the refusal on record where it is one).
        """
        cmd = request.command
        name = request.name
        model = type(cmd)
        claimed = request.signer.user if request.signer is not None else None
        if channel == ACK and isinstance(cmd, Dispose):
            return self._dashboard_disposition(station, cmd)
        if channel == ACK:
            if not isinstance(cmd, AckAlert):
                only = "only ack_alert and dispose may be sent on the acknowledgement topic"
                self.refuse(station, name, None, f"{only} ({channel})")
            if cmd.by is None:
                raise CommandRefused("ack_alert on the acknowledgement topic needs by (the dashboard's user)")
            return Actor(cmd.by, None, _SUPERVISION, "dashboard", "dashboard")
        if isinstance(cmd, AckAlert | Dispose) and cmd.by is not None:
            self.refuse(station, name, cmd.by, "by is for dashboards, on the acknowledgement topic: sign instead")
        if request.signer is not None:
            if self.authenticator is None:
                self.refuse(station, name, claimed, _NO_REGISTER)
            assert self.authenticator is not None
            try:
                person = self.authenticator.authenticate(request.signer.user, request.signer.secret.get_secret_value())
            except AuthenticationFailed as exc:
                self.refuse(station, name, claimed, str(exc), "unauthenticated", detail=exc.detail)
            actor = Actor.of(person, "secret", channel)
        elif session is not None:
            actor = Actor.of(session.person, "session", channel)
        elif isinstance(cmd, Scan) and channel == VIEW:
            return None  # a badge, perhaps: the station refuses a part label from nobody
        elif self.register is None and (channel == MQTT or not model.without_register):
            self.refuse(station, name, None, f"{name} needs a signature, and {_NO_REGISTER}")
        elif self.register is None:
            return None  # at the station's screen, where nobody can be authenticated: as before the register
        elif channel == MQTT:
            self.refuse(station, name, None, f"{name} needs signer credentials ({{user, secret}}) on the command topic")
        elif isinstance(cmd, SignIn):
            raise CommandRefused("sign in with your badge or user id and PIN or password", "unauthenticated")
        else:
            self.refuse(station, name, None, f"sign in first: {name} needs someone signed in", "unauthenticated")
        if not actor.roles & model.roles:
            needs, has = " or ".join(sorted(model.roles)), ", ".join(sorted(actor.roles))
            self.refuse(station, name, actor.user, f"{name} needs the role {needs} ({actor.user} has {has})")
        if self.settings is not None and name in self.settings.secret_required and actor.method == "session":
            self.refuse(station, name, actor.user, f"{name} needs the signer's PIN or password", "unauthenticated")
        return actor

    def _dashboard_disposition(self, station: str, cmd: Dispose) -> Actor:
        """A disposition signed on the dashboard: the person must be in this gateway's register with the quality role.

        The dashboard authenticated its user; the gateway does not take the dashboard's word for
        the role (a dashboard's own user list could say anything), it asks its register.
        """
        if cmd.by is None:
            self.refuse(station, cmd.command, None, "dispose on the acknowledgement topic needs by")
        assert cmd.by is not None
        person = self.register.get(cmd.by) if self.register is not None else None
        if person is None:
            self.refuse(station, cmd.command, cmd.by, f"{cmd.by} is not in this gateway's register of people")
        assert person is not None
        actor = Actor.of(person, "dashboard", "dashboard")
        if not actor.roles & type(cmd).roles:
            has = ", ".join(sorted(actor.roles)) or "no role"
            self.refuse(station, cmd.command, cmd.by, f"dispose needs the role quality ({cmd.by} has {has})")
        return actor

    def refuse(
        self,
        station: str,
        command: str,
        user: str | None,
        reason: str,
        kind: str = "forbidden",
        *,
        detail: str | None = None,
    ) -> NoReturn:
        """Put the refusal on record (within the budget) and raise it."""
        self.refused[kind] += 1
        log.warning("station %s: %s refused: %s", station, command, detail or reason)
        self.record_refusal(station, command, user, detail or reason)
        raise CommandRefused(reason, kind)

    def record_refusal(self, station: str, command: str, user: str | None, reason: str) -> None:
        left_out = self.budget.take()
        if left_out is None or station not in self.gateway.stations:
            return
        if left_out:
            reason += f" ({left_out} earlier refusal(s) were counted, not recorded)"
        by = user if user is not None and is_person_id(user) else None
        args = {"command": command, "by": by, "reason": reason}
        self.gateway.command_async(station, "refused", None, None, args=args)

    # -- the operator view ---------------------------------------------------------------------------
    def run(
        self, station: str, request: Request, *, session: Session | None, timeout: float = 10.0
    ) -> tuple[Outcome, Actor | None]:
        """A command from the operator view: its outcome once journaled, and who gave it.

        Raises CommandError (CommandRefused when refused), ScanError, JournalError.
        """
        actor = self.authorise(station, request, VIEW, session)
        return self.gateway.command(station, request, actor, timeout=timeout, channel=VIEW), actor

    # -- MQTT --------------------------------------------------------------------------------------
    def from_mqtt(self, station: str, topic: str, payload: bytes) -> None:
        """A message on a station's command or acknowledgement topic (paho's thread: never blocks)."""
        with self._lock:
            if self._stopped:
                return
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="command-intake", daemon=True)
                self._worker.start()
        try:
            self._queue.put_nowait((station, topic, payload))
        except queue.Full:
            self.busy += 1
            self._reply(topic, _request_id(payload), None, error="the gateway is busy with other commands: try again")

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            worker = self._worker
        if worker is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put(None, timeout=1.0)
            worker.join(5)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            station, topic, payload = item
            try:
                self._mqtt_command(station, topic, payload)
            except Exception:  # a bug: say so, keep serving
                log.exception("station %s: a command on %s could not be handled", station, topic)

    def _mqtt_command(self, station: str, topic: str, payload: bytes) -> None:
        channel = ACK if topic.endswith("/ack") else MQTT
        request_id = _request_id(payload)
        try:
            body = json.loads(payload)
            request = parse_request(body)
        except (ValueError, UnicodeDecodeError):
            self.refused["invalid"] += 1
            self._reply(topic, request_id, None, error="malformed command: not JSON")
            return
        except CommandRefused as exc:
            self.refused["invalid"] += 1
            name = body.get("command") if isinstance(body, dict) and isinstance(body.get("command"), str) else None
            self._reply(topic, request_id, name, error=str(exc))
            return
        try:
            actor = self.authorise(station, request, channel)
        except CommandRefused as exc:
            self._reply(topic, request.request_id, request.name, error=str(exc), refused=exc.kind)
            return

        def reply(call: _Call) -> None:
            error = call.error
            if error is not None:
                kind = getattr(error, "kind", None)
                self._reply(topic, request.request_id, request.name, error=str(error), refused=kind)
            else:
                assert call.outcome is not None
                self._reply(
                    topic,
                    request.request_id,
                    request.name,
                    message=call.outcome.message,
                    records=[str(d["id"]) for d in call.outcome.drafts],
                )

        try:
            self.gateway.command_async(station, request.name, request, actor, on_done=reply, channel=channel)
        except CollectorError as exc:
            self._reply(topic, request.request_id, request.name, error=str(exc))

    def _reply(
        self,
        topic: str,
        request_id: str | None,
        command: str | None,
        *,
        error: str | None = None,
        refused: str | None = None,
        message: str | None = None,
        records: list[str] | None = None,
    ) -> None:
        body: dict[str, Any] = {"request_id": request_id, "command": command, "ok": error is None}
        if error is not None:
            body["error"] = error
            if refused is not None:
                body["refused"] = refused
        else:
            body["message"] = message
            body["records"] = records or []
        self.gateway.publisher.publish(topic + "/reply", json.dumps(body).encode())


_NO_REGISTER = "this gateway has no user register: nobody can be authenticated here (gateway.people.register)"


def _request_id(payload: bytes) -> str | None:
    """The request id, echoed even in the reply to a command that cannot be parsed (when it is sane)."""
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    rid = body.get("request_id") if isinstance(body, dict) else None
    return rid if isinstance(rid, str) and _REQUEST_ID.fullmatch(rid) else None


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
