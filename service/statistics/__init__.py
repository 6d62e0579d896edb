"""Statistical tests of experiments' groups, with no I/O: each test on numpy arrays
(`tests`, scipy for the statistics), `assumptions` checks, `interpretation` in words,
`analysis` (options, samples, outcome), and comparison `reports` in LaTeX, Markdown,
HTML and CSV.

Imports: `service.core`.
"""
