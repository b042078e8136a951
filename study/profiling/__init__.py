"""Profiling passes, one module each; every pass is its own short run after the timing pass."""
