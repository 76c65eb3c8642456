"""JSON Schemas generated from the models, committed under ``config/schemas/``.

Consumers of the MQTT payloads (and editors of configuration files) get them from here;
a test fails when the committed files fall behind the models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter

from collector.config import Config
from collector.inspection.commands import Request
from collector.inspection.models import RECORD_MODELS, Alert, BlockModel, Characteristic, Gauge, InspectionPlan
from collector.people.register import UserRegister
from drivers import registry
from drivers.base import Reading


def _config_schema() -> dict[str, Any]:
    """The configuration schema, with each device written the way users write it.

    In the file a device is the driver's own settings plus ``gauge``; the model wraps the
    driver part, so the generated schema is patched to the flat form, one branch per driver.
    """
    schema = Config.model_json_schema(mode="validation")
    defs = schema.setdefault("$defs", {})
    branches = []
    for name in registry.names():
        model = registry.get(name).config_model
        sub = model.model_json_schema(mode="validation", ref_template="#/$defs/{model}")
        defs.update(sub.pop("$defs", {}))
        sub.setdefault("properties", {})["gauge"] = {
            "anyOf": [{"type": "string"}, {"type": "null"}],
            "description": "gauge register id of this device",
        }
        sub["properties"]["driver"] = {"const": name}
        defs[f"Device_{name}"] = sub
        branches.append({"$ref": f"#/$defs/Device_{name}"})
    defs["DeviceSettings"] = {"oneOf": branches, "description": "a device: driver settings plus gauge"}
    defs.pop("DriverConfig", None)
    return schema


def _command_schema() -> dict[str, Any]:
    """A command as it is sent: the command's name, its arguments under ``args``, the signer."""
    schema = Request.model_json_schema(mode="validation")
    defs = schema.setdefault("$defs", {})
    branches = []
    for name, ref in schema["properties"]["command"]["discriminator"]["mapping"].items():
        model = defs[ref.rsplit("/", 1)[1]]
        args = {k: v for k, v in model.get("properties", {}).items() if k != "command"}
        branch: dict[str, Any] = {
            "properties": {"command": {"const": name}, "args": {"type": "object", "properties": args}},
            "required": ["command"],
        }
        required = [r for r in model.get("required", []) if r != "command"]
        if required:
            branch["properties"]["args"]["required"] = required
            branch["required"] = ["command", "args"]
        branch["properties"]["args"]["additionalProperties"] = False
        branches.append(branch)
    properties = {k: v for k, v in schema["properties"].items() if k != "command"}
    properties["command"] = {"enum": sorted(schema["properties"]["command"]["discriminator"]["mapping"])}
    properties["args"] = {"type": "object"}
    schema["properties"] = properties
    schema["oneOf"] = branches
    schema["required"] = ["command"]
    schema["additionalProperties"] = False
    return schema


def schemas() -> dict[str, dict[str, Any]]:
    #: one schema per record kind (a record as it sits in its block) and the block itself
    records = {("inspection" if kind == "measurement" else kind) + "-record": m for kind, m in RECORD_MODELS.items()}
    models: dict[str, type[BaseModel]] = {
        **records,
        "block": BlockModel,
        "alert": Alert,
        "characteristic": Characteristic,
        "inspection-plan": InspectionPlan,
        "gauge": Gauge,
        "user-register": UserRegister,
    }
    out = {name: m.model_json_schema(mode="validation") for name, m in models.items()}
    out["reading"] = TypeAdapter(Reading).json_schema(mode="serialization")
    out["command"] = _command_schema()
    out["config"] = _config_schema()
    for name, schema in out.items():
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"{name}.schema.json"
    return out


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_schemas(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = out_dir / f"{name}.schema.json"
        path.write_text(render(schema), encoding="utf-8")
        written.append(path)
    return written
