"""Crucible telemetry service.

The packages, from the bottom up; each may import only those above it in this list
(tests/test_layout.py checks it, type-only imports included):

- `core`: building blocks that know nothing of the service's concerns
- `settings` (a module): what the service is told, from flags and the environment
- `log`: the event log (embedded or Kafka), the source of truth
- `warehouse`: log → ClickHouse (the writer), and the client that reads it
- `resources`: experiments, runs, models and keys folded from the resources log
- `ingest`, `artifacts`, `live`, `exports`, `statistics`: the domain, side by side
- `http`: what every handler shares (state, auth, parameters, bodies, answers)
- `api`, `ui`: the endpoints, and the web dashboard's pages (a client of the endpoints)
- `app` (a module): the composition root; `cli`: the `crucible` command
"""

import os

# chDB's allocator (jemalloc, read from JE_MALLOC_CONF when chDB loads, so it is set
# here, before any module imports chDB) keeps freed pages for 10 s by default; under
# full ingest that held ~150 MiB more at the peak (measured: 1,296 against 1,138 MiB).
# A value already in the environment wins.
os.environ.setdefault("JE_MALLOC_CONF", "dirty_decay_ms:1000,muzzy_decay_ms:0")
