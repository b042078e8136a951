"""py-spy pass: a sampling profile of the whole stage process tree, DataLoader workers included.

py-spy samples from outside, so the stage runs plainly (`run`) under a wrapper (`wrap_command`):

    python -m study.profiling.pyspy --out-dir profiles/<run>/<stage> -- <worker command>

The wrapper runs `py-spy record --subprocesses --format speedscope` once and renders the flame graph
SVG from the same samples (py-spy writes one format per run; a second profiled run would cost a whole
stage start and give different samples). When py-spy is missing or cannot attach (ptrace needs
CAP_SYS_PTRACE in containers), the wrapper writes the reason into the pass's payload, so the study
records `pyspy_error` and goes on.

Samples cover the whole process, start-up included: py-spy has no trigger to begin at a step.
py-spy samples on-CPU stacks only (no --idle): time blocked waiting for a batch is in the torch
trace's dataloader category, not here.
"""
from __future__ import annotations

import argparse
import collections
import html
import json
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

DEFAULT_RATE = 100  # samples per second; py-spy's default
SVG_NAME = "pyspy.svg"
SPEEDSCOPE_NAME = "pyspy.speedscope.json"


def wrap_command(cmd: list[str], out_dir: str | Path, rate: int = DEFAULT_RATE,
                 nonblocking: bool = False) -> list[str]:
    """The worker command, run under py-spy by this module's wrapper. `nonblocking` samples without
    pausing the process (less overhead, occasionally torn stacks)."""
    return [sys.executable, "-m", "study.profiling.pyspy", "--out-dir", str(out_dir), "--rate", str(rate),
            *(["--nonblocking"] if nonblocking else []), "--", *cmd]


def run(sess: Any) -> dict[str, str]:
    """The stage side: train the profiled steps plainly; the wrapper outside adds the paths."""
    sess.run_steps(sess.cfg.profile_steps)
    return {}


def find_pyspy() -> str | None:
    """STUDY_PYSPY, else py-spy on PATH, else the one installed beside this interpreter."""
    env = os.environ.get("STUDY_PYSPY")
    if env:
        return env if Path(env).is_file() and os.access(env, os.X_OK) else None
    found = shutil.which("py-spy")
    if found:
        return found
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.is_file() else None


# --- speedscope → flame graph -------------------------------------------------------------------

def speedscope_stacks(doc: dict) -> collections.Counter:
    """Folded stacks (root first) → seconds, from py-spy's speedscope file; each process/thread is a
    root of its own so workers and the main process sit side by side."""
    frames = doc.get("shared", {}).get("frames", [])

    def label(i: int) -> str:
        f = frames[i]
        name = str(f.get("name", "?")).splitlines()[0][:200]
        where = Path(str(f.get("file") or "")).name
        return f"{name} ({where}:{f.get('line')})" if where else name

    stacks: collections.Counter = collections.Counter()
    for prof in doc.get("profiles", []):
        thread = str(prof.get("name", "thread"))
        samples = prof.get("samples", [])
        weights = prof.get("weights") or [1.0] * len(samples)
        for stack, w in zip(samples, weights):
            # py-spy puts a "process PID:cmdline" frame at the root with --subprocesses; the thread
            # name already says which process it is.
            key = tuple(label(i) for i in stack if not str(frames[i].get("name", "")).startswith("process "))
            stacks[(thread,) + key] += float(w)
    return stacks


def flamegraph_svg(stacks: dict[tuple[str, ...], float], title: str, width: int = 1200) -> str:
    """A static flame graph (root at the bottom, width ∝ samples), hover titles on every frame."""
    tree: dict = {"": [0.0, {}]}
    for stack, w in stacks.items():
        node = tree[""]
        node[0] += w
        for name in stack:
            node = node[1].setdefault(name, [0.0, {}])
            node[0] += w
    total = tree[""][0] or 1.0

    def depth(n: list) -> int:
        return 1 + max((depth(c) for c in n[1].values()), default=0)

    row, pad_top = 17, 40
    levels = depth(tree[""])
    height = pad_top + levels * row + 10
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="monospace" font-size="11">',
           '<rect width="100%" height="100%" fill="#fdfdf6"/>',
           f'<text x="10" y="20" font-size="15">{html.escape(title)}</text>',
           f'<text x="10" y="34" fill="#555">{total:.2f} s of samples; hover a frame for its share</text>']

    def draw(name: str, node: list, x: float, level: int) -> None:
        w = node[0] / total * (width - 20)
        if w < 0.3:
            return
        y = height - 10 - (level + 1) * row
        if level >= 0:
            hue = zlib.crc32(name.encode()) % 55
            share = node[0] / total * 100
            out.append(f'<g><title>{html.escape(name)} — {node[0]:.2f} s ({share:.1f}%)</title>'
                       f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{row - 1}" '
                       f'fill="hsl({hue},85%,{55 + hue % 10}%)" rx="1"/>')
            chars = int(w / 6.6)
            if chars >= 3:
                text = name if len(name) <= chars else name[: chars - 1] + "…"
                out.append(f'<text x="{x + 2:.1f}" y="{y + row - 5}">{html.escape(text)}</text>')
            out.append("</g>")
        cx = x
        for child_name, child in sorted(node[1].items()):
            draw(child_name, child, cx, level + 1)
            cx += child[0] / total * (width - 20)

    draw("all", tree[""], 10.0, -1)
    out.append("</svg>")
    return "\n".join(out)


# --- the wrapper ------------------------------------------------------------------------------

def _payload_path(cmd: list[str]) -> Path | None:
    return Path(cmd[cmd.index("--out") + 1]) if "--out" in cmd[:-1] else None


def _update_payload(path: Path | None, profiles: dict[str, str], error: str = "") -> None:
    if path is None:
        return
    try:
        payload = json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError:
        payload = {}
    payload.setdefault("profiles", {}).update(profiles)
    if error and not payload.get("error"):
        payload["error"] = error
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, default=str))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m study.profiling.pyspy", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--rate", type=int, default=DEFAULT_RATE)
    ap.add_argument("--nonblocking", action="store_true", help="py-spy --nonblocking")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("no command to profile after --")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = _payload_path(cmd)
    speedscope = out_dir / SPEEDSCOPE_NAME
    svg = out_dir / SVG_NAME
    for old in (speedscope, svg):
        old.unlink(missing_ok=True)

    exe = find_pyspy()
    if exe is None:
        msg = "py-spy is not installed (pip install py-spy), so the stage was not sampled"
        print(f"pyspy pass: {msg}", flush=True)
        _update_payload(payload, {}, msg)
        return 0
    full = [exe, "record", "--subprocesses", "--rate", str(args.rate), "--format", "speedscope",
            "-o", str(speedscope), *(["--nonblocking"] if args.nonblocking else []), "--", *cmd]
    print("pyspy pass: " + " ".join(full[:9]) + " -- ...", flush=True)
    tail: collections.deque[str] = collections.deque(maxlen=30)
    try:
        proc = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace")
    except OSError as e:
        msg = f"cannot start py-spy ({exe}): {e}"
        print(f"pyspy pass: {msg}", flush=True)
        _update_payload(payload, {}, msg)
        return 0
    assert proc.stdout is not None
    for line in proc.stdout:  # tee: the log keeps everything, the error keeps py-spy's last words
        sys.stdout.write(line)
        tail.append(line.rstrip())
    rc = proc.wait()

    if not speedscope.exists() or speedscope.stat().st_size == 0:
        said = [ln for ln in tail if "py-spy" in ln.lower() or "error" in ln.lower() or "permission" in ln.lower()]
        hint = ""
        if any("permission" in ln.lower() or "ptrace" in ln.lower() for ln in tail):
            hint = " (py-spy needs ptrace: run as root, or give the container CAP_SYS_PTRACE)"
        msg = f"py-spy exited with code {rc} and wrote no profile{hint}: " + " | ".join(said[-4:] or list(tail)[-3:])
        print(f"pyspy pass: {msg}", flush=True)
        _update_payload(payload, {}, msg)
        return 0
    doc = json.loads(speedscope.read_text())
    stacks = speedscope_stacks(doc)
    svg.write_text(flamegraph_svg(stacks, f"py-spy: {out_dir.name} ({args.rate} Hz, "
                                          f"{len(doc.get('profiles', []))} threads/processes)"))
    _update_payload(payload, {"pyspy_svg": str(svg), "pyspy_speedscope": str(speedscope)})
    return rc


if __name__ == "__main__":
    sys.exit(main())
