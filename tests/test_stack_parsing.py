"""--stack parsing: bad stacks fail before any data is touched, with one line and exit code 2."""
import pytest

from optimizations.base import REGISTRY, canonical, load_all, parse_stack
from study.core.config import ConfigError


@pytest.mark.parametrize("stack, says", [
    ("nosuchtoggle", "unknown toggle 'nosuchtoggle'"),
    ("dp,ddp", "conflict"),
    ("script,compile", "conflict"),
    ("workers=-3", "must be at least 1"),
])
def test_bad_stack_exits_2_with_one_line(tmp_path, synthetic_root, stack, says, capsys, monkeypatch):
    from study.cli import main  # in this process: a real process refusing is test_bad_input's

    monkeypatch.chdir(tmp_path)
    code = main(["--stack", stack, "--data-root", str(synthetic_root), "--model", "tiny", "--dry-run", "--profile", ""])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert says in lines[0] and "Traceback" not in err
    assert not list(tmp_path.rglob("*.json*"))  # nothing ran, nothing was written


def test_order_is_canonical_whatever_the_typed_order():
    toggles = parse_stack("ddp,amp,channels_last")
    assert [t.name for t in toggles] == ["ddp", "amp", "channels_last"]  # the ladder keeps the typed order
    assert [t.name for t in canonical(toggles)] == ["channels_last", "amp", "ddp"]
    assert [t.name for t in canonical(parse_stack("compile,fused_optim,channels_last,amp"))] == [
        "channels_last", "amp", "compile", "fused_optim"]


def test_values_are_parsed_and_kept_in_the_spec():
    workers, amp, compile_, ddp = parse_stack("workers=4,amp=bf16,compile=max-autotune,ddp=2")
    assert (workers.value, amp.value, compile_.value, ddp.value) == (4, "bf16", "max-autotune", 2)
    assert [t.spec for t in (workers, amp, compile_, ddp)] == ["workers=4", "amp=bf16", "compile=max-autotune", "ddp=2"]
    assert parse_stack("workers")[0].value == "auto"
    assert parse_stack(["workers=auto", " pin "])[1].name == "pin"


@pytest.mark.parametrize("stack, says", [
    ("workers,workers=2", "appears twice"),
    ("pin,,amp", "empty toggle"),
    ("pin=3", "takes no value"),
    ("amp=fp8", "bad value for amp"),
    ("compile=fastest", "bad value for compile"),
    ("workers=many", "bad value for workers"),
    ("workers=0", "must be at least 1"),
    ("hogwild=1", "must be at least 2"),
    ("ddp=0", "must be at least 1"),
    ("compile,script", "conflict"),  # declared on one side only: the reverse is caught too
    ("hogwild,ddp", "conflict"),
    ("dp,hogwild", "conflict"),
])
def test_bad_stacks_raise_config_error(stack, says):
    with pytest.raises(ConfigError, match=says):
        parse_stack(stack)


def test_every_toggle_describes_itself():
    load_all()
    assert {"workers", "pin", "script", "compile", "dp", "ddp", "amp", "channels_last", "cudnn",
            "fused_optim", "hogwild"} <= set(REGISTRY)
    for name, cls in REGISTRY.items():
        assert cls.name == name and cls.description, name
        cls(None)  # every toggle has a default value
