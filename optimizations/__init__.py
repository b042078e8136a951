"""Optimization toggles: one module each, registered by name (see base.py)."""
from optimizations.base import REGISTRY, Optimization, load_all, parse_stack, register

__all__ = ["REGISTRY", "Optimization", "load_all", "parse_stack", "register"]
