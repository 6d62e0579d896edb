"""The `crucible` command (`main`): serve, writer, migrate, keys, replay and demo.
`log_commands` work on the log directly, with no server; `demo` runs simulated workers.

Imports: anything; nothing imports it.
"""
