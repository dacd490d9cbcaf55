"""Settings from the environment (prefix ``INFERNO_``), one class per role.

``INFERNO_BROKER_URL`` unset means embedded mode (in-process broker); ``INFERNO_REDIS_URL`` unset
means an in-memory state store. Unknown variables are ignored.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from enum import StrEnum
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from common.model.config import Device
from common.wire.envelope import MAX_ENVELOPE_BYTES
from common.wire.messages import DEFAULT_MAX_ELEMENTS

__all__ = ["CommonSettings", "FacadeSettings", "SharedMemoryKind", "WorkerSettings"]

DEFAULT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _split(value: object) -> object:
    if isinstance(value, str):
        return [p.strip() for p in value.split(",") if p.strip()]
    return value


def _tls_needs_scheme(scheme: str, url_field: str
                     ) -> Callable[[Path | None, ValidationInfo], Path | None]:
    """A validator: a TLS file setting is only meaningful with a ``scheme`` URL."""
    def check(value: Path | None, info: ValidationInfo) -> Path | None:
        url = info.data.get(url_field)
        if value is not None and not (isinstance(url, str) and url.startswith(scheme)):
            raise ValueError(f"INFERNO_{str(info.field_name).upper()} is set, but "
                             f"INFERNO_{url_field.upper()} does not start with {scheme}")
        return value
    return check


class SharedMemoryKind(StrEnum):
    """``INFERNO_SHARED_MEMORY``: which of Triton's shared memory extensions the facade serves."""

    NONE = "none"
    SYSTEM = "system"


class CommonSettings(BaseSettings):
    # No setting's value is ever echoed in a validation error: URLs carry passwords.
    model_config = SettingsConfigDict(env_prefix="INFERNO_", extra="ignore",
                                      hide_input_in_errors=True)

    repo_root: Path = Path("models")
    """The model repository: ``<repo_root>/<name>/<version>/model.yaml``."""
    broker_url: Annotated[str | None, Field(repr=False)] = None
    """AMQP URL of RabbitMQ (``amqps://`` for TLS); unset runs the embedded in-process broker.
    It may hold a password: it is left out of the settings' repr, and redacted in logs."""
    redis_url: Annotated[str | None, Field(repr=False)] = None
    """Redis URL of the shared state (``rediss://`` for TLS); unset keeps state in memory."""
    broker_tls_ca_file: Path | None = None
    """``amqps://`` only: CA bundle (PEM) that verifies the broker's certificate, instead of the
    system's trust store. The certificate and its host name are always verified."""
    broker_tls_cert_file: Path | None = None
    """``amqps://`` only: client certificate (PEM) for mutual TLS; needs the key file."""
    broker_tls_key_file: Path | None = None
    """``amqps://`` only: the client certificate's private key (PEM)."""
    redis_tls_ca_file: Path | None = None
    """``rediss://`` only: CA bundle (PEM) that verifies Redis's certificate."""
    redis_tls_cert_file: Path | None = None
    """``rediss://`` only: client certificate (PEM) for mutual TLS; needs the key file."""
    redis_tls_key_file: Path | None = None
    """``rediss://`` only: the client certificate's private key (PEM)."""
    redis_prefix: str = "inferno"
    """Prefix of every Redis key and channel (isolates clusters sharing one Redis)."""
    log_level: str = "INFO"
    """Level of every logger (DEBUG, INFO, WARNING, ERROR)."""
    log_json: bool = True
    """JSON log lines (``ts``, ``level``, ``logger``, ``msg``, ...); false for plain text."""
    heartbeat_interval_s: Annotated[float, Field(gt=0)] = 2.0
    """How often a worker reports itself alive. Its heartbeat expires 2.5 intervals after the
    last one and facades re-read the state every half interval, so a worker that stops is out of
    every view within 3 intervals."""
    queue_type: Literal["classic", "quorum"] = "classic"
    """RabbitMQ type of the per-model queues; quorum queues replicate and count deliveries."""
    queue_delivery_limit: Annotated[int, Field(ge=1)] = 5
    """Quorum queues: deliveries of one request before it is dead-lettered as poison."""
    persistent_requests: bool = False
    """Publish requests persistent, so queued requests survive a broker restart. Each publish
    then waits for the broker's disk write before its confirm: several times the latency."""
    envelope_max_bytes: Annotated[int, Field(ge=0)] = MAX_ENVELOPE_BYTES
    """Facades: the requests to one model version decoded in one event-loop turn travel together
    in envelope messages of at most this many tensor bytes (and ``max_batch_size`` rows); 0
    publishes every request alone, at once."""
    claim_check_bytes: Annotated[int, Field(ge=0)] = 262_144
    """Distributed mode: a tensor of at least this many bytes crosses the queue by reference,
    its bytes through Redis (common/transport/blobs.py), in requests and replies; 0 sends every
    tensor in its message (what others claim is read all the same). Needs
    ``INFERNO_REDIS_URL``; embedded mode has no queue to cross."""
    max_elements_per_tensor: Annotated[int, Field(ge=1)] = DEFAULT_MAX_ELEMENTS
    """Most elements one input tensor may hold (16 Mi: 64 MiB of float32): the facade answers
    more with a 422 naming the input, before anything is queued; a worker answers a producer's
    message holding more with ``invalid_input``."""
    metrics_buckets: Annotated[tuple[float, ...], NoDecode] = DEFAULT_BUCKETS
    """Latency histogram buckets in seconds, comma-separated (the facade's and the worker's)."""
    gc_freeze: bool = True
    """After start-up and after each model load, collect once and freeze the survivors
    (``gc.freeze``), so that later garbage collections never traverse them: a full collection of
    a process with torch loaded otherwise pauses serving for tens of milliseconds."""

    _split_buckets = field_validator("metrics_buckets", mode="before")(_split)
    _broker_tls = field_validator("broker_tls_ca_file", "broker_tls_cert_file",
                                  "broker_tls_key_file")(_tls_needs_scheme("amqps://",
                                                                           "broker_url"))
    _redis_tls = field_validator("redis_tls_ca_file", "redis_tls_cert_file",
                                 "redis_tls_key_file")(_tls_needs_scheme("rediss://",
                                                                         "redis_url"))

    @model_validator(mode="after")
    def _client_certificate_has_a_key(self) -> CommonSettings:
        for service in ("broker", "redis"):
            cert = getattr(self, f"{service}_tls_cert_file")
            key = getattr(self, f"{service}_tls_key_file")
            if (cert is None) != (key is None):
                raise ValueError(f"INFERNO_{service.upper()}_TLS_CERT_FILE and "
                                 f"INFERNO_{service.upper()}_TLS_KEY_FILE go together")
        return self

    @field_validator("metrics_buckets")
    @classmethod
    def _buckets_increase(cls, buckets: tuple[float, ...]) -> tuple[float, ...]:
        if any(b >= c for b, c in pairwise(buckets)):
            raise ValueError("metrics_buckets must be increasing, each above the last")
        return buckets

    @property
    def heartbeat_ttl_s(self) -> float:
        return 2.5 * self.heartbeat_interval_s


class FacadeSettings(CommonSettings):
    host: str = "127.0.0.1"
    """Address the HTTP server binds (0.0.0.0 in containers)."""
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    """HTTP port."""
    grpc_port: Annotated[int, Field(ge=0, le=65535)] = 8001
    """Port of the Open Inference Protocol over gRPC (Triton's ``GRPCInferenceService``), on
    ``host`` too; 0 turns it off."""
    tls_cert_file: Path | None = None
    """PEM certificate (chain) the facade serves HTTPS and gRPC over TLS with; with
    ``tls_key_file``, both or neither. Unset: plain HTTP and gRPC."""
    tls_key_file: Path | None = None
    """The private key of ``tls_cert_file`` (PEM, unencrypted)."""
    max_body_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024
    """Larger request bodies are refused with 413 before they are read whole; a gzip or
    deflate body, once inflated past it."""
    compress_min_bytes: Annotated[int, Field(ge=1)] = 64 * 1024
    """An answer at least this long is compressed (gzip or deflate for a predict, gzip for the
    other routes; level 1) for a client whose ``Accept-Encoding`` asks; a smaller one costs more
    to compress than to send."""
    request_timeout_ms: Annotated[int, Field(ge=1)] = 30_000
    """Default deadline of a predict request (a request or model.yaml may set its own)."""
    max_request_timeout_ms: Annotated[int, Field(ge=1)] = 300_000
    """Upper bound on any deadline a request asks for."""
    admin_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    """How long load/unload/activate wait for workers to report the change (then 504)."""
    access_log: bool = True
    """One ``inferno.access`` log line per HTTP request (method, path, status, duration)."""
    admin_token: SecretStr | None = None
    """Bearer token of the admin calls (v1 ``:load``/``:unload``/``:activate``, the v2
    repository extension). Unset: admin calls are open on a loopback ``host`` and refused (403)
    on any other."""
    api_token: SecretStr | None = None
    """Bearer token of predict and metadata (v1 and v2); unset: they are open. Health and
    ``/metrics`` are always open; the admin token is accepted here too."""
    allow_model_files: bool = False
    """Whether a repository load may carry model files (Triton's ``file:`` load parameters):
    then they are written as a new version of the model and loaded (``facade.model_files``).
    Off by default, since a model file is code: a Python model's entrypoint runs in the worker."""
    facade_processes: Annotated[int, Field(ge=1)] = 1
    """Facade processes ``inferno facade`` runs on its port (``--workers``); over 1, each is a
    whole facade and the kernel spreads connections over them (``inferno.facade_processes``)."""
    facade_stall_timeout_s: Annotated[float, Field(ge=1)] = 5.0
    """With several facade processes: one whose event loop has not run for this long is killed
    (its threads' stacks written on stderr first) and replaced on its socket."""
    queue_stats_interval_s: Annotated[float, Field(gt=0)] = 2.0
    """How often the facade reads, off the predict path, the depth and consumers of every known
    model version's queue and the dead-letter queue's depth from the broker (the
    ``inferno_queue_*`` and ``inferno_dead_letter_messages`` gauges of ``/metrics``)."""
    shared_memory: SharedMemoryKind = SharedMemoryKind.NONE
    """``system``: Triton's system shared memory extension (REST and gRPC), for clients on the
    facade's host: regions under ``/dev/shm`` registered with the admin token, tensors read from
    and written into them (``facade.shared_memory``). ``none``: its routes and parameters are
    refused with a 400 saying how to turn it on."""
    openai_max_inputs: Annotated[int, Field(ge=1)] = 2048
    """The OpenAI embeddings API: most texts one request may give (OpenAI's own limit); more is
    a 400. A list longer than the model's ``max_batch_size`` is split into several calls."""
    openai_truncate: bool = True
    """The OpenAI embeddings API: a text longer than the model's ``max_tokens`` is truncated by
    the model; false refuses it with a 400 naming it (a request's ``truncate`` overrides this)."""

    @field_validator("admin_token", "api_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # ``INFERNO_ADMIN_TOKEN=`` (compose's ``${VAR:-}``) must not become a token that an empty
        # ``Authorization: Bearer`` matches.
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, SecretStr) and not value.get_secret_value().strip():
            return None
        return value

    @model_validator(mode="after")
    def _timeouts_ordered(self) -> FacadeSettings:
        if self.request_timeout_ms > self.max_request_timeout_ms:
            raise ValueError("request_timeout_ms must not exceed max_request_timeout_ms")
        return self

    @model_validator(mode="after")
    def _tls_pair(self) -> FacadeSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        return self

    @model_validator(mode="after")
    def _shared_memory_in_one_process(self) -> FacadeSettings:
        # Regions are registered in the process that answered: another would not know them.
        if self.shared_memory is SharedMemoryKind.SYSTEM and self.facade_processes > 1:
            raise ValueError("INFERNO_SHARED_MEMORY=system needs a single facade process "
                             "(INFERNO_FACADE_PROCESSES=1): each process registers its own "
                             "regions")
        return self


class WorkerSettings(CommonSettings):
    device: Device = Device.AUTO
    """Where models run unless model.yaml says otherwise; ``auto`` picks cuda when present."""
    preload: Annotated[list[str], NoDecode] = ["*"]
    """Models whose newest version is loaded at start: names, ``*`` for all, empty for none."""
    models: Annotated[list[str], NoDecode] = ["*"]
    """Models this worker may serve (``inferno worker --models a,b``); ``*`` for all."""
    burst: bool = False
    """``inferno worker --burst``: reconcile once, answer what is queued for the models it
    serves, exit once their queues are empty (a batch job draining what producers queued)."""
    state_reconcile_enabled: bool = True
    state_reconcile_interval_s: Annotated[float, Field(gt=0)] = 5.0
    """Fallback period of the reconciler; change events trigger it at once."""
    drain_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    """On shutdown or unload, how long in-flight batches may take to finish."""
    statistics_interval_s: Annotated[float, Field(ge=0, le=1)] = 0.05
    """A worker whose statistics changed heartbeats early to report them, at most this often;
    a facade's statistics call waits out what is due within it, so it counts every request
    answered before it. 0: statistics travel with the periodic heartbeats only."""
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9100
    """Prometheus port of a worker process (``inferno worker``); 0 turns it off. In embedded
    mode the worker's metrics are on the facade's ``/metrics``."""
    torch_threads: Annotated[int, Field(ge=0)] = 0
    """torch intra-op threads; 0: one core fewer than the process may run on (its CPU
    affinity), at least 1: the event loop needs a core of its own."""

    _split_lists = field_validator("preload", "models", mode="before")(_split)

    @property
    def intra_op_threads(self) -> int:
        """torch threads to run with: ``torch_threads``, else one fewer than the CPUs this
        process may run on, at least 1 (its event loop needs a core; torch's threads spin)."""
        if self.torch_threads:
            return self.torch_threads
        cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                 else os.cpu_count())
        return max(1, (cores or 2) - 1)

    def serves(self, name: str) -> bool:
        return "*" in self.models or name in self.models

    def preloads(self, name: str) -> bool:
        return self.serves(name) and ("*" in self.preload or name in self.preload)
