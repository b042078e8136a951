"""What every profiling pass shares: where its files go and the unprofiled warm-up.

Output goes to `sess.profile_dir` (profiles/<run>/<stage>/). Under DDP every rank runs the pass;
rank 0 keeps the plain file names, other ranks add `-rank<N>` so nothing is overwritten.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any


def rank_path(sess: Any, name: str) -> Path:
    """profiles/<run>/<stage>/<name>, with `-rank<N>` before the suffix on ranks other than 0."""
    rank = sess.ctx.rank
    p = Path(name)
    if rank:
        suffixes = "".join(p.suffixes)
        p = Path(p.name[: len(p.name) - len(suffixes)] + f"-rank{rank}" + suffixes)
    sess.profile_dir.mkdir(parents=True, exist_ok=True)
    return sess.profile_dir / p


def warm_up(sess: Any) -> None:
    """Train the config's warm-up steps unprofiled, so first-call costs (lazy init, script/compile,
    allocator growth) do not swamp a profile of only a few steps."""
    if sess.warmup:
        sess.run_steps(sess.warmup)
