"""The admin console (facade/console.py): its JSON document and files through ASGI, then the
page itself in a headless Chromium against a live ``inferno serve``."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.http import free_port, request_json
from tests.integration.conftest import Start, x_rows
from tests.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
API = "api-Kx9-console-token"
ADMIN = "adm-Zq7-console-token"
BAG = {"inputs": {"tokens": {"data": [[1, 2]]}, "mask": {"data": [[True, True]]}}}


def _model(state: dict[str, Any], name: str) -> dict[str, Any]:
    found = [m for m in state["models"] if m["name"] == name]
    assert len(found) == 1, [m["name"] for m in state["models"]]
    model: dict[str, Any] = found[0]
    return model


def _version(model: dict[str, Any], version: int) -> dict[str, Any]:
    found = [v for v in model["versions"] if v["version"] == version]
    assert len(found) == 1, model["versions"]
    entry: dict[str, Any] = found[0]
    return entry


# --- the JSON document and the files, in process -----------------------------------------------


async def test_state_shape(start_server: Start) -> None:
    embedded, client = await start_server()
    await embedded.facade.queues.poll()  # one reading now, not the next period's
    response = await client.get("/console/api/state")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    state = response.json()
    assert {"at", "ready", "waiting_for", "auth", "queues", "dead_letters",
            "workers", "models", "repository_errors"} <= state.keys()
    assert state["ready"] is True and state["waiting_for"] == []
    assert state["auth"] == {"admin_open": True, "api_token": False}
    assert state["grpc"] == {"port": None, "tls": False}  # in process: nothing started it
    port = await embedded.facade.grpc.start(0)
    grpc = (await client.get("/console/api/state")).json()["grpc"]
    assert grpc == {"port": port, "tls": False}
    assert state["queues"] is True
    assert abs(state["at"] - time.time()) < 60
    [worker] = state["workers"]
    assert {"id", "host", "device", "capacity", "started_at", "loaded"} <= worker.keys()
    assert worker["loaded"]["mlp"] == [2] and worker["loaded"]["bag"] == [1]

    mlp = _model(state, "mlp")
    assert mlp["active"] == 2
    assert [v["version"] for v in mlp["versions"]] == [1, 2]
    v1, v2 = _version(mlp, 1), _version(mlp, 2)
    assert v2 == {"version": 2, "active": True, "desired": True, "workers": [worker["id"]],
                  "failed": None, "queue": {"messages": 0, "consumers": v2["queue"]["consumers"]}}
    assert v2["queue"]["consumers"] >= 1
    # Not loaded: no worker, and the broker was not asked about its queue.
    assert v1 == {"version": 1, "active": False, "desired": False, "workers": [],
                  "failed": None, "queue": None}
    metrics = mlp["metrics"]
    assert {"requests", "errors", "errors_by_code", "latency", "batch"} <= metrics.keys()
    assert {"le", "counts", "count", "sum"} <= metrics["latency"].keys()
    assert metrics["batch"].keys() == {"batches", "rows"}


async def test_state_has_a_queue_entry_per_loaded_version(start_server: Start) -> None:
    embedded, client = await start_server()
    assert (await client.post("/v1/models:load", json={"name": "mlp", "version": 1})
            ).status_code == 200
    await embedded.facade.queues.poll()
    state = (await client.get("/console/api/state")).json()
    for model in state["models"]:
        for version in model["versions"]:
            if version["workers"]:
                queue = version["queue"]
                assert queue is not None, (model["name"], version)
                assert queue["messages"] >= 0 and queue["consumers"] >= 1
    mlp = _model(state, "mlp")
    assert all(v["desired"] and v["queue"] is not None for v in mlp["versions"])


async def test_counters_rise_after_a_predict(start_server: Start) -> None:
    embedded, client = await start_server()
    before = _model((await client.get("/console/api/state")).json(), "mlp")["metrics"]
    for _ in range(3):  # one after the other: a batch of 2 rows each
        response = await client.post("/v1/models/mlp:predict",
                                     json={"inputs": x_rows(2)})
        assert response.status_code == 200
    failed = await client.post("/v1/models/mlp:predict", json={"inputs": {"x": {"data": [1]}}})
    assert failed.status_code == 422
    after = _model((await client.get("/console/api/state")).json(), "mlp")["metrics"]
    assert after["requests"] >= before["requests"] + 3
    assert after["errors"] >= before["errors"] + 1
    assert sum(after["errors_by_code"].values()) == after["errors"]
    latency = after["latency"]
    assert latency["count"] >= before["latency"]["count"] + 3
    assert latency["sum"] > 0
    assert len(latency["counts"]) == len(latency["le"]) + 1  # the last bucket is +Inf
    assert latency["counts"] == sorted(latency["counts"])  # cumulative
    # Batch counters come with the worker's heartbeat: the next one has the three batches.
    await embedded.worker.heartbeat()
    await embedded.facade.view.refresh()
    batch = _model((await client.get("/console/api/state")).json(), "mlp")["metrics"]["batch"]
    assert batch == {"batches": before["batch"]["batches"] + 3,
                     "rows": before["batch"]["rows"] + 6}


async def test_state_needs_the_api_token_when_one_is_set(start_server: Start) -> None:
    _, client = await start_server(admin_token=ADMIN, api_token=API)
    response = await client.get("/console/api/state")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    wrong = await client.get("/console/api/state", headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 401
    for token in (API, ADMIN):
        ok = await client.get("/console/api/state", headers={"authorization": f"Bearer {token}"})
        assert ok.status_code == 200, token
        assert ok.json()["auth"] == {"admin_open": False, "api_token": True}
    # The page and its files hold no data: served without a token, as /docs is.
    assert (await client.get("/console")).status_code == 200
    assert (await client.get("/console/static/main.js")).status_code == 200


async def test_page_and_its_files_are_served(start_server: Start) -> None:
    _, client = await start_server()
    page = await client.get("/console")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-cache"
    referenced = re.findall(r'(?:src|href)="console/static/([^"]+)"', page.text)
    assert {"main.js", "console.css"} <= set(referenced)
    types = {"js": "text/javascript", "css": "text/css"}
    modules = set(referenced)
    # main.js imports the other modules: each is served with a JavaScript type.
    main = (await client.get("/console/static/main.js")).text
    modules |= set(re.findall(r'from "\./([\w.]+)"', main))
    assert {"api.js", "dom.js", "models.js", "stats.js", "tryit.js"} <= modules
    for name in sorted(modules):
        response = await client.get(f"/console/static/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].startswith(types[name.rsplit(".", 1)[1]]), name
        assert response.headers["x-content-type-options"] == "nosniff"
    redirect = await client.get("/console/", follow_redirects=False)
    assert redirect.status_code == 308
    # Neither route is in the API's schema.
    schema = (await client.get("/openapi.json")).json()
    assert not any(path.startswith("/console") for path in schema["paths"])


@pytest.mark.parametrize("name", ["nope.js", "index.htm", "__init__.py", "..%2Fconsole.py",
                                  "%2e%2e%2fapp.py", "console.css.map"])
async def test_unknown_static_name_is_404(start_server: Start, name: str) -> None:
    _, client = await start_server(preload=[])
    response = await client.get(f"/console/static/{name}")
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "not_found"


# --- the page in a browser, against a live `inferno serve` --------------------------------------


@pytest.fixture
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A live ``inferno serve`` on a free port; more environment variables by indirect
    parametrisation (``@pytest.mark.parametrize("served", [{...}], indirect=True)``)."""
    extra: dict[str, str] = getattr(request, "param", {})
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "inferno", "serve", "--port", str(port), "--grpc-port", "0",
         "--repo", str(ROOT / "models")], cwd=tmp_path,
        env={**os.environ, "INFERNO_LOG_LEVEL": "INFO", **extra},
        stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    # Another process: no event to await, so poll readiness (bounded).
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, (tmp_path / "serve.log").read_text()
        try:
            if request_json(f"{base}/health/ready")[0] == 200:
                break
        except (urllib.error.URLError, ConnectionError):
            pass
        assert time.monotonic() < deadline, "inferno serve did not become ready in 120s"
        time.sleep(0.1)
    yield base
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    chromium = require_tool("chromium")
    chromedriver = require_tool("chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                "--disable-quic", f"--user-data-dir={tmp_path / 'chromium'}",
                "--window-size=1400,1800"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    try:
        yield driver
    finally:
        driver.quit()


def _minilm_serves(base: str) -> bool:
    status, _ = request_json(f"{base}/v1/models/minilm:predict",
                         {"inputs": {"text": {"data": ["hello"]}}})
    return status == 200


def test_console_in_a_browser(served: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webelement import WebElement
    from selenium.webdriver.support.ui import WebDriverWait

    base = served
    wait = WebDriverWait(browser, 60)

    def css(selector: str, root: Any = None) -> WebElement:
        found: WebElement = wait.until(
            lambda _: ((root or browser).find_elements(By.CSS_SELECTOR, selector) or [None])[0])
        return found

    def row(model: str, version: int) -> WebElement:
        return css(f'article[data-model="{model}"] tr[data-version="{version}"]')

    def button(model: str, version: int, action: str) -> WebElement:
        found = css(f'button[data-action="{action}"]', row(model, version))
        wait.until(lambda _: found.is_enabled())
        return found

    browser.get(f"{base}/console")
    wait.until(lambda b: b.find_element(By.ID, "health").get_attribute("data-state") == "ready")
    assert browser.find_element(By.ID, "grpc").text == "gRPC off"  # --grpc-port 0
    css('article[data-model="mlp"]')
    css('article[data-model="bag"]')
    assert "active: version 2" in css('article[data-model="mlp"] [data-field="active"]').text
    assert row("mlp", 1).get_attribute("data-loaded") == "false"

    # Load mlp v1 with its button, then activate it with the other.
    button("mlp", 1, "load").click()
    wait.until(lambda _: row("mlp", 1).get_attribute("data-loaded") == "true")
    assert row("mlp", 1).get_attribute("data-active") == "false"
    button("mlp", 1, "activate").click()
    wait.until(lambda _: row("mlp", 1).get_attribute("data-active") == "true")
    wait.until(lambda _: "active: version 1" in css(
        'article[data-model="mlp"] [data-field="active"]').text)
    assert row("mlp", 2).get_attribute("data-active") == "false"
    assert "active" in css('[data-field="state"]', row("mlp", 1)).text
    status, active = request_json(f"{base}/v1/models/mlp/active")
    assert status == 200 and active["version"] == 1
    notice = browser.find_element(By.ID, "notice")
    assert notice.get_attribute("data-kind") == "ok", notice.text

    # Try it on bag: its form is built from the signature; the example predicts.
    css('article[data-model="bag"] button[data-action="try"]').click()
    wait.until(lambda b: b.find_element(By.ID, "try-version").text.startswith("version 1"))
    tokens = css('#try-inputs [data-input="tokens"]')
    tokens.clear()
    tokens.send_keys("[1, 2, 3, 4]")
    mask = css('#try-inputs [data-input="mask"]')
    mask.clear()
    mask.send_keys("[true, true, false, true]")
    browser.find_element(By.ID, "try-send").click()
    answered = css('#try-output [data-field="answered"]')
    assert "bag version 1" in answered.text
    outputs = {e.get_attribute("data-output"): e
               for e in browser.find_elements(By.CSS_SELECTOR, "#try-output [data-output]")}
    assert set(outputs) == {"sum", "count", "mean"}
    first = {name: css('[data-field="first"]', e).text for name, e in outputs.items()}
    assert first["sum"] == "7" and first["count"] == "3"
    assert math.isclose(float(first["mean"]), 7 / 3, rel_tol=1e-3)
    # That predict was bag's only batch, of one row: its card shows it once a heartbeat told.
    wait.until(lambda _: css('article[data-model="bag"] [data-stat="batch"]').text
               == "1.0 rows")

    # Try it on minilm when it serves (the string dtype): a sentence in, a unit vector out.
    minilm = _minilm_serves(base)
    if minilm:
        css('article[data-model="minilm"] button[data-action="try"]').click()
        text = css('#try-inputs input[data-input="text"]')
        text.clear()
        text.send_keys("A console for an inference server.")
        browser.find_element(By.ID, "try-send").click()
        wait.until(lambda b: "minilm" in b.find_element(By.ID, "try-output").text)
        embedding = css('#try-output [data-output="embedding"]')
        shape = css('[data-field="shape"]', embedding).text
        assert "float32" in shape and "384" in shape
        values = css('[data-field="first"]', embedding).text
        assert "(384 values)" in values
        assert all(math.isfinite(float(v)) for v in values.split(", …")[0].split(", "))
        norm = css('[data-field="norm"]', embedding).text
        assert math.isclose(float(norm.rsplit(" ", 1)[1]), 1.0, abs_tol=1e-3), norm

    # The traffic shows on the cards once two readings span it.
    def total(model: str) -> int:
        return int(css(f'article[data-model="{model}"] [data-stat="total"]').text.split()[0])

    wait.until(lambda _: total("bag") >= 1)
    if minilm:
        wait.until(lambda _: total("minilm") >= 2)  # the probe and "try it"
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "console.png"))
    problems = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not problems, problems


@pytest.mark.parametrize("served", [{"INFERNO_API_TOKEN": API}], indirect=True)
def test_console_asks_for_the_token(served: str, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    assert request_json(f"{served}/console/api/state")[0] == 401
    assert request_json(f"{served}/console/api/state", token=API)[0] == 200
    wait = WebDriverWait(browser, 60)
    browser.get(f"{served}/console")
    health = wait.until(lambda b: b.find_element(By.ID, "health"))
    wait.until(lambda _: health.text == "token needed")
    notice = browser.find_element(By.ID, "notice")
    assert notice.get_attribute("data-kind") == "auth"
    assert not browser.find_elements(By.CSS_SELECTOR, "article[data-model]")
    field = browser.find_element(By.ID, "token")
    field.send_keys(API)
    browser.find_element(By.CSS_SELECTOR, '#token-form button[type="submit"]').click()
    wait.until(lambda _: health.get_attribute("data-state") == "ready")
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, 'article[data-model="bag"]'))
    # The try-it form's metadata call carries the token too.
    wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#try-inputs [data-input]"))
    assert browser.execute_script(
        "return sessionStorage.getItem('inferno.console.token')") == API
    # 401s are expected before the token: only other errors count.
    problems = [e for e in browser.get_log("browser")
                if e["level"] == "SEVERE" and "401" not in e["message"]]
    assert not problems, problems
