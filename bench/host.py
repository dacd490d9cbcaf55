"""The whole machine's CPU use over a window, from ``/proc/stat``, and one process's, from
``/proc/<pid>/stat`` (Linux; ``None`` elsewhere).

The servers' own CPU (``process_cpu_seconds_total``) says which process is busy; the machine's
says whether anything is left. Distributed mode runs a facade, a worker, the broker and the load
generator on the same cores: at ``machine busy%`` near 100 the machine itself is the limit, and
no lever inside one process raises the throughput without lowering the CPU every request costs.
A server with no metrics (the bare gRPC floor, ``bench.grpc_floor``) is read by its pid, and so
are the broker and Redis of a distributed run, found by the port they listen on
(:func:`listener_pid`): each request costs their CPU too.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

__all__ = ["CpuTimes", "busy_pct", "cpu_times", "listener_pid", "loadavg", "process_cpu_s",
           "processes_cpu_s"]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_LISTEN = "0A"
"""``TCP_LISTEN`` in the ``st`` column of ``/proc/net/tcp``."""


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """Cumulative jiffies of all cores since boot."""

    busy: int
    total: int


def cpu_times() -> CpuTimes | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/stat", encoding="ascii") as stat:
            # cpu  user nice system idle iowait irq softirq steal ...
            jiffies = [int(v) for v in stat.readline().split()[1:]]
        idle = jiffies[3] + jiffies[4]
        return CpuTimes(busy=sum(jiffies[:8]) - idle, total=sum(jiffies[:8]))
    return None


def busy_pct(start: CpuTimes | None, end: CpuTimes | None) -> float | None:
    """Busy share of all cores between two readings, in %; ``None`` if either is missing."""
    if start is None or end is None or end.total <= start.total:
        return None
    return 100.0 * (end.busy - start.busy) / (end.total - start.total)


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system, every thread) process ``pid`` has used; ``None`` if gone."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            # pid (comm) state ppid ... utime stime: fields 14 and 15; comm may hold spaces.
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return None


def processes_cpu_s(pids: Iterable[int]) -> float | None:
    """CPU seconds ``pids`` have used together; ``None`` without pids or if one is gone."""
    readings = [process_cpu_s(pid) for pid in pids]
    if not readings or None in readings:
        return None
    return sum(r for r in readings if r is not None)


def listener_pid(host: str, port: int) -> int | None:
    """The pid of the process listening on TCP ``host:port`` on this machine; ``None`` when
    ``host`` is not this machine, nothing listens there, its owner cannot be seen, or there is no
    ``/proc`` (not Linux). Matched by port, not by process name: several brokers may run here."""
    addresses = _local_addresses(host)
    inodes = {inode for bound, inode in _listeners(port) if _accepts(bound, addresses)}
    return _owner(inodes) if inodes else None


def _local_addresses(host: str) -> set[Address]:
    """The addresses ``host`` resolves to that belong to this machine (those a socket can bind)."""
    try:
        resolved = {str(info[4][0])
                    for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
    except (OSError, UnicodeError):
        return set()
    return {ipaddress.ip_address(a.partition("%")[0]) for a in resolved if _bindable(a)}


def _bindable(address: str) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
    except OSError:  # EADDRNOTAVAIL: another machine's address
        return False
    return True


def _listeners(port: int) -> Iterable[tuple[Address, str]]:
    """The bound address and socket inode of every TCP socket listening on ``port``."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as rows:
                sockets = rows.readlines()[1:]
        except OSError:  # no /proc, or no IPv6
            continue
        # sl local_address rem_address st tx_queue:rx_queue tr:when retrnsmt uid timeout inode
        for fields in map(str.split, sockets):
            address, _, hex_port = fields[1].partition(":")
            if fields[3] == _LISTEN and int(hex_port, 16) == port:
                yield _address(address), fields[9]


def _address(hexed: str) -> Address:
    """An address of ``/proc/net/tcp*``: 32-bit words in hex, each in host byte order."""
    words = (int(hexed[i:i + 8], 16) for i in range(0, len(hexed), 8))
    return ipaddress.ip_address(b"".join(struct.pack("=I", word) for word in words))


def _accepts(bound: Address, addresses: set[Address]) -> bool:
    """Whether a socket bound to ``bound`` takes connections to one of ``addresses``: the same
    address, a v4-mapped one, or a wildcard (``::`` takes IPv4 too, unless ``IPV6_V6ONLY``)."""
    if bound.is_unspecified:
        return bool(addresses) if bound.version == 6 else any(a.version == 4 for a in addresses)
    mapped = bound.ipv4_mapped if isinstance(bound, ipaddress.IPv6Address) else None
    return bound in addresses or (mapped is not None and mapped in addresses)


def _owner(inodes: set[str]) -> int | None:
    """The lowest pid holding one of the sockets ``inodes`` (forked servers share theirs: the
    parent's pid is usually the lowest); ``None`` if no process we may look into holds one."""
    links = {f"socket:[{inode}]" for inode in inodes}
    try:
        pids = sorted(int(entry) for entry in os.listdir("/proc") if entry.isdigit())
    except OSError:
        return None
    return next((pid for pid in pids if not links.isdisjoint(_fd_links(pid))), None)


def _fd_links(pid: int) -> Iterator[str]:
    """What process ``pid``'s file descriptors point to; nothing if it is gone or another
    user's."""
    fds = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fds)
    except OSError:
        return
    for name in names:
        try:
            link = os.readlink(f"{fds}/{name}")
        except OSError:  # closed since the listing
            continue
        yield link


def loadavg() -> float | None:
    """1-minute load average: on a shared small machine, other work skews every number."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None
