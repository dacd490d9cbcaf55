"""Flags and the order of work of ``python -m bench``.

Order matters on a small machine: the server starts (unless ``--url`` names one), every
concurrency level runs against that same server, the server stops, and only then does the direct
baseline run, so the two never compete for CPU. The exit status is 0 when every level finished
without errors, 1 when some request failed (the report is printed either way), 2 when the
benchmark itself could not run, 130 on Ctrl-C; the server is stopped in every case.

Extension points: ``--protocol`` picks a request builder from ``payload.BUILDERS`` and ``--mode``
picks how the server is started; each has one choice today (v1 JSON, embedded).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from bench import load, wrk
from bench.direct import DirectResult
from bench.payload import BUILDERS, model_info
from bench.report import LevelRow, Report, render_json, render_table
from bench.server import EmbeddedServer, wait_ready

__all__ = ["main"]

REFERENCE_BATCHES = (1, 64)
"""Batch sizes the direct baseline always runs, besides those the server formed."""


def _levels(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError("concurrency levels must be integers >= 1")
    return levels


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
    parser.add_argument("--concurrency", type=_levels, default=[1, 16, 64],
                        help="comma-separated levels, each run in turn (default 1,16,64)")
    parser.add_argument("--duration", type=_positive, default=5.0,
                        help="measured seconds per level (default 5)")
    parser.add_argument("--warmup", type=_non_negative, default=1.0,
                        help="unmeasured seconds before each level's window (default 1)")
    parser.add_argument("--model", default="mlp", help="model name (default mlp)")
    parser.add_argument("--rows", type=int, default=1, help="rows per request (default 1)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address of the started server")
    parser.add_argument("--port", type=int, default=0,
                        help="port of the started server; 0 picks a free one (default)")
    parser.add_argument("--repo", default=os.environ.get("INFERNO_REPO_ROOT", "models"),
                        help="model repository, for the server and the direct baseline")
    parser.add_argument("--url", help="benchmark an already running server instead")
    parser.add_argument("--mode", choices=["embedded"], default="embedded",
                        help="how the server is started (default embedded)")
    parser.add_argument("--protocol", choices=sorted(BUILDERS), default="v1",
                        help="request body format (default v1 JSON)")
    parser.add_argument("--driver", choices=["python", "wrk"], default="python",
                        help="load generator: the built-in one (default) or wrk if installed")
    parser.add_argument("--direct-duration", type=_positive,
                        help="seconds per direct-baseline batch size (default min(2, duration))")
    parser.add_argument("--no-direct", action="store_true", help="skip the direct baseline")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _loadavg() -> float | None:
    """1-minute load average: on a shared small machine, other work skews every number."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _metrics_request(base_url: str) -> bytes:
    parts = urlsplit(base_url)
    return (f"GET {parts.path.rstrip('/')}/metrics HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Connection: close\r\n\r\n").encode("ascii")


def _run_levels(args: argparse.Namespace, config: dict[str, Any]) -> list[LevelRow]:
    """Start the server (unless ``--url``), run every level against it, stop it."""
    rows: list[LevelRow] = []
    with contextlib.ExitStack() as stack:
        if args.url:
            base_url = args.url.rstrip("/")
            wait_ready(base_url, 30.0)
            config["server"] = "server"
        else:
            print("starting inferno serve ...", file=sys.stderr, flush=True)
            server = stack.enter_context(EmbeddedServer(args.host, args.port, args.repo))
            base_url = server.base_url
            config["server"] = f"{args.mode} server"
        config["url"] = base_url
        info = model_info(base_url, args.model)
        request = BUILDERS[args.protocol](info, args.rows, 0)
        config.update(version=info.version, body_bytes=len(request.body))
        encoded = request.encode(base_url)
        parts = urlsplit(base_url)
        for concurrency in args.concurrency:
            if args.driver == "wrk":
                outcome = wrk.run_level(base_url, request, args.model, concurrency,
                                        args.warmup, args.duration)
            else:
                outcome = load.run_level(load.LevelSpec(
                    host=parts.hostname or "127.0.0.1", port=parts.port or 80,
                    request=encoded, concurrency=concurrency, warmup_s=args.warmup,
                    duration_s=args.duration, model=args.model,
                    metrics_request=_metrics_request(base_url)))
            row = LevelRow.from_outcome(outcome, args.rows)
            rows.append(row)
            print(row.progress(), file=sys.stderr, flush=True)
    return rows


def _run_direct(args: argparse.Namespace, config: dict[str, Any], levels: list[LevelRow]
                ) -> tuple[list[DirectResult], str | None]:
    if args.no_direct:
        return [], "--no-direct"
    from bench.direct import measure

    batches = sorted({*REFERENCE_BATCHES, *(lvl.direct_batch for lvl in levels
                                            if lvl.direct_batch is not None)})
    print(f"direct baseline at batch {', '.join(map(str, batches))} ...", file=sys.stderr,
          flush=True)
    try:
        return measure(Path(args.repo), args.model, config.get("version"), batches,
                       config["direct_duration_s"]), None
    except Exception as exc:  # a model without a local TorchScript artifact: report, go on
        return [], f"{type(exc).__name__}: {exc}"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.driver == "wrk" and not wrk.available():
        print("bench: --driver wrk needs wrk on PATH", file=sys.stderr)
        return 2
    if args.rows < 1:
        print("bench: --rows must be >= 1", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    config: dict[str, Any] = {
        "model": args.model, "protocol": args.protocol, "driver": args.driver,
        "rows_per_request": args.rows, "duration_s": args.duration, "warmup_s": args.warmup,
        "concurrency": args.concurrency,
        "direct_duration_s": args.direct_duration or min(2.0, args.duration),
        "cpus": os.cpu_count(), "loadavg_start": _loadavg()}
    try:
        levels = _run_levels(args, config)
        direct, direct_error = _run_direct(args, config, levels)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        print(f"bench: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    config["loadavg_end"] = _loadavg()
    report = Report(config, levels, direct, direct_error)
    print(render_json(report) if args.json else render_table(report))
    if report.errors:
        print(f"bench: {report.errors} request(s) failed", file=sys.stderr)
        return 1
    return 0
