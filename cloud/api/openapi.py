"""The hub's OpenAPI document, completed: every status an operation can answer, and examples.

FastAPI documents the success and a 422 in its own shape; the hub answers every error as an RFC 9457
problem (cloud.api.errors). This module rewrites the generated document once, when first asked:

- a ``Problem`` schema (and ``ValidationProblem``, which adds ``errors``) in the components;
- on every /api operation: 401 and 403 (authentication comes before anything else) and the bearer
  scheme; 422 where the operation takes a body or parameters; 404 where it has path parameters; 503
  everywhere (the database down); the statuses a route declares with ``responses=`` keep their
  descriptions and get the problem schema;
- FastAPI's HTTPValidationError 422 gives way to the problem one;
- an example on every JSON request body (``BODY_EXAMPLES``; a test validates each against its model)
  and on every problem response.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from cloud.api.errors import PROBLEM_JSON

__all__ = ["BODY_EXAMPLES", "OPERATION_EXAMPLES", "install_openapi"]

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_VALIDATION_REF = {"$ref": "#/components/schemas/ValidationProblem"}
_BEARER = "HTTPBearer"
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_MUTATIONS = frozenset({"put", "post", "delete", "patch"})

_PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An error, as RFC 9457 problem details (application/problem+json).",
    "type": "object",
    "required": ["type", "title", "status", "detail", "instance", "request_id"],
    "properties": {
        "type": {
            "type": "string",
            "description": "a URI naming the kind of problem; about:blank: see status",
        },
        "title": {"type": "string", "description": "the status's phrase"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "description": "what was expected and what came, for people"},
        "instance": {"type": "string", "description": "the path of the request that failed"},
        "request_id": {
            "type": ["string", "null"],
            "description": "the request's X-Request-ID; the hub's logs carry it",
        },
    },
}
_VALIDATION_SCHEMA: dict[str, Any] = {
    "title": "ValidationProblem",
    "description": "A request that does not fit the operation's schema: one entry per failed field.",
    "allOf": [
        _PROBLEM_REF,
        {
            "type": "object",
            "properties": {
                "errors": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["loc", "msg", "type"],
                        "properties": {
                            "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                            "msg": {"type": "string"},
                            "type": {"type": "string"},
                        },
                    },
                }
            },
        },
    ],
}

# What each status means when a route does not say more.
_DEFAULT_DESCRIPTIONS = {
    400: "the body could not be read: not JSON, or not a well-formed form",
    401: "no valid API token (or session)",
    403: "the token's role is too low for this operation (or a session's CSRF token is missing)",
    404: "no such resource: one named in the path, the query or the body is not known",
    409: "the request contradicts what is stored: a duplicate, or a change its state does not allow",
    422: "the request does not fit this operation's schema, or its values are invalid",
    503: "the database (or another service the operation needs) is unavailable; try again later",
}

# An example of each JSON request body, by its schema's name in the components.
BODY_EXAMPLES: dict[str, dict[str, Any]] = {
    "DeviceLabelsReplace": {"labels": {"site": "lab", "tier": "canary"}},
    "DeviceLabelsPatch": {"set": {"tier": "canary"}, "remove": ["retired"]},
    "AssignmentCreate": {"model": "digits", "version": "1.2.0", "selector": "site=lab,tier=canary"},
    "TokenCreate": {"name": "ci-deploy", "role": "operator"},
    "RotationCreate": {"role": "timestamp"},
    "SignaturesIn": {"signatures": {"9a3f" + "0" * 60: "3045022100" + "ab" * 35}},
    "FirmwareAssignmentCreate": {"name": "sim-board-os", "version": "2.1.0", "selector": {"site": "lab"}},
    "CohortCreate": {
        "name": "lab-canary",
        "selector": "site=lab,tier=canary",
        "description": "the lab's canaries",
    },
    "RolloutAction": {"reason": "the gate figures look wrong; checking the cohort first"},
    "AlertReceiverCreate": {"name": "ops-webhook", "url": "https://ops.example/hooks/edgefleet"},
    "AlertReceiverUpdate": {"enabled": False},
    "TrainingRunCreate": {"model": "digits", "reason": "accuracy dropped in the lab cohort"},
    "TrainingRunApprove": {"reason": "beats the champion on every cohort", "supersede": False},
    "TrainingRunAction": {"reason": "trained on a mislabelled upload"},
    "SessionLogin": {"token": "Zq3v9mXn0bK2pW7yR4tL8cJ1hF6dS5aE0uI9oP2gT3w"},
    "CsrIn": {
        "csr_pem": "-----BEGIN CERTIFICATE REQUEST-----\nMIIBDzCBtgIBADAU...\n"
        "-----END CERTIFICATE REQUEST-----\n"
    },
    "ExperimentCreate": {
        "run_id": "0f3c9a1e",
        "name": "digits",
        "kind": "mlp",
        "params": {"hidden": 64, "epochs": 20},
        "seed": 0,
        "metrics": {"accuracy": 0.97},
        "dataset_name": "digits",
        "dataset_hash": "5" * 64,
        "dataset_sizes": {"train": 1437, "test": 360},
        "code_revision": "3e1d2c4",
        "duration_s": 12.5,
        "device": "cpu",
        "started_at": "2030-01-02T03:04:05Z",
        "finished_at": "2030-01-02T03:04:17Z",
    },
}


# Examples of bodies whose schema is written inline (no component to name them by).
OPERATION_EXAMPLES: dict[tuple[str, str], Any] = {
    # A rules file: YAML text, or in JSON this document.
    ("post", "/api/v1/alert-rules/apply"): {
        "rules": [{"name": "drift", "metric": "drift_score", "comparison": ">", "threshold": 1, "for": "10m"}]
    },
    ("post", "/api/v1/rollouts"): {
        "name": "digits-v3-canary",
        "target": {"kind": "model", "model": "digits", "version": "3"},
        "stages": [
            {
                "name": "canary",
                "cohort": "canary",
                "percent": 10,
                "min_devices": 1,
                "bake": "10m",
                "approval": True,
            },
            {"name": "half", "percent": 50, "bake": "30m", "max_rate": 20},
            {"name": "all", "percent": 100, "bake": "1h", "max_rate": 50},
        ],
        "gates": {"min_reporting": 3, "max_update_failure_pct": 10, "max_rollback_pct": 5},
        "on_failure": "pause",
    },
}


def _ref_name(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        return ref.rsplit("/", 1)[-1]
    for option in schema.get("anyOf", []):
        name = _ref_name(option)
        if name is not None:
            return name
    return None


def _problem_example(status: int, path: str, detail: str) -> dict[str, Any]:
    return {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": path,
        "request_id": "5b1c2f0e9d8a4c7b",
    }


def _problem_response(status: int, path: str, op: dict[str, Any], description: str) -> dict[str, Any]:
    schema = _VALIDATION_REF if status == 422 else _PROBLEM_REF
    example = _problem_example(status, path, description)
    if status == 422:
        params = op.get("parameters", [])
        loc = ["body"] if "requestBody" in op or not params else [params[0]["in"], params[0]["name"]]
        example["errors"] = [{"loc": loc, "msg": "Input should be a valid value", "type": "value_error"}]
    return {"description": description, "content": {PROBLEM_JSON: {"schema": schema, "example": example}}}


def _wanted_statuses(path: str, method: str, op: dict[str, Any]) -> set[int]:
    params = op.get("parameters", [])
    has_body = "requestBody" in op
    wanted = {503}
    if path.startswith("/api/") or op.get("security"):
        wanted |= {401, 403}
    if has_body:
        wanted.add(400)  # a body that does not parse (not JSON, a broken multipart form)
    if params or has_body:
        wanted.add(422)
    # Path parameters name a resource; a body or a query can name one too (a model, a cohort).
    if path.startswith("/api/") and (params or has_body):
        wanted.add(404)
    if path.startswith("/api/") and method in _MUTATIONS:
        wanted.add(409)
    return wanted


def _has_own_body(response: dict[str, Any]) -> bool:
    """Whether a route declared a body of its own for an error status (/healthz's 503 is its report)."""
    schemas = [media.get("schema", {}) for media in response.get("content", {}).values()]
    return any(_ref_name(schema) not in (None, "HTTPValidationError") for schema in schemas)


def _complete_operation(path: str, method: str, op: dict[str, Any]) -> None:
    responses: dict[str, Any] = op.setdefault("responses", {})
    for wanted in _wanted_statuses(path, method, op):
        responses.setdefault(str(wanted), {"description": _DEFAULT_DESCRIPTIONS[wanted]})
    for code, response in list(responses.items()):
        if not code.isdigit() or int(code) < 400 or _has_own_body(response):
            continue
        description = response.get("description") or _DEFAULT_DESCRIPTIONS.get(int(code), "an error")
        if description == "Validation Error":  # FastAPI's own 422
            description = _DEFAULT_DESCRIPTIONS[422]
        responses[code] = {**response, **_problem_response(int(code), path, op, description)}
    op["responses"] = dict(sorted(responses.items()))
    if path.startswith("/api/") and not op.get("security"):
        op["security"] = [{_BEARER: []}]
    body = op.get("requestBody", {}).get("content", {}).get("application/json")
    if body is not None and "example" not in body and "examples" not in body:
        name = _ref_name(body.get("schema", {}))
        if name in BODY_EXAMPLES:
            body["example"] = BODY_EXAMPLES[name]
        elif (method, path) in OPERATION_EXAMPLES:
            body["example"] = OPERATION_EXAMPLES[(method, path)]


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """Add the problem schema, statuses and examples to a document FastAPI generated."""
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Problem"] = _PROBLEM_SCHEMA
    schemas["ValidationProblem"] = _VALIDATION_SCHEMA
    schemes = components.setdefault("securitySchemes", {})
    schemes.setdefault(_BEARER, {"type": "http", "scheme": "bearer", "description": "An API token"})
    for path, item in document.get("paths", {}).items():
        for method in _METHODS:
            if method in item:
                _complete_operation(path, method, item[method])
    # Referenced only by FastAPI's default 422, which is gone.
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    return document


def install_openapi(app: FastAPI) -> None:
    """Replace ``app.openapi`` with one that documents every problem each operation can answer."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
                servers=app.servers,
            )
            app.openapi_schema = complete(document)
        return app.openapi_schema

    replace: Callable[[], dict[str, Any]] = openapi
    app.openapi = replace  # type: ignore[method-assign]
