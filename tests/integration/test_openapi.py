"""The OpenAPI schema documents the predict endpoints that the ASGI front serves, and only those:
each documented predict path is answered by the front (never FastAPI's 404/405), with a body that
the documented request schema accepts. Every route documents the statuses it can answer with the
protocol's error body, and the guarded ones the bearer scheme (test_fuzz.py holds the server to
all of it).
"""

from __future__ import annotations

from typing import Any

import httpx
import jsonschema
import pytest

from facade.front import PREDICT_ROUTES

V1_BODY = {"inputs": {"x": {"data": [[0.5] * 256]}}, "outputs": ["probs"], "timeout_ms": 5000}
V2_BODY = {"id": "r1", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 256],
                                    "data": [0.5] * 256}],
           "outputs": [{"name": "probs"}]}


@pytest.fixture
async def schema(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def request_schema(schema: dict[str, Any], path: str) -> dict[str, Any]:
    ref = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return {"$ref": ref["$ref"], "components": schema["components"]}


def test_the_documented_predict_paths_are_the_fronts(schema: dict[str, Any]) -> None:
    documented = {path for path, item in schema["paths"].items()
                  if path.endswith((":predict", "/infer"))}
    assert documented == {r.path for r in PREDICT_ROUTES}
    for route in PREDICT_ROUTES:
        assert set(schema["paths"][route.path]) == {"post"}
        parameters = {p["name"] for p in schema["paths"][route.path]["post"]["parameters"]
                      if p["in"] == "path"}
        assert parameters == ({"name", "version"} if "{version}" in route.path else {"name"})


@pytest.mark.parametrize("route", PREDICT_ROUTES, ids=lambda r: r.path)
async def test_each_documented_path_is_served_with_a_documented_body(
        client: httpx.AsyncClient, schema: dict[str, Any], route: Any) -> None:
    body = V1_BODY if route.protocol.name == "v1" else V2_BODY
    jsonschema.validate(body, request_schema(schema, route.path))
    path = route.path.replace("{name}", "mlp").replace("{version}", "2")
    response = await client.post(path, json=body)
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    names = set(outputs) if route.protocol.name == "v1" else {o["name"] for o in outputs}
    assert names == {"probs"}


def test_the_documented_v1_body_accepts_the_original_base64_key(schema: dict[str, Any]) -> None:
    body = {"inputs": {"x": {"base64": "AACAPw==", "shape": [1, 1], "dtype": "float32"}}}
    jsonschema.validate(body, request_schema(schema, "/v1/models/{name}:predict"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"inputs": {"x": {"b65": "x"}}},
                            request_schema(schema, "/v1/models/{name}:predict"))


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, operation) for path, item in schema["paths"].items()
            for method, operation in item.items()]


def test_every_error_status_is_documented_with_the_protocols_body(schema: dict[str, Any]) -> None:
    for method, path, operation in operations(schema):
        for status, response in operation["responses"].items():
            if status == "200" or path.endswith(("/ready", "/health/ready")):
                continue
            body = response["content"]["application/json"]["schema"]
            want = "V2Error" if path.startswith("/v2") else "Error"
            assert body == {"$ref": f"#/components/schemas/{want}"}, (method, path, status)
    assert "HTTPValidationError" not in schema["components"]["schemas"]


@pytest.mark.parametrize(("method", "path", "statuses"), [
    ("post", "/v1/models/{name}:predict", {"400", "401", "404", "413", "422", "503", "504"}),
    ("post", "/v2/models/{name}/infer", {"400", "401", "404", "413", "503", "504"}),
    ("post", "/v1/models:load", {"400", "401", "403", "404", "413", "422", "503", "504"}),
    ("post", "/v2/repository/models/{name}/unload", {"400", "401", "403", "404", "503", "504"}),
    ("get", "/v1/models/{name}", {"401", "404", "422"}),
    ("get", "/v2/models/{name}/versions/{version}", {"400", "401", "404"}),
    ("get", "/health/ready", {"503"}),
])
def test_each_route_documents_what_it_can_answer(schema: dict[str, Any], method: str, path: str,
                                                 statuses: set[str]) -> None:
    assert statuses <= set(schema["paths"][path][method]["responses"])


def test_the_guarded_routes_name_the_bearer_scheme(schema: dict[str, Any]) -> None:
    scheme = schema["components"]["securitySchemes"]["bearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for method, path, operation in operations(schema):
        guarded = not path.startswith(("/health/", "/v2/health/", "/metrics"))
        assert ("security" in operation) is guarded, (method, path)
        assert ("401" in operation["responses"]) is guarded, (method, path)
        admin = path.startswith(("/v1/models:", "/v2/repository/")) or (
            path.startswith("/v2/systemsharedmemory/") and path.endswith("register"))
        assert ("403" in operation["responses"]) is admin, (method, path)


def test_metrics_are_documented_as_text(schema: dict[str, Any]) -> None:
    assert set(schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]) == {
        "text/plain"}
