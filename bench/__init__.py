"""``python -m bench``: load-test an Inferno server and compare it with the model called directly.

The benchmark answers one question: how close does the serving path get to the model's own
throughput? It drives the predict route with N concurrent keep-alive clients, reads the server's
batching metrics around the measurement window, and runs the same model in-process at the batch
size the server formed (the limit). Modules:

- ``cli``: flags and the order of work (server up, levels, server down, direct baseline).
- ``server``: start/stop ``inferno serve`` on a free port, wait for readiness.
- ``payload``: request bytes built once per run, one builder per protocol.
- ``load``: the lean Python load generator (a spawned process, asyncio streams).
- ``wrk``: the optional ``--driver wrk`` alternative.
- ``metrics``: Prometheus text parsing and deltas (mean batch size, inference time per batch).
- ``direct``: the in-process TorchScript baseline.
- ``report``: the table and the ``--json`` document.
"""
