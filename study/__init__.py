"""study: which training optimizations pay off for this model, data and machine, and why."""
__version__ = "0.1.0"
