"""Reproducible performance measurements, printed as ratios measured side by side in one run."""
