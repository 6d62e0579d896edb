"""Crucible UI: the web dashboard `crucible serve` serves at `/`.

A client of the public API and live channels like any other: the server side here only
answers each page's URL with one HTML shell, serves the page scripts and styles from
`static/` and the charting library from the installed bokeh package, and opens a
session from the one-time sign-in link `crucible serve` prints. No build step, no
Node.js, nothing from another origin.
"""
