"""The stage process: build the session once, run one pass (timing, a profiler, the pictures or the
sanity check), write its payload; or measure one auto sweep (workers=auto, batch=auto).

Started by the parent (study.runner.ladder) as `python -m study.stage --stage S.json --pass P --out R.json`,
through torchrun for DDP stages; a sweep as `python -m study.stage --sweep NAME --job J.json --out R.json`
(study.core.sweeps). A fresh process per pass keeps global state (cudnn flags, threads,
compile caches) from leaking between stages and isolates crashes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

from study.core.config import ConfigError, PROFILE_PASSES
from study.core.faults import describe_exception, rank_error_path
from study.pictures import PASS_NAME as PICTURES_PASS
from study.core.records import write_atomic
from study.core.sanity import PASS_NAME as SANITY_PASS
from study.core.stage_spec import StageSpec


def run_pass(spec: StageSpec, pass_name: str, repeat: int) -> tuple[dict, int]:
    """(payload, rank) of one pass in this process."""
    if pass_name == PICTURES_PASS:  # the trained checkpoint alone: no loaders, toggles or process group
        from study.pictures.make import run

        return run(spec), 0
    if pass_name == SANITY_PASS:  # the baseline's model on one fixed batch, before the ladder
        from study.stage.sanity_pass import run as check_learns

        return check_learns(spec), 0
    from study.stage.session import build_session

    sess = build_session(spec)
    if pass_name == "timing":
        from study.stage.timing_pass import timing_pass

        return timing_pass(sess, repeat).__dict__, sess.ctx.rank
    from study.profiling.passes import PASSES

    return {"profiles": PASSES[pass_name](sess)}, sess.ctx.rank


def write_error(out: Path, payload: dict) -> None:
    """Every rank writes its own error, with when it happened: in a DDP stage the rank that failed
    first holds the cause, and torchrun stops the others before they can say anything."""
    rank = int(os.environ.get("RANK", 0))
    write_atomic(rank_error_path(out, rank), json.dumps({**payload, "rank": rank, "time": time.time()}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m study.stage", description=__doc__)
    ap.add_argument("--stage", help="the stage spec JSON (a pass)")
    ap.add_argument("--pass", dest="pass_name", default="timing", choices=("timing", PICTURES_PASS, SANITY_PASS) + PROFILE_PASSES)
    ap.add_argument("--repeat", type=int, default=0)
    ap.add_argument("--sweep", choices=("workers", "batch"), help="measure this auto sweep instead of a pass")
    ap.add_argument("--job", help="the sweep's job JSON (study.core.sweeps)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if not (args.stage or (args.sweep and args.job)):
        ap.error("give --stage S.json, or --sweep NAME --job J.json")
    out = Path(args.out)
    try:
        if args.sweep:
            from study.stage.sweeps import SWEEPS

            payload, rank = SWEEPS[args.sweep](json.loads(Path(args.job).read_text())), 0
        else:
            payload, rank = run_pass(StageSpec.load(args.stage), args.pass_name, args.repeat)
        if rank == 0:
            write_atomic(out, json.dumps(payload, default=str))
        return 0
    except ConfigError as e:
        write_error(out, {"error": str(e), "kind": "config"})
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BaseException as e:  # noqa: BLE001 — the parent records the real error and goes on
        tb = traceback.format_exc()
        write_error(out, {"error": describe_exception(e), "traceback": tb[-4000:]})
        print(tb, file=sys.stderr)
        return 1
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
