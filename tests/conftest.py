"""Fixtures for real RabbitMQ and Redis live in tests/services.py.

Every server a test starts, in process or as a subprocess, skips the heap freeze
(``INFERNO_GC_FREEZE``): one full collection of a process with torch loaded takes 100 ms and
more here, and the suite starts hundreds of servers. tests/integration/test_gc.py turns it on.
"""

import os

os.environ.setdefault("INFERNO_GC_FREEZE", "false")

pytest_plugins = ["tests.services", "tests.gate"]
