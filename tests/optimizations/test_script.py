import math
import warnings

import pytest
import torch
import torchvision

from optimizations.script import TracedModel, example_input, script_model
from study.core.config import RunConfig
from study.models.builtins import TinyNet
from tests.optimizations.helpers import losses_on_one_batch, make_session


def _no_jit_warnings(caught):
    return not [w for w in caught if "torch.jit" in str(w.message) or "deprecated" in str(w.message)]


def _this_torch_deprecates_jit_script() -> bool:
    """Asked of torch directly, on a throw-away module: does torch.jit.script warn that it is deprecated?"""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.jit.script(torch.nn.Linear(2, 2))
    return any("deprecated" in str(w.message) for w in caught)


def test_scriptable_model_becomes_a_script_module_sharing_parameters():
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scripted, notes = script_model(model, example_input(RunConfig()))
    assert _no_jit_warnings(caught)  # the deprecation warnings are noted, not printed
    assert isinstance(scripted, torch.jit.ScriptModule) and notes["script"] == "scripted"
    if _this_torch_deprecates_jit_script():  # torch >= 2.9: the warning is kept in the notes
        assert "deprecated" in notes["script_deprecation"]
    else:
        assert "script_deprecation" not in notes
    assert all(a is b for a, b in zip(model.parameters(), scripted.parameters()))
    model.eval(), scripted.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(model(x), scripted(x), atol=1e-5)


def test_unscriptable_model_falls_back_to_a_two_mode_trace():
    torch.manual_seed(0)
    model = TinyNet(10)  # forward returns a dict or a tensor: not scriptable
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    traced, notes = script_model(model, torch.randn(2, 3, 32, 32))
    assert isinstance(traced, TracedModel) and notes["script"].startswith("traced: RuntimeError")
    assert isinstance(traced.train_graph, torch.jit.ScriptModule)
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())  # tracing left BN stats alone
    x = torch.randn(4, 3, 32, 32)
    model.eval(), traced.eval()
    assert torch.allclose(model(x), traced(x), atol=1e-5)  # eval graph uses running statistics
    model.train(), traced.train()
    assert torch.allclose(model(x), traced(x), atol=1e-5)  # train graph uses batch statistics
    # the optimizer built on the original parameters trains the traced model
    before = traced.eval()(x).detach()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    assert not torch.allclose(before, traced(x))


class _Branchy(torch.nn.Module):
    """Not scriptable (variable arguments), and its forward branches on a tensor's value: a trace
    keeps the branch the example took."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)

    def forward(self, x, *extra):
        if x.sum() > 0:
            return self.lin(x) * 2
        return self.lin(x)


def test_a_trace_that_froze_a_branch_marks_the_stage_and_the_verdict_says_so(tmp_path):
    from study.core.recorder import Recorder
    from study.report.ladder import checks
    from study.report.reading import RunData
    from study.report.verdict import verdict
    from tests.report.test_paired import stage

    model = _Branchy()
    traced, notes = script_model(model, torch.ones(2, 4))
    assert isinstance(traced, TracedModel) and "TracerWarning" in notes["script_frozen"]
    x = -torch.ones(2, 4)  # the other branch: the trace still doubles, as the example's path did
    with torch.no_grad():
        assert torch.allclose(traced(x), 2 * model(x)) and not torch.allclose(traced(x), model(x))
    plain, plain_notes = script_model(TinyNet(10), torch.randn(2, 3, 32, 32))  # a trace that froze nothing
    assert "script_frozen" not in plain_notes
    recorder = Recorder(tmp_path)
    recorder.add(stage("00-base", 0, (), [100.0, 101.0, 99.0]))
    row = stage("01-script", 1, ("script",), [100.0, 102.0, 98.0], **notes)
    recorder.add(row)
    assert "frozen control flow" in checks(row)
    text = " ".join(str(b) for b in verdict(RunData(tmp_path)).blocks)
    assert "froze value-dependent Python" in text
    if "script_deprecation" in notes:  # this torch deprecates TorchScript: the report points at compile
        assert "deprecated" in text and "--stack compile" in text


def test_segmentation_dict_output_traces():
    model = TinyNet(2, segment=True)
    traced, notes = script_model(model, torch.randn(2, 3, 64, 64))
    out = traced.eval()(torch.randn(1, 3, 64, 64))
    assert isinstance(out, dict) and out["out"].shape == (1, 2, 64, 64)
    assert notes["script"].startswith("traced")


def test_example_input_follows_the_config():
    assert example_input(RunConfig()).shape == (2, 3, 32, 32)
    assert example_input(RunConfig(task="segment")).shape == (2, 3, 256, 256)
    assert example_input(RunConfig(image_size=64)).shape[-1] == 64
    assert example_input(RunConfig(), memory_format=torch.channels_last).is_contiguous(memory_format=torch.channels_last)


def test_session_trains_through_the_scripted_model(tiny_cfg):
    sess = make_session(tiny_cfg, "channels_last,script")
    assert isinstance(sess.state.model, TracedModel)
    assert sess.notes["script"].startswith("traced:")
    before = [p.detach().clone() for p in sess.state.base_model.parameters()]
    losses = losses_on_one_batch(sess, 6)
    assert len(losses) == 6 and all(math.isfinite(v) for v in losses)
    # the optimizer holds the original parameters: the traced graph's loss falls only if they are shared
    assert losses[-1] < 0.9 * losses[0], losses
    assert any(not torch.equal(a, b) for a, b in zip(before, sess.state.base_model.parameters()))


@pytest.mark.parametrize("task, model_name, size", [("classify", "resnet50", 32),
                                                     ("segment", "deeplabv3_resnet101", 64)])
def test_study_models_script(task, model_name, size):
    from study.models.builtins import build_model

    model = build_model(RunConfig(task=task, model=model_name), 2)
    scripted, notes = script_model(model, torch.randn(2, 3, size, size))
    assert notes["script"] == "scripted" and isinstance(scripted, torch.jit.ScriptModule)
    out = scripted.eval()(torch.randn(1, 3, size, size))
    logits = out["out"] if isinstance(out, dict) else out
    assert logits.shape[:2] == (1, 2)
