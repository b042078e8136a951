"""What compile did is recorded: compile seconds, graph breaks and recompiles with their reasons."""
import torch

from optimizations.base import parse_stack
from optimizations.compile import CompileWatch, graph_break_reason, recompile_reason


def test_recompile_reason_keeps_function_place_and_guard():
    msg = ("Recompiling function forward in /venv/torchvision/models/resnet.py:284\n"
           "    triggered by the following guard failure(s):\n"
           "    - 0/0: GLOBAL_STATE changed: grad_mode ")
    assert recompile_reason(msg) == "forward (resnet.py:284): GLOBAL_STATE changed: grad_mode"


def test_graph_break_reason_keeps_place_and_reason():
    msg = ("Graph break in user code at /home/u/model.py:10\n"
           "Graph Break Reason: Data-dependent branching\n"
           "  Explanation: Detected data-dependent branching")
    assert graph_break_reason(msg) == "model.py:10: Data-dependent branching"


def test_watch_counts_a_graph_break_and_a_recompile():
    watch = CompileWatch()

    def f(x):
        y = x.sin()
        if y.sum() > 0:  # data-dependent: Dynamo must break the graph here
            y = y * 2
        return y.cos()

    g = torch.compile(f, backend="eager")  # Dynamo alone: breaks and guards are Dynamo's, and fast
    g(torch.randn(3))
    g(torch.randn(3))
    g(torch.randn(5))  # a new shape fails the size guard: one recompile per compiled frame
    stats = watch.stats()
    assert stats["graph_breaks"] == 1
    assert "Data-dependent branching" in stats["graph_break_reasons"][0]
    assert stats["recompiles"] >= 1
    assert "size mismatch" in stats["recompile_reasons"][0]
    assert stats["seconds"] >= 0 and stats["graphs"] >= 2


def test_the_toggle_records_what_compiling_its_own_model_did(monkeypatch):
    """The stage's notes get compile_stats from the model the toggle wrapped: the graph break planted in
    that model is counted; a toggle that wrapped no model (a stage that failed before) adds no stats
    rather than another model's. Dynamo alone (the eager backend) stands in for Inductor: the watch reads
    Dynamo's breaks and guards either way, in milliseconds."""
    from types import SimpleNamespace

    import optimizations.compile as compile_toggle

    monkeypatch.setattr(compile_toggle, "compile_model", lambda model, mode: torch.compile(model, backend="eager"))

    class Branchy(torch.nn.Module):
        def forward(self, x):
            y = x.sin()
            if y.sum() > 0:  # data-dependent: a graph break
                y = y * 2
            return y.cos()

    (toggle,) = parse_stack(["compile"])
    ctx = SimpleNamespace(notes={})
    model = toggle.wrap_model(Branchy(), ctx)
    model(torch.randn(4))
    stats = toggle.after_run(ctx)["compile_stats"]
    assert stats["graph_breaks"] == 1 and "Data-dependent branching" in stats["graph_break_reasons"][0]
    assert ctx.notes["compile"].startswith("mode=default")
    (unused,) = parse_stack(["compile"])
    assert "compile_stats" not in unused.after_run(ctx)
