"""The command vocabulary: one parser for the operator view and MQTT, with the record's checks."""

from __future__ import annotations

import json
from typing import Any

import pytest

from collector.inspection.commands import (
    ALWAYS_SIGNED,
    COMMANDS,
    AckAlert,
    CommandRefused,
    Dispose,
    Invalidate,
    parse_request,
)
from collector.people.register import Role

RID = "0195abcd-0000-7000-8000-000000000001"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"command": "remeasure", "args": {}}, "remeasure needs reason"),
        ({"command": "remeasure", "args": {"reason": "x", "timeout": "0"}}, "remeasure takes no timeout"),
        ({"command": "invalidate", "args": {"reason": "x"}}, "invalidate needs record_id"),
        ({"command": "patrol", "args": {"by": "op-1"}}, "patrol takes no by"),  # the signer is who did it
        ({"command": "patrol", "args": ["op-1"]}, "args must be an object"),
        ({"command": "remeasure", "args": {"reason": 17}}, "reason must be a string"),
        (["scan"], "a command is a JSON object"),
        ({"command": "format_disk"}, "unknown command 'format_disk' (known: scan, sign_in, sign_out"),
        ({"command": "scan", "args": {"code": "x"}, "sudo": True}, "unknown key(s) 'sudo'"),
        ({"command": "invalidate", "args": {"record_id": "../../etc", "reason": "x"}}, "record_id is not a record id"),
        # the record schema's limits, before anything is journaled
        ({"command": "invalidate", "args": {"record_id": RID, "reason": "x" * 201}}, "reason is longer than 200"),
        ({"command": "remeasure", "args": {"reason": "gauge\nnot seated"}}, "reason contains a control character"),
        ({"command": "remeasure", "args": {"reason": "a\u2028b"}}, "reason contains a control character"),
        ({"command": "ack_alert", "args": {"record_id": RID, "by": "plant\nmanager"}}, "by is not a user id"),
        ({"command": "ack_alert", "args": {"record_id": RID, "comment": ""}}, "comment must not be empty"),
        (
            {"command": "dispose", "args": {"nonconformance_id": RID, "decision": "use_as_is"}},
            "use as is needs a concession",
        ),
        ({"command": "dispose", "args": {"nonconformance_id": RID, "decision": "bin"}}, "decision must be 'scrap'"),
        ({"command": "sign_in", "signer": {"user": "op-42"}}, "signer needs secret"),
        ({"command": "sign_in", "signer": {"user": "op\r42", "secret": "1"}}, "signer.user contains a control"),
        ({"command": "sign_in", "signer": "op-42:1234"}, "signer must be an object"),
        ({"command": "patrol", "request_id": "x" * 65}, "request_id must be 1 to 64"),
    ],
)
def test_bad_commands_are_refused_with_a_reason(body: Any, error: str) -> None:
    with pytest.raises(CommandRefused) as caught:
        parse_request(body)
    assert error in str(caught.value)
    assert caught.value.kind == "invalid"


def test_the_reason_never_repeats_a_secret_or_the_bad_value() -> None:
    with pytest.raises(CommandRefused) as caught:
        parse_request({"command": "sign_in", "signer": {"user": "op-42", "secret": "9" * 129}})
    assert "999" not in str(caught.value) and "signer.secret is longer than 128" in str(caught.value)
    with pytest.raises(CommandRefused) as caught:
        parse_request({"command": "remeasure", "args": {"reason": "DROP TABLE\n"}})
    assert "DROP" not in str(caught.value)


def test_a_good_command_parses_into_its_model() -> None:
    request = parse_request(
        {
            "command": "dispose",
            "args": {"nonconformance_id": RID, "decision": "use_as_is", "concession": "DP-2026-014"},
            "signer": {"user": "qe-7", "secret": "quality-pw"},
            "request_id": "r-1",
        }
    )
    assert isinstance(request.command, Dispose) and request.command.concession == "DP-2026-014"
    assert request.signer is not None and request.signer.secret.get_secret_value() == "quality-pw"
    assert "quality-pw" not in repr(request) and request.name == "dispose" and request.request_id == "r-1"
    # JSON round trip, as the MQTT entry reads it
    again = parse_request(json.loads(json.dumps({"command": "ack_alert", "args": {"record_id": RID, "by": "sam"}})))
    assert isinstance(again.command, AckAlert) and again.command.by == "sam"


def test_who_may_do_what() -> None:
    """The roles table of docs/people.md."""
    table = {name: sorted(model.roles) for name, model in COMMANDS.items()}
    everyone = sorted(Role)
    assert table == {
        "scan": everyone,
        "sign_in": everyone,
        "sign_out": everyone,
        "remeasure": everyone,
        "invalidate": sorted({Role.SUPERVISOR, Role.QUALITY}),
        "dispose": [Role.QUALITY],  # the MRB
        "abandon": everyone,
        "patrol": everyone,
        "andon_off": sorted({Role.SUPERVISOR, Role.QUALITY}),
        "ack_alert": sorted({Role.SUPERVISOR, Role.QUALITY}),
        "release": everyone,
    }
    assert {"remeasure", "invalidate", "dispose", "release"} == ALWAYS_SIGNED
    assert {n for n, m in COMMANDS.items() if m.without_register} == {"scan", "sign_out", "patrol", "abandon"}
    assert Invalidate.meaning == "invalidated" and Dispose.meaning == "dispositioned"
