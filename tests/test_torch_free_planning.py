"""The parent plans a ladder without importing torch: torch belongs to the stage processes.

Importing torch costs the parent seconds and hundreds of MB that it then holds, idle, while every
child is timed on the same machine. So importing the CLI, loading every toggle module, parsing a
stack and planning it must leave torch out of sys.modules. The check runs in a fresh interpreter:
this test process has long imported torch through other tests.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Every registered toggle, split over three stacks because of the declared conflicts
# (script×compile, dp×ddp, hogwild×dp/ddp).
STACKS = (
    "workers=2,pin,channels_last,amp=bf16,compile,cudnn,fused_optim,ddp=2",
    "workers=2,pin,channels_last,amp=bf16,script,cudnn,fused_optim,hogwild",
    "workers=2,dp",
)

PROBE = textwrap.dedent("""
    import sys

    def torch_free(after):
        leaked = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        assert not leaked, f"{after} imported torch: {leaked[:5]}"

    import study.cli
    import study.search
    import study.stages
    from optimizations.base import Env, load_all, parse_stack
    from study.config import RunConfig
    torch_free("importing the CLI and the planner")

    registry = load_all()
    torch_free("loading every toggle module")
    stacks = sys.argv[1:]
    named = {item.split("=")[0] for stack in stacks for item in stack.split(",")}
    missing = sorted(set(registry) - named)
    assert not missing, f"toggles not covered by the probe's stacks: {missing}"
    env = Env(device_type="cpu", cuda_count=0, cpu_count=2)
    for stack in stacks:
        stages = study.stages.plan(RunConfig(model="tiny"), parse_stack(stack), env)
        assert len(stages) == len(stack.split(",")) + 1, [s.spec.name for s in stages]
        torch_free(f"planning {stack!r}")
    print("torch-free")
""")


def test_planning_every_toggle_leaves_torch_unimported():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", PROBE, *STACKS], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "torch-free" in proc.stdout, proc.stdout + proc.stderr
