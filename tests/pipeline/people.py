"""A user register for the pipeline tests: an inspector, a supervisor, a quality engineer.

Hashes are made with a tiny scrypt cost so that tests check secrets in microseconds; the
cost travels in the hash string, so the gateway checks them the same way as real ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from collector.people.accounts import hash_password

#: user id -> (badge, name, roles, PIN or password)
PEOPLE: dict[str, tuple[str | None, str, list[str], str]] = {
    "op-42": ("op-42", "Olga Petrova", ["inspector"], "2468"),
    "sv-3": (None, "Sam Vogt", ["supervisor"], "sv-pass-3"),
    "qe-7": (None, "Quentin Eder", ["quality"], "qe-pass-7"),
}
SECRET = {user: entry[3] for user, entry in PEOPLE.items()}


def register_data(expires: str = "2099-12-31") -> dict[str, Any]:
    users = []
    for user, (badge, name, roles, secret) in PEOPLE.items():
        entry: dict[str, Any] = {
            "id": user,
            "name": name,
            "roles": roles,
            "secret_hash": hash_password(secret, n=2**4, r=1, p=1),
            "qualifications": [{"plan": "*", "expires": expires}],
        }
        if badge is not None:
            entry["badge"] = badge
        users.append(entry)
    return {"users": users}


def write_register(directory: Path, **kwargs: Any) -> Path:
    path = directory / "people.yaml"
    path.write_text(yaml.safe_dump(register_data(**kwargs), sort_keys=False))
    return path


def signer(user: str) -> dict[str, str]:
    return {"user": user, "secret": SECRET[user]}
