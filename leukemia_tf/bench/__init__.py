"""Benchmarks: plan the runs, measure rates and limits, report ratios."""
