"""Building blocks that know nothing of the service's concerns: the refusal exceptions
(`errors`, `problem`), bounds on what a client's bytes may cost (`input_bounds`), per-key
locks, lazy imports, Prometheus metrics, rate-limit windows, thread priorities, a
blocking generator handed to the event loop (`thread_stream`), memory trimming, and the
parsers of address and s3:// setting values.

Imports: nothing of `service`. Everything else may import it.
"""
