"""``python -m bench``: load-test an Inferno server and compare it with the model called directly.

The benchmark answers one question: how close does the serving path get to the model's own
throughput? It drives the predict route with N concurrent keep-alive clients, reads the servers'
batching metrics around the measurement window, and runs the same model in-process at the batch
size the server formed (the limit). The server is embedded (``inferno serve``), distributed
(``inferno facade``s and ``inferno worker``s over RabbitMQ and Redis), or both, compared. Modules:

- ``cli``: flags and the order of work (runs, then the direct baseline, then the report).
- ``runner``: one run: its servers up, every concurrency level, its servers down.
- ``server``: start/stop ``inferno serve`` on a free port, under uvicorn or granian.
- ``granian_app``: Inferno built as ``inferno serve`` / ``inferno facade`` build it, as an ASGI
  app granian serves (``--compare-http-servers``, the ``bench`` extra).
- ``cluster``: start/stop facades and workers in a fresh vhost and Redis prefix, wait until ready.
- ``payload``: request bytes built once per run, one builder per protocol.
- ``load``: the lean Python load generator (a spawned process, asyncio streams).
- ``grpc_load``: its gRPC clients (``--protocol grpc``: ``ModelInfer``; ``grpc-stream``:
  ``ModelStreamInfer``); ``grpc_floor``: a bare ``grpc.aio`` echo of Triton's service, their floor.
- ``wrk``: the optional ``--driver wrk`` alternative.
- ``metrics``: Prometheus text parsing, sums over endpoints, deltas (mean batch, model time).
- ``direct``: the in-process TorchScript baseline.
- ``minilm_versions`` (``python -m bench.minilm_versions``): minilm's versions (torch, ONNX
  Runtime INT8 and FP32) called directly, side by side at batch 1, 8 and 32.
- ``report``: one run's table and ``--json`` document.
- ``compare``: several runs: their tables and level-by-level comparisons.
- ``protocol_table``: ``--compare-protocols``: every protocol on the same servers, and the floor.
- ``chaos`` (``python -m bench.chaos``): the chaos soak: load through two facades and three
  workers while faults strike; ``chaos_load`` its requests and their outcomes, ``chaos_faults``
  the faults.

What the tests use as well lives in ``harness`` (the bench imports it, the tests never import
``bench``): the run's vhost and Redis keys (``harness.services``), child processes
(``harness.process``), the TCP proxy between the processes and the broker (``harness.proxy``),
the models the bench builds (``harness.built``) and the chaos faults' kinds (``harness.faults``).
"""
