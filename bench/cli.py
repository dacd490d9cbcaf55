"""Flags and the order of work of ``python -m bench``.

Order matters on a small machine: each run starts its servers (unless ``--url`` names one), every
concurrency level runs against those same servers, the servers stop, and only after the last run
does the direct baseline run, so nothing ever competes for CPU with what is measured. The runs
are one embedded server (``--mode embedded``, the default), one distributed cluster per
``--workers`` count (``--mode distributed``), or both in turn (``--mode both``, compared level by
level). ``--compare`` runs, in turn, the plain FastAPI baseline (``bench.plain_fastapi``),
embedded and distributed Inferno, then the direct model and the bare broker RPC
(``bench.rpc_floor``), and prints them side by side. ``--model tiny`` builds a 4 → 2 model in a
temporary repository (``harness.built``) that every server and the direct baseline use;
``--scaling`` runs distributed clusters of 1, 2 and 4 workers (``--workers``) serving the built
``fixed`` model (20 ms per batch, the GIL released) and prints each one's throughput against one
worker's. ``--compare-protocols`` runs every level of v1 JSON, v2 JSON, v2-binary, gRPC
``ModelInfer`` and gRPC ``ModelStreamInfer`` in turn against the same started servers of each
run (``runner.protocols``), then v2-binary again against fresh servers of the same shape with
gRPC off, then the same gRPC clients against a bare ``grpc.aio`` echo (``bench.grpc_floor``), and
prints them side by side (``bench.protocol_table``). ``--compare-versions`` loads every version
of the model on the same servers and drives each one pinned (``bench.versions``), then measures
each directly (and the library call it wraps, ``bench.versions.LIBRARIES``), side by side
(``bench.versions_table``). ``--compare-http-servers`` serves Inferno's HTTP with uvicorn (what the
``inferno`` command runs) and with granian (``bench.granian_app``, the ``bench`` extra) in turn,
uvicorn, granian, uvicorn, granian (``--rounds``), each against fresh servers of each ``--mode``
(``runner.RunPlan.http``), with no direct baseline, and prints them side by side
(``bench.compare.http_server_rows``).

The exit status is 0 when every level finished without errors, 1 when some request failed (the
report is printed either way), 2 when the benchmark itself could not run, 130 on Ctrl-C or
SIGTERM; the servers, and a distributed run's vhost and Redis keys, are cleaned up in every case.

Extension points: ``--protocol`` picks a request builder from ``payload.BUILDERS`` (``grpc``,
``grpc-stream``: a gRPC driver of ``grpc_load.LEVELS``), ``payload.COMPARED`` what
``--compare-protocols`` runs; ``--mode`` (and ``--compare``, ``--compare-protocols``' floor)
picks how the servers are started (``runner.plans``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import os
import signal
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from bench import wrk
from bench.compare import (
    comparisons,
    render_http_servers_json,
    render_http_servers_table,
    render_suite_json,
    render_suite_table,
)
from bench.direct import DirectResult
from bench.payload import COMPARED, GRPC_PROTOCOLS, PROTOCOLS, SYMBOLIC_DIM, local_model_info
from bench.protocol_table import render_protocols_json, render_protocols_table
from bench.report import LevelRow, Report, render_json, render_table
from bench.runner import RunPlan, plans, run_protocols
from bench.server import HTTP_SERVERS
from bench.versions import BATCHES as VERSION_BATCHES
from bench.versions import LIBRARIES, version_protocols
from bench.versions_table import Library, render_versions_json, render_versions_table
from common.errors import ModelNotFound
from harness.built import BUILT, FIXED, built_repo
from harness.services import DEFAULT_REDIS

__all__ = ["main"]

REFERENCE_BATCHES = (1, 64)
"""Batch sizes the direct baseline always runs, besides those the server formed."""


def _int_list(what: str) -> Callable[[str], list[int]]:
    def parse(text: str) -> list[int]:
        try:
            values = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
        if not values or min(values) < 1:
            raise argparse.ArgumentTypeError(f"{what} must be integers >= 1")
        return values

    return parse


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Load-test the predict route and compare with the model called directly.")
    parser.add_argument("--concurrency", type=_int_list("concurrency levels"),
                        help="comma-separated levels, each run in turn (default 1,16,64; "
                             "--scaling: 64)")
    parser.add_argument("--duration", type=_positive, default=5.0,
                        help="measured seconds per level (default 5)")
    parser.add_argument("--warmup", type=_non_negative, default=1.0,
                        help="unmeasured seconds before each level's window (default 1)")
    parser.add_argument("--model", default="mlp",
                        help="model name (default mlp); minilm: sentence embeddings of short "
                             "sentences (the minilm extra); tiny: a 4 -> 2 Linear, fixed: 20 ms "
                             "per batch of up to 4 rows: the bench builds these in a temporary "
                             "repository, used instead of --repo")
    parser.add_argument("--rows", type=int, default=1, help="rows per request (default 1)")
    parser.add_argument("--symbolic-dim", type=_count, default=SYMBOLIC_DIM,
                        help="length of every symbolic non-batch input dimension, e.g. echo16's "
                             f"n: the request's size (default {SYMBOLIC_DIM})")
    parser.add_argument("--host", default="127.0.0.1",
                        help="bind address of the started server or facades")
    parser.add_argument("--port", type=int, default=0,
                        help="port of the embedded server; 0 picks a free one (default; "
                             "facades always get free ports)")
    parser.add_argument("--repo", default=os.environ.get("INFERNO_REPO_ROOT", "models"),
                        help="model repository, for the server and the direct baseline")
    parser.add_argument("--url", help="benchmark an already running server instead "
                                      "(--mode embedded only)")
    parser.add_argument("--mode", choices=["embedded", "distributed", "both"],
                        default="embedded",
                        help="embedded: one `inferno serve` (default); distributed: `inferno "
                             "facade`s and `inferno worker`s over RabbitMQ and Redis; both: "
                             "embedded, then distributed, compared")
    parser.add_argument("--compare", action="store_true",
                        help="the plain FastAPI baseline, embedded, distributed (overrides "
                             "--mode), the bare broker RPC and the direct model, in turn, "
                             "side by side")
    parser.add_argument("--compare-protocols", action="store_true",
                        help="v1 JSON, v2 JSON, v2-binary, grpc and grpc-stream in turn against "
                             "the same servers of each run (--mode), v2-binary again against "
                             "fresh ones with gRPC off, then the same gRPC clients against a "
                             "bare grpc.aio echo (bench.grpc_floor), side by side")
    parser.add_argument("--compare-versions", action="store_true",
                        help="every version of --model in the repository, loaded on the same "
                             "servers and driven in turn with the version pinned, through v1 "
                             "and (a model with an embeddings: section) the OpenAI API, or "
                             "--protocol; then each version direct at batch 1, 8, 32 and, for "
                             "minilm, sentence-transformers' encode; side by side")
    parser.add_argument("--compare-http-servers", action="store_true",
                        help="Inferno's HTTP served by uvicorn (the inferno command's) and by "
                             "granian (bench.granian_app; the bench extra), alternated over "
                             "--rounds rounds, each against fresh servers of --mode, side by "
                             "side (no direct baseline)")
    parser.add_argument("--rounds", type=_count,
                        help="--compare-http-servers: rounds of uvicorn then granian "
                             "(default 2)")
    parser.add_argument("--scaling", action="store_true",
                        help="horizontal scaling: distributed runs (overrides --mode) of the "
                             "fixed model (overrides --model) at each --workers count (default "
                             "1,2,4), each against one worker")
    parser.add_argument("--workers", type=_int_list("worker counts"),
                        help="distributed: worker processes, or a comma-separated list of "
                             "counts each run in turn against fresh processes (default 1; "
                             "--scaling: 1,2,4)")
    parser.add_argument("--facades", type=_count, default=1,
                        help="distributed: facade processes; the load generator's connections "
                             "go to them round-robin (default 1)")
    parser.add_argument("--broker-url",
                        help="distributed: an existing broker and vhost, used as is (default: "
                             "a fresh vhost on the local broker, made with rabbitmqctl and "
                             "deleted afterwards)")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS,
                        help=f"distributed: Redis; the run's keys get a unique prefix and are "
                             f"deleted afterwards (default {DEFAULT_REDIS})")
    parser.add_argument("--torch-threads", type=_count,
                        help="torch intra-op threads of the started servers (every worker) and "
                             "the direct baseline: sets INFERNO_TORCH_THREADS (default: the "
                             "servers' own, one core fewer than the process may use)")
    parser.add_argument("--protocol", choices=PROTOCOLS,
                        help="request body format (default v1 JSON; v2 = KServe v2 JSON; "
                             "openai = POST /openai/v1/embeddings with the sentences as input; "
                             "grpc = ModelInfer with raw_input_contents on the started "
                             "servers' gRPC port, bench.grpc_load; grpc-stream = the same on "
                             "one ModelStreamInfer stream per client)")
    parser.add_argument("--binary", action="store_true",
                        help="the protocol's binary form: v2 → Triton's binary tensor "
                             "extension (v2-binary), v1 → base64 tensors (v1-b64)")
    parser.add_argument("--driver", choices=["python", "wrk"], default="python",
                        help="load generator: the built-in one (default) or wrk if installed")
    parser.add_argument("--direct-duration", type=_positive,
                        help="seconds per direct-baseline batch size (default min(2, duration))")
    parser.add_argument("--no-direct", action="store_true", help="skip the direct baseline")
    parser.add_argument("--no-floor", action="store_true",
                        help="--mode both, --compare: skip the bare broker round trip "
                             "(bench.rpc_floor) measured after the runs to split the queue "
                             "hop's cost; --compare-protocols: skip the bare grpc.aio echo")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _run_direct(args: argparse.Namespace, version: int | None, levels: list[LevelRow],
                duration_s: float) -> tuple[list[DirectResult], str | None]:
    if args.no_direct:
        return [], "--no-direct"
    from bench.direct import measure

    reference: Sequence[int] = REFERENCE_BATCHES
    if args.compare_versions:  # the batches that version can form
        largest = local_model_info(args.repo, args.model, version).max_batch_size
        reference = [batch for batch in VERSION_BATCHES if batch <= largest]
    batches = sorted({*reference, *(lvl.direct_batch for lvl in levels
                                    if lvl.direct_batch is not None)})
    print(f"direct baseline of version {version} at batch {', '.join(map(str, batches))} ...",
          file=sys.stderr, flush=True)
    try:
        return measure(Path(args.repo), args.model, version, batches, duration_s), None
    except Exception as exc:  # a model this process cannot load (an extra missing): go on
        return [], f"{type(exc).__name__}: {exc}"


def _run_library(args: argparse.Namespace, duration_s: float) -> Library | None:
    """``--compare-versions``: the library call the model wraps, direct, when it has one."""
    if not args.compare_versions or args.no_direct or args.model not in LIBRARIES:
        return None
    label, rates = LIBRARIES[args.model]
    print(f"direct {label} at batch {', '.join(map(str, VERSION_BATCHES))} ...",
          file=sys.stderr, flush=True)
    try:
        return Library(label, rates(VERSION_BATCHES, duration_s))
    except Exception as exc:  # the library missing: the versions' numbers stand on their own
        return Library(label, [], f"{type(exc).__name__}: {exc}")


def _floor_ms(args: argparse.Namespace, reports: list[Report]) -> float | None:
    """p50 of the bare broker round trip, when a run crossed the local broker."""
    modes = {report.config["mode"] for report in reports}
    if args.no_floor or args.broker_url or not {"embedded", "distributed"} <= modes:
        return None
    from bench.rpc_floor import floor_latencies

    print("bare broker round trip (bench.rpc_floor) ...", file=sys.stderr, flush=True)
    try:
        return statistics.median(floor_latencies()) * 1000
    except Exception as exc:  # reported, not fatal: the runs' numbers stand on their own
        print(f"bench: no broker floor: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None


def _compare_clash(args: argparse.Namespace) -> str | None:
    """Why ``--compare-http-servers``, ``--compare-protocols`` or ``--compare-versions`` cannot
    go with the flags given (read before defaults apply: with ``--compare-protocols``,
    ``--protocol`` given at all is a clash)."""
    if args.compare_http_servers:
        return _clashing("--compare-http-servers compares the servers it starts", (
            ("--url", args.url), ("--compare", args.compare), ("--scaling", args.scaling),
            ("--compare-protocols", args.compare_protocols),
            ("--compare-versions", args.compare_versions),
            (f"--protocol {args.protocol} (no HTTP)", args.protocol in GRPC_PROTOCOLS),
            ("--facades", args.facades > 1),
            ("several --workers counts", len(args.workers or []) > 1)))
    if args.rounds is not None:
        return "--rounds goes with --compare-http-servers"
    if args.compare_protocols:
        return _clashing("--compare-protocols drives every protocol against the servers it "
                         "starts", (
            ("--url", args.url), ("--driver wrk", args.driver == "wrk"),
            ("--compare", args.compare), ("--scaling", args.scaling),
            ("--protocol", args.protocol is not None), ("--binary", args.binary),
            ("--compare-versions", args.compare_versions)))
    if args.compare_versions:
        return _clashing("--compare-versions loads every version on the servers it starts", (
            ("--url", args.url), ("--compare", args.compare), ("--scaling", args.scaling),
            (f"--model {args.model} (built, one version)", args.model in BUILT)))
    return None


def _clashing(why: str, flags: tuple[tuple[str, object], ...]) -> str | None:
    given = [flag for flag, value in flags if value]
    return f"{why}: not with {', '.join(given)}" if given else None


def settle(args: argparse.Namespace) -> str | None:
    """The flags' defaults that depend on each other, and ``args.driven`` (what each Inferno
    run drives, ``runner.protocols``); why the flags cannot go together, if they cannot."""
    clash = _compare_clash(args)
    driven = (version_protocols(args.repo, args.model)
              if args.compare_versions and args.protocol is None and clash is None else None)
    args.protocol = args.protocol or "v1"
    if args.compare:
        args.mode = "compare"
    if args.scaling:
        args.mode, args.model = "distributed", FIXED
    args.workers = args.workers or ([1, 2, 4] if args.scaling else [1])
    args.rounds = args.rounds or 2
    args.concurrency = args.concurrency or ([64] if args.scaling else [1, 16, 64])
    if args.binary:
        args.protocol = {"v1": "v1-b64", "v2": "v2-binary"}.get(args.protocol, args.protocol)
    args.driven = COMPARED if args.compare_protocols else driven or (args.protocol,)
    return clash or _usage_error(args)


def _usage_error(args: argparse.Namespace) -> str | None:
    if args.compare_http_servers and importlib.util.find_spec("granian") is None:
        return "--compare-http-servers needs granian: pip install -e '.[bench]' (the bench extra)"
    if args.driver == "wrk" and not wrk.available():
        return "--driver wrk needs wrk on PATH"
    if args.driver == "wrk" and args.mode != "embedded" and args.facades > 1:
        return "--driver wrk drives one URL: use --facades 1"
    if args.protocol in GRPC_PROTOCOLS and (args.driver == "wrk" or args.url or args.compare):
        return f"--protocol {args.protocol} drives the servers the bench starts: not with " \
               "--driver wrk, --url or --compare"
    if args.rows < 1:
        return "--rows must be >= 1"
    if args.url and args.mode != "embedded":
        return "--url benchmarks one running server: use it with --mode embedded"
    if args.url and args.model in BUILT:
        return f"--model {args.model} is built and served by the bench: it cannot go with --url"
    return None


def _measure(args: argparse.Namespace, base: dict[str, Any]) -> list[Report]:
    """Every run in turn, then the direct baseline: one report per run and protocol."""
    runs: list[Report] = []
    for plan in plans(args):
        config = {**base, "label": plan.label, "mode": plan.mode}
        if not plan.grpc:  # same label, same table: the mark tells the run apart
            config["grpc"] = False
        if plan.mode == "distributed":
            config.update(workers=plan.workers, facades=plan.facades)
        runs += run_protocols(args, plan, config)
    directs = {version: _run_direct(
        args, version, [lvl for run in runs if run.config.get("version") == version
                        for lvl in run.levels], base["direct_duration_s"])
        for version in dict.fromkeys(run.config.get("version") for run in runs)}
    return [dataclasses.replace(run, direct=directs[run.config.get("version")][0],
                                direct_error=directs[run.config.get("version")][1])
            for run in runs]


def _measure_http_servers(args: argparse.Namespace, base: dict[str, Any]) -> list[Report]:
    """Per mode, every round of every HTTP server in turn against fresh servers: one report
    each, its config naming server and round."""
    reports: list[Report] = []
    modes = ["embedded", "distributed"] if args.mode == "both" else [args.mode]
    for mode in modes:
        for round_ in range(1, args.rounds + 1):
            for http in HTTP_SERVERS:
                print(f"round {round_}: starting {mode} under {http} ...", file=sys.stderr,
                      flush=True)
                config = {**base, "label": f"{mode}, {http}", "mode": mode, "http_server": http,
                          "round": round_}
                if mode == "distributed":
                    config.update(workers=args.workers[0], facades=1)
                reports += run_protocols(args, RunPlan(mode, args.workers[0], http=http), config)
    return reports


def _measure_all(args: argparse.Namespace, base: dict[str, Any]
                 ) -> tuple[list[Report], float | None]:
    """The runs, then the broker floor when it applies (a built model, ``--model tiny`` or
    ``fixed``: in its own repository, removed afterwards)."""
    with contextlib.ExitStack() as stack:
        if args.model in BUILT and not args.url:
            args.repo = stack.enter_context(built_repo(args.model))
        if args.compare_http_servers:
            return _measure_http_servers(args, base), None
        reports = _measure(args, base)
        if args.compare_protocols or len(reports) == 1:
            return reports, None
        return reports, _floor_ms(args, reports)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        problem = settle(args)
    except ModelNotFound as exc:  # --compare-versions of a model the repository lacks
        problem = f"--compare-versions: {exc.message}"
    if problem:
        print(f"bench: {problem}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    if args.torch_threads:  # inherited by every server process and read by the direct baseline
        os.environ["INFERNO_TORCH_THREADS"] = str(args.torch_threads)
    base: dict[str, Any] = {
        "model": args.model, "protocol": args.protocol, "driver": args.driver,
        "rows_per_request": args.rows, "duration_s": args.duration, "warmup_s": args.warmup,
        "concurrency": args.concurrency,
        "torch_threads": os.environ.get("INFERNO_TORCH_THREADS") or None,
        "direct_duration_s": args.direct_duration or min(2.0, args.duration),
        "cpus": os.cpu_count()}
    try:
        reports, floor_ms = _measure_all(args, base)
        library = _run_library(args, base["direct_duration_s"])
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"bench: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if args.compare_http_servers:
        print(render_http_servers_json(reports) if args.json
              else render_http_servers_table(reports))
    elif args.compare_versions:
        print(render_versions_json(reports, library) if args.json
              else render_versions_table(reports, library))
    elif args.compare_protocols:
        print(render_protocols_json(reports) if args.json else render_protocols_table(reports))
    elif len(reports) == 1:
        print(render_json(reports[0]) if args.json else render_table(reports[0]))
    else:
        compared = comparisons(reports, floor_ms)
        print(render_suite_json(reports, compared, floor_ms) if args.json
              else render_suite_table(reports, compared, floor_ms))
    errors = sum(report.errors for report in reports)
    if errors:
        print(f"bench: {errors} request(s) failed", file=sys.stderr)
        return 1
    return 0
