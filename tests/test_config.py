import pytest

from study.core.config import ConfigError, RunConfig
from study.core.config_files import field_docs, load_config_file


def test_defaults_follow_task():
    assert RunConfig().model == "resnet50" and RunConfig().dataset == "cifar10"
    seg = RunConfig(task="segment")
    assert seg.model == "deeplabv3_resnet101" and seg.dataset == "oxford-pets"


@pytest.mark.parametrize("kwargs, words", [
    (dict(model="vgg"), "unknown model"),
    (dict(task="segment", dataset="cifar10"), "no labels"),
    (dict(model="resnet50", task="segment"), "does not do task"),
    (dict(batch_size=0), "--batch-size"),
    (dict(lr=-1.0), "--lr"),
    (dict(profile=("perf",)), "profiling pass"),
    (dict(run_name="../x"), "plain name"),
])
def test_bad_values_are_config_errors(kwargs, words):
    with pytest.raises(ConfigError, match=words):
        RunConfig(**kwargs)


def test_round_trip_and_hash_ignores_output_paths():
    cfg = RunConfig(model="tiny", stack=("workers=2", "amp"), repeats=3)
    again = RunConfig.from_dict(cfg.to_dict())
    assert again == cfg
    assert cfg.hash() == cfg.replace(run_name="other", reports_root="/x").hash()
    assert cfg.hash() != cfg.replace(batch_size=64).hash()


def test_dry_run_is_tiny():
    cfg = RunConfig(dry_run=True, steps=500, epochs=9)
    assert cfg.epochs == 1 and cfg.steps == 7 and cfg.subset <= 512 and cfg.checkpoint_every > 0
    assert cfg.steps - cfg.warmup >= 5  # enough measured steps for the table not to flag the stage
    assert cfg.image_size == 0  # CIFAR keeps its native 32 px


def test_dry_run_is_tiny_for_segmentation_and_large_images():
    seg = RunConfig(task="segment", dry_run=True)  # DeepLabV3-ResNet101 on Pets: 256 px, batch 32 otherwise
    assert seg.image_size == 64 and seg.batch_size == 4
    big = RunConfig(dataset="imagefolder", dry_run=True, image_size=224)
    assert big.image_size == 64 and big.batch_size == 32
    assert RunConfig(task="segment", image_size=256).image_size == 256  # only dry runs shrink


@pytest.mark.parametrize("changes", [dict(steps=3, warmup=3), dict(steps=2, warmup=5, epochs=2),
                                     dict(dry_run=True, steps=2)])
def test_no_measured_step_is_refused(changes):
    with pytest.raises(ConfigError, match="leaves no measured step"):
        RunConfig(**changes)


def test_every_field_is_documented():
    docs = field_docs()
    missing = [f for f in RunConfig.__dataclass_fields__ if f not in docs]
    assert not missing


def test_config_files(tmp_path):
    y = tmp_path / "a.yaml"
    y.write_text("batch-size: 8\nstack: [workers, amp]\n")
    assert load_config_file(str(y)) == {"batch_size": 8, "stack": ["workers", "amp"]}
    t = tmp_path / "a.toml"
    t.write_text('model = "tiny"\nsteps = 3\n')
    assert load_config_file(str(t)) == {"model": "tiny", "steps": 3}
    bad = tmp_path / "b.yaml"
    bad.write_text("batch-size: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config_file(str(bad))
    with pytest.raises(ConfigError, match="not found"):
        load_config_file(str(tmp_path / "none.yaml"))


def test_sections_own_every_option_once_and_a_config_file_may_use_them(tmp_path):
    from dataclasses import fields

    from study.cli import build_config, run_parser
    from study.core.config import SECTIONS

    owned = [f.name for cls in SECTIONS.values() for f in fields(cls)]
    assert sorted(owned) == sorted(f.name for f in fields(RunConfig)) and len(owned) == len(set(owned))
    nested, flat = tmp_path / "nested.yaml", tmp_path / "flat.yaml"
    nested.write_text("model:\n  model: tiny\ntraining:\n  batch-size: 8\n  lr: 0.05\nmeasuring:\n  repeats: 2\n")
    flat.write_text("model: tiny\nbatch_size: 8\nlr: 0.05\nrepeats: 2\n")
    a = build_config(run_parser().parse_args(["--config", str(nested)]))
    b = build_config(run_parser().parse_args(["--config", str(flat)]))
    assert a == b and (a.model, a.batch_size, a.lr, a.repeats) == ("tiny", 8, 0.05, 2)


def test_the_hash_follows_what_is_measured():
    cfg = RunConfig(model="tiny")
    for unmeasured in (dict(budget_minutes=3.0), dict(sanity=True), dict(keep_checkpoints=True),
                       dict(profile=("torch",)), dict(no_pictures=True), dict(resume=True)):
        assert cfg.replace(**unmeasured).hash() == cfg.hash(), unmeasured
    for measured in (dict(warmup=3), dict(lr=0.02), dict(stack=("amp",)), dict(nnodes=2, rdzv_endpoint="node0:29500"), dict(image_size=48)):
        assert cfg.replace(**measured).hash() != cfg.hash(), measured


@pytest.mark.parametrize("text, key, toggle", [
    ("num_workers: 4\n", "num_workers", "workers"),
    ("pin_memory: true\n", "pin_memory", "pin"),
    ("measuring:\n  repeats: 2\nlaunch:\n  world_size: 2\n", "world_size", "ddp"),  # inside a section too
    ("stage_batch_size: 64\n", "stage_batch_size", "batch"),
], ids=["workers", "pin", "nested", "batch"])
def test_a_config_file_naming_what_a_toggle_decides_is_refused(tmp_path, capsys, text, key, toggle):
    """What a toggle decides would silently change the baseline if a config file could set it: the
    study exits 2 before doing anything, with one line naming the key and the toggle that sets it."""
    from study.cli import main

    path = tmp_path / "c.yaml"
    path.write_text("model: tiny\n" + text)
    assert main(["--config", str(path), "--dry-run", "--data-root", str(tmp_path / "none")]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and key in lines[0] and f"--stack {toggle}" in lines[0], lines
    assert not (tmp_path / "reports").exists()
    with pytest.raises(ConfigError, match=key):  # the same refusal through the API
        RunConfig.from_dict({key: 1})


@pytest.mark.xfail(strict=True, reason="--threads is an option, but refuse_plan_fields (study/cli.py) refuses a config "
                                       "file's threads because the stage plan has a field of that name, and blames ddp")
def test_a_config_file_may_set_an_option_a_plan_field_shares_the_name_of(tmp_path):
    from study.cli import build_config, run_parser

    path = tmp_path / "c.yaml"
    path.write_text("model: tiny\nthreads: 2\n")
    assert build_config(run_parser().parse_args(["--config", str(path)])).threads == 2


def test_numbers_in_exponent_form_are_numbers_in_a_yaml_file(tmp_path):
    """PyYAML reads YAML 1.1, where 1e-3 is a string; a config file means the number. Quoted stays text."""
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\ntraining:\n  weight_decay: 5E-4\nsteps: 1e1\nbudget_minutes: 2.5e+1\n")
    cfg = RunConfig.from_dict(load_config_file(str(path)))
    assert (cfg.lr, cfg.weight_decay, cfg.steps, cfg.budget_minutes) == (0.001, 0.0005, 10, 25.0)
    assert isinstance(cfg.steps, int)
    path.write_text('lr: "1e-3"\n')
    with pytest.raises(ConfigError, match="lr must be a number"):
        RunConfig.from_dict(load_config_file(str(path)))
    path.write_text("steps: 1.5\n")
    with pytest.raises(ConfigError, match="steps must be a whole number"):
        RunConfig.from_dict(load_config_file(str(path)))
