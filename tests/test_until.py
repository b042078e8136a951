"""--until METRIC=VALUE: each stage trains until its validation metric reaches the target, and the
ladder and the verdict go by the time it took."""
from __future__ import annotations

import json

import pytest

from study.core.config import ConfigError
from study.core.target import Target, parse_target
from study.train.fit import StopPolicy, fit


def test_a_target_is_metric_equals_value_and_a_loss_is_reached_from_above():
    assert parse_target("top1=0.5") == Target("top1", 0.5) and parse_target("") is None
    for bad in ("top1", "=0.5", "top1=half", "top1=nan"):
        with pytest.raises(ConfigError, match="is not METRIC=VALUE"):
            parse_target(bad)
    assert Target("top1", 0.5).reached({"top1": 0.5}) and not Target("top1", 0.5).reached({"top1": 0.49})
    assert Target("perplexity", 30).reached({"perplexity": 29.0}) and not Target("perplexity", 30).reached({"perplexity": 31.0})
    assert not Target("miou", 0.1).reached({"top1": 0.9})  # a metric the run does not compute is never reached


def test_a_target_out_of_reach_stops_at_the_step_cap_and_says_so(synthetic_root, tmp_path):
    from tests.optimizations.helpers import make_session, tiny_config

    sess = make_session(tiny_config(synthetic_root, tmp_path, subset=128))
    stop = StopPolicy(target=Target("top1", 2.0), validate_every=3, seconds=600, steps=7, val_steps=1)
    result = fit(sess.state, sess.train_loader, sess.val_loader, stop, warmup=1)
    assert not result.reached and result.stopped == "step cap" and result.seconds_to_target == -1
    assert len(result.steps) == 7 and result.validations == 3  # after steps 3, 6 and the cap at 7
    assert sess.state.model.training  # validation between steps hands the model back in train mode


@pytest.mark.slow  # a two-stage study that trains until top-1 0.5: about 30-60 s
def test_until_records_the_time_to_target_and_the_verdict_goes_by_it(synthetic_root, tmp_path, monkeypatch, capsys):
    from study.cli import main

    monkeypatch.chdir(tmp_path)
    code = main(["--model", "tiny", "--data-root", str(synthetic_root), "--until", "top1=0.5", "--until-every", "10",
                 "--steps", "200", "--warmup", "1", "--val-steps", "4", "--stack", "channels_last", "--profile", "",
                 "--no-pictures", "--run-name", "u"])
    assert code == 0, capsys.readouterr().err
    rows = [json.loads(ln) for ln in (tmp_path / "reports" / "u" / "results.jsonl").read_text().splitlines()]
    stages = [r for r in rows if r["kind"] == "stage"]
    assert len(stages) == 2
    for r in stages:  # ten classes: chance is 0.1, and the synthetic signal takes the tiny model past 0.5
        until = r["notes"]["until"]
        assert until["reached"] and until["stopped"] == "reached", until
        assert r["time_to_target_s"] > 0 and r["steps_to_target"] % 10 == 0 and r["metric"] >= 0.5, r["metrics"]
    summary = (tmp_path / "reports" / "u" / "summary.md").read_text()
    assert "Fastest to top1=0.5:" in summary and "| to top1=0.5 |" in summary
