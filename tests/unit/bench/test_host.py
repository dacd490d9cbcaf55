"""The bench's ``/proc`` readings (bench/host.py): the pid listening on a TCP port, found from a
socket this test opens itself, and a process's CPU seconds."""

from __future__ import annotations

import os
import socket

import pytest

from bench.host import listener_pid, processes_cpu_s

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="Linux /proc only")


def _listening(family: socket.AddressFamily, address: str) -> socket.socket:
    server = socket.socket(family, socket.SOCK_STREAM)
    server.bind((address, 0))
    server.listen()
    return server


@pytest.mark.parametrize(("bound", "asked"), [
    ("127.0.0.1", "127.0.0.1"), ("127.0.0.1", "localhost"), ("0.0.0.0", "127.0.0.1")])
def test_the_listener_is_the_process_that_listens(bound: str, asked: str) -> None:
    with _listening(socket.AF_INET, bound) as server:
        assert listener_pid(asked, server.getsockname()[1]) == os.getpid()


def test_an_ipv6_listener_is_found_too() -> None:
    try:
        server = _listening(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback")
    with server:
        assert listener_pid("::1", server.getsockname()[1]) == os.getpid()


def test_a_port_bound_but_not_listening_has_no_listener() -> None:
    with socket.socket() as bound:  # holds the port: nothing else can listen on it meanwhile
        bound.bind(("127.0.0.1", 0))
        assert listener_pid("127.0.0.1", bound.getsockname()[1]) is None


def test_another_machine_has_no_listener_here_even_on_a_port_listened_on() -> None:
    with _listening(socket.AF_INET, "0.0.0.0") as server:
        port = server.getsockname()[1]
        assert listener_pid("192.0.2.1", port) is None  # TEST-NET-1: never this machine's
        assert listener_pid("name.invalid", port) is None


def test_cpu_seconds_of_processes_together_or_none_when_one_is_unknown() -> None:
    assert (processes_cpu_s([os.getpid()]) or 0) > 0
    assert processes_cpu_s([]) is None
    with open("/proc/sys/kernel/pid_max", encoding="ascii") as pid_max:
        assert processes_cpu_s([os.getpid(), int(pid_max.read()) + 1]) is None
