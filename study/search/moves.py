"""What a round of the search may try on top of the incumbent, beyond adding one toggle: another value
of a toggle already in the stack (a swap), a rival in a kept toggle's place (hogwild=2 for ddp=2,
which conflict), and two changes at once where greedy is stuck (a pair).

A move is a string: one spec (add it, or swap it for the value of its toggle in the stack), a spec
after DROP (take it out), or specs joined by PAIR ("amp=bf16+channels_last", "-ddp=2+hogwild=2"),
applied left to right. Every stack a move makes is one the registry allows (no conflicts); the
registry decides which toggles and values exist and which conflict.

Why pairs: a pair of toggles that only pays together (bf16 only on top of hogwild, a layout only
with 16-bit kernels), and a loader and a compute toggle on a data-bound step (neither pays until
the other is in), are local optima of greedy selection: no single move gains, two do. Which pairs to
try comes from the round that got stuck: each single move's measured speed-up, multiplied as if
the two did not interact, ranks them; a pair with a move that was clearly slower on its own comes
last, and one below PAIR_FLOOR is not tried.
"""
from __future__ import annotations

import math
from typing import Iterable

import optimizations.base as registry  # as a module: a test that narrows its candidates narrows them here
from optimizations.base import parse_stack, toggle_name
from study.core.config import ConfigError

PAIR = "+"
DROP = "-"  # "-ddp=2+hogwild=2": hogwild=2 in place of ddp=2, which it conflicts with
PAIR_FLOOR = 0.80  # two moves whose measured speed-ups multiply below this are not tried together


def parts(move: str) -> list[str]:
    return move.split(PAIR) if move else []


def touched(move: str) -> set[str]:
    """The toggles a move adds, swaps or drops."""
    return {toggle_name(spec.removeprefix(DROP)) for spec in parts(move)}


def apply(stack: tuple[str, ...], move: str) -> tuple[str, ...]:
    """The stack after `move`: each spec replaces its toggle's value in the stack, or is appended; a
    spec after DROP leaves the stack (to make room for one it conflicts with)."""
    out = list(stack)
    for spec in parts(move):
        if spec.startswith(DROP):
            out = [s for s in out if s != spec[len(DROP):]]
            continue
        name = toggle_name(spec)
        at = next((i for i, s in enumerate(out) if toggle_name(s) == name), None)
        if at is None:
            out.append(spec)
        else:
            out[at] = spec
    return tuple(out)


def allowed(stack: Iterable[str]) -> bool:
    try:
        parse_stack(list(stack))
    except ConfigError:
        return False
    return True


def single_moves(env, stack: tuple[str, ...], swaps: bool) -> list[str]:
    """Toggles to add (the registry's candidates, in its order), then, with `swaps`, the other values
    of the toggles already in the stack that the registry offers here."""
    out = list(registry.candidates(env, stack))
    if swaps:
        for spec in stack:
            rest = tuple(s for s in stack if s != spec)
            out += [c for c in registry.candidates(env, rest) if toggle_name(c) == toggle_name(spec) and c != spec]
            # a toggle that conflicts with this one, in its place: greedy's first pick between two rivals
            # (ddp or hogwild, compile or script) is final otherwise
            have = {toggle_name(s) for s in stack}
            out += [DROP + spec + PAIR + c for c in registry.candidates(env, rest)
                    if toggle_name(c) not in have and c not in out]
    return out


def pair_moves(stack: tuple[str, ...], measured: dict[str, float], limit: int,
               floor: float = PAIR_FLOOR) -> list[str]:
    """Up to `limit` pairs of the moves in `measured` (move -> its speed-up in the stuck round), best
    predicted first: moves on different toggles, a stack the registry allows, their speed-ups'
    product at least `floor`."""
    singles = [m for m, r in measured.items() if math.isfinite(r)]
    scored = []
    for i, a in enumerate(singles):
        for b in singles[i + 1:]:
            if touched(a) & touched(b):
                continue
            product = measured[a] * measured[b]
            if product >= floor and allowed(apply(stack, a + PAIR + b)):
                scored.append((-product, i, a + PAIR + b))
    return [m for _, _, m in sorted(scored)[:limit]]
