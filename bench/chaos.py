"""``python -m bench.chaos``: a chaos soak of a distributed cluster, bounded and on loopback.

Two facades of two processes each (``inferno facade --workers 2``) and three workers
(``bench.cluster``: a fresh vhost, a Redis prefix of their own, deleted afterwards) serve the
``bag`` model under steady load through both facades (``bench.chaos_load``), while faults come
one after another at random intervals (``bench.chaos_faults``, their kinds in ``harness.faults``:
worker SIGKILL, closed broker connections, a broker application restart, killed and paused Redis
clients, a cut broker link, a silent broker link, a facade process stopped). Facades and workers
reach the broker through a TCP proxy of this process (``harness.proxy``), so cutting
it cuts their link.

The report: per fault kind, how often it came, the recovery time after each (from the fault's
end, i.e. the restart, restore or kill, to the first 200 answered to a request sent after it)
and the errors answered while it was the latest fault, by code; then the
totals line, last: ``sent=N ok=N errors=N lost=N duplicates=N``. **Lost** is a request with no
answer within its deadline + 1 s; a **duplicate** is a 200 carrying another request's answer
(see ``bench.chaos_load``). The exit status is 1 when either is not 0.

Whatever happens, ``finally`` restores the services (``start_app``, ``CLIENT UNPAUSE``, the
proxy), stops the processes, deletes the keys and the vhost, then checks that the broker
application runs and Redis answers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench.chaos_faults import Faults, services_healthy
from bench.chaos_load import DUPLICATE, LOST, OK, Load, Outcome
from bench.cluster import Cluster, ClusterSpec
from harness.faults import ALL_FAULTS, GLOBAL_FAULTS
from harness.process import shielded
from harness.proxy import ThreadedProxy
from harness.services import DEFAULT_BROKER, DEFAULT_REDIS, fresh_vhost

__all__ = ["main"]

MODEL = "bag"
REPO = Path(__file__).resolve().parents[1] / "models"
WARMUP_S = 3.0
TAIL_S = 8.0
"""Load goes on this long after the last fault: its recovery is measured too."""


@dataclass
class Fault:
    kind: str
    started: float
    ended: float = 0.0
    what: str = ""
    failed: str = ""


@dataclass
class Run:
    faults: list[Fault] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    restarted: list[int] = field(default_factory=list)
    """Workers that exited by themselves (and were replaced)."""


async def _supervise_workers(faults: Faults, run: Run) -> None:
    while True:  # other processes: nothing to await but their exit, polled
        exited = await asyncio.to_thread(faults.restart_exited_workers)
        for pid in exited:
            print(f"chaos: worker pid {pid} exited by itself; started another", file=sys.stderr)
        run.restarted += exited
        await asyncio.sleep(0.5)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos",
        description="Chaos soak: load through 2 facades and 3 workers while faults strike.")
    parser.add_argument("--duration", type=float, default=180.0,
                        help="seconds of load (faults included), default 180")
    parser.add_argument("--faults", default=",".join(ALL_FAULTS),
                        help=f"comma-separated fault kinds, default all: {','.join(ALL_FAULTS)}")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument("--interval", type=float, default=None,
                        help="mean seconds between faults (default: at most 10, so that every "
                             "kind comes at least once)")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second in all")
    parser.add_argument("--concurrency", type=int, default=16, help="HTTP connections in all")
    parser.add_argument("--timeout-ms", type=int, default=5000,
                        help="each request's deadline (timeout_ms), default 5000")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--facades", type=int, default=2)
    parser.add_argument("--facade-processes", type=int, default=2,
                        help="processes of each facade (--workers); facade_stall needs 2+")
    parser.add_argument("--broker-url", default=DEFAULT_BROKER,
                        help="the broker's root URL: the run creates a vhost there")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS)
    return parser


def _schedule(kinds: Sequence[str], duration: float, interval: float | None,
              rng: random.Random) -> tuple[list[str], float]:
    """The faults in order (every kind as often as the others, ±1) and the mean spacing."""
    span = max(1.0, duration - WARMUP_S - TAIL_S)
    spacing = interval if interval is not None else min(10.0, span / len(kinds))
    count = max(len(kinds), int(span / spacing))
    order: list[str] = []
    while len(order) < count:
        round_ = list(kinds)
        rng.shuffle(round_)
        order += round_
    return order[:count], spacing


async def _soak(args: argparse.Namespace, kinds: list[str], rng: random.Random) -> Run:
    run = Run()
    order, spacing = _schedule(kinds, args.duration, args.interval, rng)
    broker = urlsplit(args.broker_url)
    with contextlib.ExitStack() as stack:
        vhost_url = stack.enter_context(fresh_vhost(args.broker_url, kind="chaos"))
        vhost = urlsplit(vhost_url).path.lstrip("/")
        proxy = ThreadedProxy(broker.hostname or "127.0.0.1", broker.port or 5672)
        proxy.start()
        stack.callback(proxy.close)
        proxied = urlunsplit((broker.scheme, f"{broker.username or 'guest'}:"
                              f"{broker.password or 'guest'}@127.0.0.1:{proxy.port}",
                              f"/{vhost}", "", ""))
        cluster = Cluster(ClusterSpec(MODEL, workers=args.workers, facades=args.facades,
                                      repo=str(REPO), broker_url=proxied,
                                      facade_processes=args.facade_processes))
        client_name = cluster.redis_prefix
        separator = "&" if "?" in args.redis_url else "?"
        cluster.spec = dataclasses.replace(
            cluster.spec, redis_url=f"{args.redis_url}{separator}client_name={client_name}")
        faults = Faults(cluster, proxy, vhost, args.redis_url, client_name, rng)
        stack.enter_context(cluster)
        # Undone before the processes stop (the stack unwinds in reverse).
        def restore() -> None:
            for undone in faults.restore():
                print(f"chaos: restored: {undone}", file=sys.stderr)

        stack.callback(restore)
        print(f"chaos: {len(order)} faults, about {spacing:.1f} s apart: {', '.join(order)}",
              file=sys.stderr)
        load = Load(cluster.facade_urls, MODEL, args.concurrency, args.rate, args.timeout_ms,
                    faults.stopped_ports)
        run.outcomes = load.outcomes
        traffic = asyncio.create_task(load.run())
        supervisor = asyncio.create_task(_supervise_workers(faults, run))
        started = time.monotonic()
        try:
            await asyncio.sleep(WARMUP_S)
            for index, kind in enumerate(order):
                due = started + WARMUP_S + (index + rng.uniform(0.3, 0.9)) * spacing
                await asyncio.sleep(max(1.0, due - time.monotonic()))
                fault = Fault(kind, time.monotonic())
                run.faults.append(fault)
                try:
                    fault.what = await asyncio.to_thread(faults.inject, kind)
                except Exception as exc:
                    fault.failed = f"{type(exc).__name__}: {exc}"
                fault.ended = time.monotonic()
                print(f"chaos: t={fault.started - started:6.1f}s {kind}: "
                      f"{fault.what or fault.failed} ({fault.ended - fault.started:.1f} s)",
                      file=sys.stderr)
            await asyncio.sleep(max(TAIL_S, started + args.duration - time.monotonic()))
        finally:
            supervisor.cancel()
            load.stop()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(args.timeout_ms / 1000 + 5):
                    await traffic
            if not traffic.done():
                traffic.cancel()
    return run


def _report(run: Run, kinds: list[str]) -> tuple[list[str], Counter[str]]:
    outcomes = sorted(run.outcomes, key=lambda o: o.sent)
    results = Counter(o.result for o in outcomes)
    lines = [f"{'fault':<18} {'count':>5} {'recovery mean':>14} {'max':>7}  errors while latest"]
    by_fault: dict[int, Counter[str]] = {}
    faults = sorted(run.faults, key=lambda f: f.started)
    for outcome in outcomes:
        latest = None  # the latest fault when the answer came (or the wait ended)
        for index, fault in enumerate(faults):
            if fault.started <= outcome.done:
                latest = index
        if latest is not None and outcome.result != OK:
            by_fault.setdefault(latest, Counter())[outcome.result] += 1
    for kind in kinds:
        mine = [(i, f) for i, f in enumerate(faults) if f.kind == kind]
        recoveries = []
        errors: Counter[str] = Counter()
        for index, fault in mine:
            first = next((o for o in outcomes if o.sent >= fault.ended and o.result == OK),
                         None)
            if first is not None:
                recoveries.append(first.done - fault.ended)
            errors += by_fault.get(index, Counter())
        mean = f"{sum(recoveries) / len(recoveries):.2f} s" if recoveries else "-"
        worst = f"{max(recoveries):.2f} s" if recoveries else "-"
        failed = sum(1 for _, f in mine if f.failed)
        codes = ", ".join(f"{c}={n}" for c, n in errors.most_common()) or "none"
        lines.append(f"{kind:<18} {len(mine):>5} {mean:>14} {worst:>7}  {codes}"
                     + (f" ({failed} could not be injected)" if failed else ""))
    before = Counter(o.result for o in outcomes
                     if o.result != OK and (not faults or o.done < faults[0].started))
    if run.restarted:
        lines.append(f"(workers that exited by themselves and were replaced: "
                     f"{len(run.restarted)})")
    if before:
        lines.append(f"{'(before faults)':<18} {'':>5} {'':>14} {'':>7}  "
                     + ", ".join(f"{c}={n}" for c, n in before.most_common()))
    return lines, results


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    kinds = [k.strip() for k in args.faults.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(ALL_FAULTS))
    if unknown or not kinds:
        sys.exit(f"unknown fault kind(s): {', '.join(unknown) or '(none given)'}; "
                 f"choose from {', '.join(ALL_FAULTS)}")
    if "facade_stall" in kinds and args.facade_processes < 2:
        sys.exit("facade_stall stops one of a facade's processes: it needs "
                 "--facade-processes 2 or more")
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    print(f"chaos: seed {seed}, {args.duration:.0f} s, faults {','.join(kinds)}",
          file=sys.stderr)
    if shared := [k for k in kinds if k in GLOBAL_FAULTS]:
        print(f"chaos: {', '.join(shared)} reach every user of the broker and Redis, not only "
              f"this run (leave them out with --faults on a shared machine)", file=sys.stderr)
    try:
        run = asyncio.run(_soak(args, kinds, random.Random(seed)))
    finally:
        with shielded():
            problems = services_healthy(args.redis_url)
        for problem in problems:
            print(f"chaos: after the run, {problem}", file=sys.stderr)
    lines, results = _report(run, kinds)
    for outcome in run.outcomes:
        if outcome.result in (LOST, DUPLICATE):
            print(f"chaos: {outcome.result} {outcome.request_id} (facade {outcome.facade + 1}, "
                  f"t={outcome.sent - run.outcomes[0].sent:.1f}s): {outcome.detail}",
                  file=sys.stderr)
    sent = len(run.outcomes)
    ok, lost, duplicates = results[OK], results[LOST], results[DUPLICATE]
    print("\n".join(lines))
    print(f"sent={sent} ok={ok} errors={sent - ok - lost - duplicates} lost={lost} "
          f"duplicates={duplicates}")
    if lost or duplicates:
        sys.exit(1)


if __name__ == "__main__":
    main()
