"""Entry point of ``python -m bench``.

The import sits under the ``__main__`` guard on purpose: the load generator runs in a *spawned*
process, which re-imports this module as ``__mp_main__``; it must not pull in the CLI (nor torch).
"""

if __name__ == "__main__":
    from bench.cli import main

    raise SystemExit(main())
