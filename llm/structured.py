"""Structured output, pure: pull the JSON out of a model's answer, validate it against a
JSON schema, and word the instructions and corrections sent back to the model (French, as
the models are prompted in French)."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema

from llm.errors import InvalidStructuredOutput
from llm.types import ChatMessage

_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL | re.IGNORECASE)


def extract_json_text(text: str) -> str:
    """The JSON part of an answer: strips a ```json fence and any prose around the
    outermost object or array."""
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        return fenced.group(1).strip()
    if stripped[:1] in "{[":
        return stripped
    starts = [i for i in (stripped.find("{"), stripped.find("[")) if i >= 0]
    if not starts:
        return stripped
    start = min(starts)
    end = max(stripped.rfind("}"), stripped.rfind("]"))
    return stripped[start : end + 1] if end > start else stripped[start:]


def parse_structured(text: str, schema: dict[str, Any]) -> Any:
    """Parse and validate; raise InvalidStructuredOutput saying what is wrong."""
    candidate = extract_json_text(text)
    try:
        data = json.loads(candidate)
    except json.JSONDecodeError as exc:
        raise InvalidStructuredOutput(f"not JSON: {exc}", text=text) from None
    try:
        jsonschema.validate(data, schema)
    except jsonschema.ValidationError as exc:
        path = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise InvalidStructuredOutput(
            f"JSON does not match the schema at {path}: {exc.message}", text=text
        ) from None
    except jsonschema.SchemaError as exc:
        raise ValueError(f"invalid JSON schema: {exc.message}") from None
    return data


def schema_instruction(schema: dict[str, Any]) -> str:
    return (
        "Réponds uniquement par un objet JSON valide conforme à ce schéma JSON, "
        "sans texte autour :\n" + json.dumps(schema, ensure_ascii=False)
    )


def correction_messages(bad_answer: str, error: InvalidStructuredOutput) -> list[ChatMessage]:
    """What to append to the conversation to ask the model to fix its answer."""
    return [
        ChatMessage("assistant", bad_answer),
        ChatMessage(
            "user",
            f"Ta réponse n'est pas un JSON conforme au schéma ({error}). "
            "Réponds à nouveau uniquement avec le JSON corrigé.",
        ),
    ]
