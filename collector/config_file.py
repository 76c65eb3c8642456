"""Reading a YAML configuration file: secrets, errors that name the line and the field, and
the ``influxdb`` section on its own.

Shared by the full configuration (:mod:`collector.config`) and by commands that need one
section only: ``collector trace`` reads the ``influxdb`` section with
:func:`load_store_section`, without importing and validating the inspection domain (~110 ms
of imports on a small machine).

May import ``collector.errors`` only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError

from collector.errors import ConfigError

#: what installers, examples and tutorials write where a secret belongs: a daemon refuses to
#: start with one of these (compared without case, spaces, dashes and underscores)
PLACEHOLDERS = frozenset(
    {"changeme", "changeit", "change", "password", "passw0rd", "secret", "example", "default", "admin", "test", "xxx"}
)


def placeholder_problem(secret: str) -> str | None:
    """Why ``secret`` is not a real secret (empty, or a placeholder such as "changeme"), or None."""
    if not secret.strip():
        return "is empty"
    folded = "".join(c for c in secret.lower() if c not in " -_.")
    if folded in PLACEHOLDERS or folded.startswith("changeme") or (secret.startswith("<") and secret.endswith(">")):
        return "is a placeholder: put the real secret there"
    return None


def _resolve_secret(value: Any) -> Any:
    if isinstance(value, Mapping):
        if set(value) == {"env"}:
            name = str(value["env"])
            if name not in os.environ:
                raise ValueError(f"environment variable {name} is not set")
            return os.environ[name]
        if set(value) == {"file"}:
            path = Path(str(value["file"]))
            try:
                return path.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
        raise ValueError("a secret is a string, {env: NAME} or {file: PATH}")
    return value


def _real_secret(value: SecretStr) -> SecretStr:
    problem = placeholder_problem(value.get_secret_value())
    if problem is not None:
        raise ValueError(f"the secret {problem}")
    return value


#: a password, token or key: refused when empty or a placeholder ("changeme"), so that a
#: daemon installed from the examples does not start with a secret everybody knows
Secret = Annotated[SecretStr, BeforeValidator(_resolve_secret), AfterValidator(_real_secret)]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def where(root: yaml.Node | None, loc: Sequence[int | str]) -> str:
    where = _loc_path(loc)
    line = _line_of(root, loc)
    return f"line {line}: {where}" if line is not None else where


def _loc_path(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _clean_loc(loc: Sequence[int | str]) -> list[int | str]:
    """Drop pydantic's internal steps (union tags, our driver_config wrapper, validators)."""
    out: list[int | str] = []
    for part in loc:
        if part in ("driver_config", "v1", "v2") or (isinstance(part, str) and part.startswith("function-")):
            continue
        out.append(part)
    return out


def _line_of(node: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """The 1-based line in the YAML file where the field at ``loc`` (or its nearest parent) is."""
    line = None if node is None else node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            nxt = node.value[part]
        else:
            nxt = None
        if nxt is None:
            break
        node = nxt
        line = node.start_mark.line + 1
    return line


def format_errors(exc: ValidationError, root: yaml.Node | None) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = _clean_loc(err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (misspelt, or not valid here)"
        problems.append((where(root, loc), msg))
    return problems


def read_yaml(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """The YAML's node tree (for line numbers) and its data; ConfigError when it is not YAML."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader), yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "(file)"
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [(where, f"not valid YAML: {reason}")]) from None


# -- the store's section -----------------------------------------------------------------------


class InfluxV1Settings(_Section):
    kind: Literal["v1"] = "v1"
    url: str = "http://127.0.0.1:8086"
    database: Identifier = "quality"
    retention_policy: str | None = None
    username: str | None = None
    password: Secret | None = None
    timeout: float = Field(default=10.0, gt=0)


class InfluxV2Settings(_Section):
    kind: Literal["v2"]
    url: str
    token: Secret
    org: str
    bucket: str
    #: the database name of the DBRP mapping that InfluxQL queries use (default: the bucket)
    database: str | None = None
    retention_policy: str | None = None
    timeout: float = Field(default=10.0, gt=0)


InfluxSettings = Annotated[InfluxV1Settings | InfluxV2Settings, Field(discriminator="kind")]


def load_store_section(path: str | os.PathLike[str]) -> tuple[InfluxSettings, Path | None]:
    """The ``influxdb`` section of the file at ``path`` and its ``recorder.keys`` (or None).

    Raises :class:`ConfigError` (file, field, reason) as :func:`collector.config.load` does.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(p), [("(file)", exc.strerror or str(exc))]) from None
    root, data = read_yaml(text, str(p))
    if not isinstance(data, dict):
        raise ConfigError(str(p), [("(top level)", "expected a mapping of sections")])
    if data.get("influxdb") is None:
        raise ConfigError(str(p), [("influxdb", "this command needs the influxdb section")])
    try:
        influx = _StoreOnly.model_validate({"influxdb": data["influxdb"]}).influxdb
    except ValidationError as exc:
        raise ConfigError(str(p), format_errors(exc, root)) from None
    recorder = data.get("recorder")
    keys = recorder.get("keys") if isinstance(recorder, dict) else None
    return influx, Path(str(keys)) if keys else None


class _StoreOnly(BaseModel):
    influxdb: InfluxSettings
