"""``--driver wrk``: the same level driven by wrk (C, epoll), for a client that costs even less.

wrk takes whole seconds only, so the warm-up and the window are rounded up to whole seconds; the
warm-up is a separate wrk run. A generated Lua script sets the pre-built body and prints wrk's
summary on one marker line that this module parses. wrk counts responses of status 400 and above
as errors (not other non-200s); its latency covers every response, errors included. Metrics are
scraped by the bench process just before and after the measured run. wrk drives one URL: with
several facades, the CLI refuses ``--driver wrk``.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from bench.host import busy_pct, cpu_times
from bench.load import LoadOutcome
from bench.metrics import Snapshot, parse, total
from bench.payload import HttpRequest

__all__ = ["available", "run_level"]

_MARKER = "BENCH_RESULT"

_SCRIPT = """\
local f = assert(io.open({body_path!r}, "rb"))
wrk.method = {method!r}
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = {content_type!r}

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("{marker} %d %d %d %d %d %d %d %.1f %.1f %.1f %.1f\\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def _scrape(metrics_urls: Sequence[str], model: str) -> Snapshot | None:
    """The totals summed over every metrics endpoint; ``None`` if one cannot be read."""
    snapshots = []
    for url in metrics_urls:
        try:
            with urllib.request.urlopen(url, timeout=10.0) as response:
                snapshots.append(parse(response.read().decode("utf-8", "replace"), model))
        except (urllib.error.URLError, OSError):
            return None
    return total(snapshots) if snapshots else None


def _wrk(url: str, script: Path, concurrency: int, seconds: int) -> list[str]:
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "10s",
               "-s", str(script), url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr.strip()}")
    for line in done.stdout.splitlines():
        if line.startswith(_MARKER):
            return line.split()[1:]
    raise RuntimeError(f"wrk printed no result line:\n{done.stdout}")


def run_level(base_url: str, request: HttpRequest, model: str, concurrency: int,
              warmup_s: float, duration_s: float, metrics_urls: Sequence[str]) -> LoadOutcome:
    url = base_url.rstrip("/") + request.path
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        body_path = Path(tmp) / "body"
        body_path.write_bytes(request.body)
        script = Path(tmp) / "bench.lua"
        # Lua accepts Python's single-quoted string literals for these plain values.
        script.write_text(_SCRIPT.format(body_path=str(body_path), method=request.method,
                                         content_type=request.content_type, marker=_MARKER))
        errors = 0
        if warmup_s > 0:
            warm = _wrk(url, script, concurrency, max(1, math.ceil(warmup_s)))
            errors += sum(int(v) for v in warm[2:7])
        before = _scrape(metrics_urls, model)
        machine_start = cpu_times()
        fields = _wrk(url, script, concurrency, max(1, math.ceil(duration_s)))
        machine_end = cpu_times()
        after = _scrape(metrics_urls, model)
    requests, duration_us = int(fields[0]), int(fields[1])
    failed = [int(v) for v in fields[2:7]]
    p50_us, p99_us, mean_us, max_us = (float(v) for v in fields[7:11])
    errors += sum(failed)
    ok = requests - failed[3]  # status errors are among the completed requests
    return LoadOutcome(
        concurrency=concurrency, requests=ok, errors=errors, window_s=duration_us / 1e6,
        p50_s=p50_us / 1e6 if requests else None, p99_s=p99_us / 1e6 if requests else None,
        mean_s=mean_us / 1e6 if requests else None, max_s=max_us / 1e6 if requests else None,
        metrics_before=before, metrics_after=after,
        machine_busy_pct=busy_pct(machine_start, machine_end))
