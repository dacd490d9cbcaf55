"""One run: start the servers a plan names, run every concurrency level of each of its protocols
against them, stop them.

A run is the plain FastAPI baseline (``bench.plain_fastapi``, ``--compare`` only), embedded
(``inferno serve``), distributed (a ``Cluster`` of facades and workers over
RabbitMQ and Redis), an existing ``--url`` server, or the bare gRPC echo (``bench.grpc_floor``,
``--compare-protocols`` only, last). With ``--compare-protocols`` each Inferno run is followed
by one of the same shape with gRPC off (``RunPlan.grpc``) that drives v2-binary alone: REST's
figures with and without the gRPC server beside it. Every level of a run uses the same servers;
a run drives ``--protocol``, or with ``--compare-protocols`` every protocol of
``payload.COMPARED`` in turn (the floor: the gRPC ones), one report each; with
``--compare-versions``, each of them for every version of the model in turn, pinned
(``bench.versions``). Each run starts fresh
processes, and the servers are stopped before the next run starts (and before the direct
baseline), so runs never compete with each other for CPU. A distributed run's broker and Redis,
when they listen on this machine, have their CPU read over each level's window too.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bench import load, wrk
from bench.cluster import Cluster, ClusterSpec
from bench.grpc_floor import GrpcFloor
from bench.host import listener_pid, loadavg
from bench.payload import (
    BASELINE,
    BUILDERS,
    GRPC_PROTOCOLS,
    ModelInfo,
    grpc_infer,
    grpc_response,
    local_model_info,
    model_info,
)
from bench.plain_fastapi import PlainServer
from bench.report import LevelRow, Report
from bench.server import UVICORN, EmbeddedServer
from bench.versions import load_versions, pinned_infos
from harness.process import shielded, wait_ready

__all__ = ["FLOOR_LABEL", "RunPlan", "Target", "plans", "protocols", "run_protocols"]

FLOOR_LABEL = "bare grpc.aio echo"
_DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671, "redis": 6379, "rediss": 6379}
"""The port a broker or Redis URL without one means, by scheme."""


@dataclass(frozen=True, slots=True)
class RunPlan:
    mode: str
    """``plain``, ``embedded``, ``distributed`` or ``floor``."""
    workers: int = 1
    facades: int = 1
    grpc: bool = True
    """``False``: the servers run without their gRPC server (``--grpc-port 0``), same label."""
    http: str = UVICORN
    """What serves the Inferno servers' HTTP (``bench.server.HTTP_SERVERS``;
    ``--compare-http-servers``), same label."""

    @property
    def label(self) -> str:
        if self.mode == "plain":
            return "plain FastAPI"
        if self.mode == "floor":
            return f"grpc floor ({FLOOR_LABEL})"
        if self.mode != "distributed":
            return self.mode
        return (f"distributed, {self.facades} facade{'s' * (self.facades != 1)}, "
                f"{self.workers} worker{'s' * (self.workers != 1)}")


def plans(args: argparse.Namespace) -> list[RunPlan]:
    """The runs of this invocation, in order: the plain FastAPI baseline (``--compare``), then
    embedded, then each worker count, each followed with ``--compare-protocols`` by itself with
    gRPC off, then the bare gRPC floor (``--compare-protocols``, unless ``--no-floor``)."""
    runs = [RunPlan("plain")] if args.mode == "compare" else []
    inferno = [RunPlan("embedded")] if args.mode in ("embedded", "both", "compare") else []
    if args.mode in ("distributed", "both", "compare"):
        inferno += [RunPlan("distributed", workers, args.facades) for workers in args.workers]
    for plan in inferno:
        runs += [plan, dataclasses.replace(plan, grpc=False)] if args.compare_protocols else [plan]
    if args.compare_protocols and not args.no_floor:
        runs.append(RunPlan("floor"))
    return runs


def protocols(args: argparse.Namespace, plan: RunPlan) -> tuple[str, ...]:
    """What ``plan``'s run drives, in turn: ``args.driven`` (``--protocol``; every compared
    protocol with ``--compare-protocols``; ``bench.versions.version_protocols`` with
    ``--compare-versions``), except on the floor (it serves only gRPC) and on a run with gRPC
    off (v2-binary: REST without the gRPC server)."""
    if plan.mode == "floor":
        return GRPC_PROTOCOLS
    if not plan.grpc:
        return (BASELINE,)
    return tuple(args.driven)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a run's load goes (its facades) and where its metrics come from (every process)."""

    facade_urls: tuple[str, ...]
    metrics_urls: tuple[str, ...]
    server: str
    info: ModelInfo | None = None
    """The model as the run serves it, when the server cannot say (no metadata route)."""
    grpc_addresses: tuple[str, ...] = ()
    """The facades' gRPC ``host:port``, as ``facade_urls`` lists them (none: no gRPC)."""
    pids: tuple[int, ...] = ()
    """Server processes whose CPU is read from ``/proc`` (those without metrics)."""
    broker_pids: tuple[int, ...] = ()
    """The broker's process, read likewise when it runs on this machine."""
    redis_pids: tuple[int, ...] = ()
    """Redis's process, likewise."""


def _listener(url: str) -> tuple[int, ...]:
    """The process serving ``url`` when it listens on this machine's TCP (none otherwise: a
    remote host, a Unix socket)."""
    parts = urlsplit(url)
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    pid = listener_pid(parts.hostname, port) if parts.hostname and port else None
    return () if pid is None else (pid,)


@contextlib.contextmanager
def _started(args: argparse.Namespace, plan: RunPlan) -> Iterator[Target]:
    """The servers of ``plan``, stopped on exit (shielded from a second Ctrl-C or SIGTERM)."""
    stack = contextlib.ExitStack()
    off = "" if plan.grpc else ", gRPC off"
    try:
        if args.url:
            url = args.url.rstrip("/")
            wait_ready(url, 30.0)
            yield Target((url,), (f"{url}/metrics",), "server")
        elif plan.mode == "plain":
            print("starting the plain FastAPI server ...", file=sys.stderr, flush=True)
            plain = stack.enter_context(PlainServer(args.model, args.host, args.port, args.repo))
            yield Target((plain.base_url,), (), "plain FastAPI server",
                         local_model_info(args.repo, args.model))
        elif plan.mode == "embedded":
            print(f"starting inferno serve{off} ...", file=sys.stderr, flush=True)
            server = stack.enter_context(EmbeddedServer(args.host, args.port, args.repo,
                                                        grpc=plan.grpc, http=plan.http))
            yield Target((server.base_url,), (f"{server.base_url}/metrics",),
                         f"embedded server{off}", grpc_addresses=server.grpc_addresses)
        elif plan.mode == "floor":
            print(f"starting the {FLOOR_LABEL} (bench.grpc_floor) ...", file=sys.stderr,
                  flush=True)
            info = local_model_info(args.repo, args.model)
            floor = stack.enter_context(GrpcFloor(grpc_response(info, args.rows), args.host))
            yield Target((), (), f"{FLOOR_LABEL} server", info, (floor.address,), (floor.pid,))
        else:
            print(f"starting {plan.label}{off} ...", file=sys.stderr, flush=True)
            cluster = stack.enter_context(Cluster(ClusterSpec(
                model=args.model, workers=plan.workers, facades=plan.facades, repo=args.repo,
                host=args.host, broker_url=args.broker_url, redis_url=args.redis_url,
                grpc=plan.grpc, http=plan.http)))
            yield Target(tuple(cluster.facade_urls), tuple(cluster.metrics_urls),
                         f"cluster of {plan.label.removeprefix('distributed, ')}{off}",
                         grpc_addresses=tuple(cluster.grpc_addresses),
                         broker_pids=_listener(cluster.broker_url),
                         redis_pids=_listener(cluster.spec.redis_url))
    finally:
        with shielded():
            stack.close()


def _get(url: str) -> load.Endpoint:
    """A pre-encoded ``GET url`` with ``Connection: close``."""
    parts = urlsplit(url)
    return _endpoint(url, (f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                           "Connection: close\r\n\r\n").encode("ascii"))


def _endpoint(url: str, request: bytes) -> load.Endpoint:
    """``request`` to ``url``: ``http://host:port/...`` or a gRPC ``host:port``."""
    parts = urlsplit(url if "//" in url else f"//{url}")
    return load.Endpoint(parts.hostname or "127.0.0.1", parts.port or 80, request)


def _load_targets(args: argparse.Namespace, target: Target, info: ModelInfo, protocol: str
                  ) -> tuple[tuple[load.Endpoint, ...], int]:
    """Where each level's requests go, pre-encoded for ``protocol``, and the body's size."""
    if protocol in GRPC_PROTOCOLS:
        if not target.grpc_addresses:
            raise ValueError(f"the {target.server} serves no gRPC")
        message = grpc_infer(info, args.rows, 0)
        return tuple(_endpoint(a, message) for a in target.grpc_addresses), len(message)
    request = BUILDERS[protocol](info, args.rows, 0)
    return (tuple(_endpoint(url, request.encode(url)) for url in target.facade_urls),
            len(request.body))


def _levels(args: argparse.Namespace, target: Target, info: ModelInfo, protocol: str,
            config: dict[str, Any]) -> list[LevelRow]:
    """Every concurrency level of ``protocol`` against ``target``; fills ``config`` with the
    URL driven and the body's size."""
    targets, body_bytes = _load_targets(args, target, info, protocol)
    config["body_bytes"] = body_bytes
    level = load.Level
    if protocol in GRPC_PROTOCOLS:
        from bench.grpc_load import LEVELS  # grpc only where it is driven

        level = LEVELS[protocol]
        config["url"] = ", ".join(f"grpc://{a}" for a in target.grpc_addresses)
    scrapes = tuple(map(_get, target.metrics_urls))
    rows: list[LevelRow] = []
    for concurrency in args.concurrency:
        if args.driver == "wrk":
            outcome = wrk.run_level(target.facade_urls[0], BUILDERS[protocol](info, args.rows, 0),
                                    args.model, concurrency, args.warmup, args.duration,
                                    target.metrics_urls)
        else:
            outcome = load.run_level(load.LevelSpec(
                targets=targets, concurrency=concurrency, warmup_s=args.warmup,
                duration_s=args.duration, model=args.model, scrapes=scrapes,
                server_pids=target.pids, broker_pids=target.broker_pids,
                redis_pids=target.redis_pids), level)
        row = LevelRow.from_outcome(outcome, args.rows)
        rows.append(row)
        print(f"{target.server}, {protocol}: {row.progress()}", file=sys.stderr, flush=True)
    return rows


def _driven(args: argparse.Namespace, plan: RunPlan, target: Target) -> list[ModelInfo]:
    """The versions the run drives: the active one, or with ``--compare-versions`` every
    version, each pinned, loaded on the run's servers first."""
    if not args.compare_versions:
        return [(target.info or model_info(target.facade_urls[0], args.model)
                 ).sized(args.symbolic_dim)]
    infos = pinned_infos(args.repo, args.model)
    print(f"loading {args.model} versions {', '.join(str(i.version) for i in infos)} ...",
          file=sys.stderr, flush=True)
    load_versions(target.facade_urls, args.model, [i.version for i in infos], plan.workers)
    return infos


def run_protocols(args: argparse.Namespace, plan: RunPlan, config: dict[str, Any]
                  ) -> list[Report]:
    """Start the plan's servers (unless ``--url``), run every level of each of its
    ``protocols`` in turn against them, for each version it drives, stop them: one report per
    version and protocol (no direct baseline yet), its config ``config`` with what the run
    found out (server, URL, model version and whether pinned, protocol, body size, the load
    average around its levels)."""
    reports = []
    with _started(args, plan) as target:
        for info in _driven(args, plan, target):
            if args.rows > info.max_batch_size:
                raise ValueError(f"--rows {args.rows} exceeds max_batch_size "
                                 f"{info.max_batch_size} of model '{args.model}'")
            for protocol in protocols(args, plan):
                run = {**config, "protocol": protocol, "server": target.server,
                       "url": ", ".join(target.facade_urls), "version": info.version,
                       "pinned": info.pinned, "loadavg_start": loadavg()}
                levels = _levels(args, target, info, protocol, run)
                run["loadavg_end"] = loadavg()
                reports.append(Report(run, levels, []))
    return reports
