"""Benchmarks shipped with the package: ``python -m phi_hig bench`` runs `phi_hig.bench.hig_step`.

Each prints its figures and writes a Markdown table (ratios measured side by side in one run); none is part of
the test suite.
"""
