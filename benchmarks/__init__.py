"""The benchmarks: one module per side (`ceiling`, `job`, `telegraf`), what they share (`measure`), the table
and plot (`report`); run `python -m benchmarks.side_by_side` from the repository (docs/benchmarks.md).
"""
