"""LongMab-PO: multi-armed-bandit-guided sampling for long-context preference optimization.

The library behind the Snakemake workflow: pure functions and small classes, no Snakemake imports.
See docs/design.md for the module map and the data contracts.
"""

__version__ = "0.1.0"
