"""Locust load test of one model's v1 predict route (the original Inferno's load_test.py).

    pip install -e '.[load]'
    locust -f scripts/load_test.py --headless -u 50 -r 10 --run-time 2m \\
        --host http://127.0.0.1:8000 --model-name mlp --load-model --model-version 2 \\
        --warmup 5 --verify-response

The same command runs against ``inferno serve`` and against an ``inferno facade`` in front of
workers. At the start of a run (Locust's ``test_start``, on the local or master runner only):

1. ``--load-model``: ``POST /v1/models:load`` for ``--model-version`` (the newest version when
   it is not given), with ``--admin-token`` as a bearer token when one is set. Loading a version
   that is already loaded answers at once; any answer but 200 ends the run with exit code 1.
2. The request body: ``--payload-file``, or one built from the version's signature
   (``GET /v1/models/{name}``): every required input filled with values of its dtype, symbolic
   dimensions 1, one row. Each process (master and workers alike) builds its own.
3. ``--warmup N``: N requests sent one after another with a plain HTTP client, outside Locust's
   statistics; one that fails ends the run with exit code 1 (the load would fail the same way).
4. The statistics are reset, so the reported rates start after the set-up. Locust's
   ``--run-time`` clock started before it, though: the set-up counts against the run time.

Then each user posts that body in a closed loop (no wait time) to
``/v1/models/{name}/versions/{v}:predict`` (``--model-version``) or ``/v1/models/{name}:predict``
(the active version). Non-2xx answers are failures; ``--verify-response`` also fails a 200 whose
body holds no output tensor, or names another model or version.

The users are ``FastHttpUser`` (geventhttpclient): it costs several times less CPU per request than
``HttpUser`` (python-requests), so one Locust process drives 50 users against a fast model without
becoming the bottleneck it measures, and it has all this needs (a prebuilt body, ``catch_response``,
timeouts). The body is serialised once, not per request, for the same reason.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
from gevent import GreenletExit
from locust import FastHttpUser, constant, events, task
from locust.argument_parser import LocustArgumentParser
from locust.env import Environment
from locust.runners import WorkerRunner

log = logging.getLogger("inferno.load_test")

SENTENCE = "The quick brown fox jumps over the lazy dog."
"""What a ``string`` input is filled with."""

ADMIN_TIMEOUT_S = 600.0
"""The client's limit on ``:load``; the server bounds the call itself (INFERNO_ADMIN_TIMEOUT_S)."""


@events.init_command_line_parser.add_listener
def _options(parser: LocustArgumentParser) -> None:
    parser.add_argument("--model-name", default="mlp", help="model to send requests to (mlp)")
    parser.add_argument("--model-version", type=int, default=None,
                        help="pin this version (/v1/models/{name}/versions/{v}:predict); "
                             "default: the model's active version")
    parser.add_argument("--load-model", action="store_true", default=False,
                        help="load --model-version (default: the newest) through the admin API "
                             "before the run")
    parser.add_argument("--warmup", type=int, default=0, metavar="N",
                        help="N requests before the run, left out of the statistics")
    parser.add_argument("--verify-response", action="store_true", default=False,
                        help="fail a response that holds no output tensor")
    parser.add_argument("--payload-file", default="",
                        help="JSON request body to send; default: one built from the signature")
    parser.add_argument("--request-timeout", type=float, default=60.0, metavar="SECONDS",
                        help="HTTP timeout of each request (connect and read), in seconds")
    parser.add_argument("--admin-token", default=os.environ.get("INFERNO_ADMIN_TOKEN", ""),
                        is_secret=True, help="bearer token of --load-model (INFERNO_ADMIN_TOKEN)")
    parser.add_argument("--api-token", default=os.environ.get("INFERNO_API_TOKEN", ""),
                        is_secret=True,
                        help="bearer token of predict (INFERNO_API_TOKEN; else the admin token)")


class SetupFailed(Exception):
    """The run cannot start: the message says why."""


@dataclass(frozen=True)
class Plan:
    """What every user sends, fixed at the start of the run."""

    path: str
    body: bytes
    headers: dict[str, str]
    model: str
    version: int | None
    verify: bool

    def problem(self, status: int, payload: bytes) -> str | None:
        """Why an answer is a failure, or None."""
        if status != 200:
            return f"HTTP {status}: {payload[:300].decode(errors='replace')}"
        if not self.verify:
            return None
        try:
            answer = json.loads(payload)
        except ValueError:
            return f"response is not JSON: {payload[:100]!r}"
        outputs = answer.get("outputs") if isinstance(answer, dict) else None
        if not isinstance(outputs, dict) or not outputs:
            return f"response has no output tensor: {payload[:300].decode(errors='replace')}"
        for name, tensor in outputs.items():
            if not (isinstance(tensor, dict) and "dtype" in tensor and "shape" in tensor
                    and ("data" in tensor or "b64" in tensor)):
                return f"output {name!r} is not a tensor: {str(tensor)[:200]}"
        if answer.get("model") != self.model:
            return f"answered by model {answer.get('model')!r}, not {self.model!r}"
        if self.version is not None and answer.get("version") != self.version:
            return f"answered by version {answer.get('version')!r}, not {self.version}"
        return None


PLAN: Plan | None = None
"""Set by ``test_start`` in each Locust process, read by its users."""


def fill(dtype: str, shape: list[int]) -> Any:
    """Nested lists of ``shape`` holding one valid value of ``dtype``."""
    value: Any
    if dtype == "bool":
        value = True
    elif dtype == "string":
        value = SENTENCE
    elif dtype.startswith(("int", "uint")):
        value = 1  # a valid index into any table of two rows or more
    elif dtype.startswith(("float", "bfloat")):
        value = 0.5  # exact in every float type, bfloat16 included
    else:
        raise SetupFailed(f"dtype {dtype!r} is unknown to scripts/load_test.py")
    return _nest(value, shape)


def _nest(value: Any, shape: list[int]) -> Any:
    return value if not shape else [_nest(value, shape[1:]) for _ in range(shape[0])]


def build_payload(version: dict[str, Any]) -> dict[str, Any]:
    """A valid v1 predict body for one version's metadata (an entry of ``GET /v1/models/{name}``
    ``versions``): every required input, symbolic dimensions (the batch one included) 1."""
    inputs = {}
    for spec in version["inputs"]:
        if spec.get("optional"):
            continue
        shape = [dim if isinstance(dim, int) else 1 for dim in spec["shape"]]
        inputs[spec["name"]] = {"data": fill(spec["dtype"], shape)}
    return {"inputs": inputs}


def _call(method: str, url: str, token: str, timeout: float,
          body: bytes | None = None) -> tuple[int, bytes]:
    """One request outside Locust's statistics (urllib: gevent makes it cooperative)."""
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError as exc:
        raise SetupFailed(f"{method} {url}: {exc}") from exc


def _load(host: str, name: str, version: int | None, token: str) -> None:
    ref: dict[str, Any] = {"name": name} if version is None else {"name": name, "version": version}
    status, answer = _call("POST", f"{host}/v1/models:load", token, ADMIN_TIMEOUT_S,
                           json.dumps(ref).encode())
    if status != 200:
        raise SetupFailed(f"--load-model: loading {ref} answered HTTP {status}: "
                          f"{answer.decode(errors='replace')}")
    log.info("loaded %s: %s", ref, answer.decode(errors="replace"))


def _signature(host: str, name: str, version: int | None, token: str,
               timeout: float) -> dict[str, Any]:
    status, answer = _call("GET", f"{host}/v1/models/{name}", token, timeout)
    if status != 200:
        raise SetupFailed(f"GET /v1/models/{name} answered HTTP {status}: "
                          f"{answer.decode(errors='replace')}")
    try:
        model = json.loads(answer)
        wanted = version if version is not None else model["active"]
        versions = {entry["version"]: dict(entry) for entry in model["versions"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise SetupFailed(f"GET /v1/models/{name}: not a model's metadata ({exc!r}): "
                          f"{answer[:300].decode(errors='replace')}") from exc
    if wanted is None:
        raise SetupFailed(f"model {name!r} has no active version: pass --model-version "
                          "or --load-model")
    if wanted not in versions:
        raise SetupFailed(f"model {name!r} has no version {wanted} (versions: {list(versions)})")
    return versions[wanted]


def _options_of(environment: Environment) -> argparse.Namespace:
    if environment.parsed_options is None:
        raise SetupFailed("run this file with the locust command: locust -f scripts/load_test.py")
    return environment.parsed_options


def _plan(environment: Environment) -> Plan:
    options = _options_of(environment)
    host = (environment.host or "").rstrip("/")
    if not host:
        raise SetupFailed("no --host given")
    name, version = options.model_name, options.model_version
    token = options.api_token or options.admin_token
    if options.payload_file:
        try:
            payload = json.loads(Path(options.payload_file).read_text())
        except (OSError, ValueError) as exc:
            raise SetupFailed(f"--payload-file {options.payload_file}: {exc}") from exc
    else:
        metadata = _signature(host, name, version, token, options.request_timeout)
        try:
            payload = build_payload(metadata)
        except (KeyError, TypeError, ValueError) as exc:
            raise SetupFailed(f"cannot build a request from {metadata}: {exc!r}") from exc
    path = (f"/v1/models/{name}:predict" if version is None
            else f"/v1/models/{name}/versions/{version}:predict")
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    return Plan(path, json.dumps(payload).encode(), headers, name, version,
                options.verify_response)


def _warm_up(environment: Environment, plan: Plan) -> None:
    options = _options_of(environment)
    url = (environment.host or "").rstrip("/") + plan.path
    token = options.api_token or options.admin_token
    for i in range(options.warmup):
        status, answer = _call("POST", url, token, options.request_timeout, plan.body)
        if (why := plan.problem(status, answer)) is not None:
            raise SetupFailed(f"warm-up request {i + 1} of {options.warmup} failed: {why}")
    log.info("warm-up: %d requests, not counted", options.warmup)


@events.test_start.add_listener
def _start(environment: Environment, **_: Any) -> None:
    global PLAN
    coordinator = not isinstance(environment.runner, WorkerRunner)
    try:
        options = _options_of(environment)
        if coordinator and options.load_model:
            _load((environment.host or "").rstrip("/"), options.model_name,
                  options.model_version, options.admin_token)
        PLAN = _plan(environment)
        if coordinator and options.warmup > 0:
            _warm_up(environment, PLAN)
    except SetupFailed as exc:
        log.error("load test not started: %s", exc)
        environment.process_exit_code = 1
        if environment.web_ui is not None:
            environment.web_ui.stop()
        if environment.runner is not None:
            # Not from this greenlet: it is the one starting the run, ended below, so that no
            # user is spawned after all.
            gevent.spawn(environment.runner.quit)
        raise GreenletExit from None
    if coordinator and environment.runner is not None:
        environment.runner.stats.reset_all()  # the rates count from here, not from the set-up


class InfernoUser(FastHttpUser):
    """Posts the run's body to the predict route, one request at a time, no wait between."""

    wait_time = constant(0)
    concurrency = 1  # one greenlet per user: one keep-alive connection is all it uses

    def __init__(self, environment: Environment) -> None:
        options = environment.parsed_options
        if options is not None:  # set before FastHttpUser creates its client
            self.network_timeout = self.connection_timeout = options.request_timeout
        super().__init__(environment)

    @task
    def predict(self) -> None:
        plan = PLAN
        assert plan is not None, "test_start did not run"
        with self.client.post(plan.path, data=plan.body, headers=plan.headers,
                              catch_response=True) as response:
            why = (f"no answer: {response.error!r}" if not response.status_code
                   else plan.problem(response.status_code, response.content or b""))
            if why is not None:
                response.failure(why)
            else:
                response.success()
