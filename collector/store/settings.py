"""The ``influxdb`` section of the configuration, and reading it alone.

``collector trace`` needs the store's address and the register of gateways, nothing else:
:func:`load_store_section` reads just those from the file, so that the command does not pay
for importing and validating the whole configuration (the inspection domain's models).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, ValidationError

from collector.config_file import Identifier, Secret, _Section, format_errors, read_yaml
from collector.errors import ConfigError


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
