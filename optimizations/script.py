"""script: TorchScript the model — torch.jit.script, falling back to torch.jit.trace.

Scripting compiles the Python forward into a graph that the JIT can fuse and run without the
interpreter. Models whose forward is not scriptable (mixed return types, dynamic Python) are traced
instead with an example batch of the stage's input shape; the fallback and its reason go into the
stage's notes. TorchScript is deprecated in recent torch (torch.compile/torch.export replace it): the
deprecation warnings are kept out of the log and recorded once in the notes instead, and the report
says so beside the stage. A trace that met value-dependent Python (TracerWarning) froze one path of
it: the stage's notes, its check column and the verdict say so, since it may time another computation.

A trace freezes Python-level branches, including BatchNorm/Dropout's train-vs-eval switch, so the
fallback traces the model twice (train mode and eval mode) and dispatches on `.training`. Both graphs
share the original parameters, so the optimizer built before wrapping still updates them.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optimizations.base import ORDER_GRAPH, Cost, Optimization, TrainContext, register
from study.core.config import RunConfig
from study.core.faults import first_line
from study.core.catalog import DEFAULT_SIZE

TORCH_DIR = Path(torch.__file__).resolve().parent


def example_input(cfg: RunConfig, device: Any = "cpu", memory_format: Any = None) -> torch.Tensor:
    """A batch shaped like the stage's inputs (2 samples: BatchNorm in train mode needs > 1)."""
    size = cfg.image_size or DEFAULT_SIZE.get(cfg.dataset, 224)
    x = torch.randn(2, 3, size, size, device=device)
    return x.contiguous(memory_format=memory_format) if memory_format is not None else x


class TracedModel(nn.Module):
    """Two traces of one model, train mode and eval mode, sharing its parameters."""
    def __init__(self, train_graph: torch.jit.ScriptModule, eval_graph: torch.jit.ScriptModule) -> None:
        super().__init__()
        self.train_graph = train_graph
        self.eval_graph = eval_graph

    def forward(self, x: torch.Tensor) -> Any:  # type: ignore[override]
        return (self.train_graph if self.training else self.eval_graph)(x)


def _first_line(e: BaseException) -> str:
    return first_line(f"{type(e).__name__}: {first_line(str(e))}")  # TorchScript's messages open with a blank line


def trace_model(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """A TracedModel of `model`, traced in both modes without changing it: BatchNorm statistics
    touched by the example forward passes are restored afterwards."""

    was_training = model.training
    saved = {k: v.detach().clone() for k, v in model.named_buffers()}
    try:
        # strict=False: segmentation models return a dict ({"out": ...}).
        train_graph = torch.jit.trace(model.train(), example, strict=False, check_trace=False)
        eval_graph = torch.jit.trace(model.eval(), example, strict=False, check_trace=False)
    finally:
        with torch.no_grad():
            for k, v in model.named_buffers():
                v.copy_(saved[k])
        model.train(was_training)
    traced = TracedModel(train_graph, eval_graph)
    traced.train(was_training)
    return traced


def script_model(model: nn.Module, example: torch.Tensor | None = None) -> tuple[nn.Module, dict[str, str]]:
    """torch.jit.script(model), else a two-mode trace with `example`. Returns (model, notes)."""
    notes: dict[str, str] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            wrapped: nn.Module = torch.jit.script(model)
            notes["script"] = "scripted"
        except Exception as e:  # noqa: BLE001 — any scripting failure means "try tracing"
            if example is None:
                raise
            reason = _first_line(e)
            try:
                wrapped = trace_model(model, example)
            except Exception as te:  # noqa: BLE001
                raise RuntimeError(f"torch.jit.script failed ({reason}) and so did torch.jit.trace "
                                   f"({_first_line(te)})") from te
            notes["script"] = f"traced: {reason}"
    deprecated = sorted({str(w.message) for w in caught if "deprecated" in str(w.message)})
    if deprecated:
        notes["script_deprecation"] = deprecated[0][:200]
    # A TracerWarning means the trace met Python that depends on a tensor's value (a branch, a loop, a
    # conversion) and froze the path this example took: the stage may then time another computation.
    # torch's own checks warn too (BatchNorm's batch-size check in train mode): only the model's code counts.
    frozen = sorted({first_line(str(w.message)) for w in caught if issubclass(w.category, torch.jit.TracerWarning)
                     and not Path(w.filename).resolve().is_relative_to(TORCH_DIR)})
    if frozen and notes["script"].startswith("traced"):
        notes["script_frozen"] = f"{len(frozen)} TracerWarning(s), e.g. {frozen[0][:160]}"
    return wrapped, notes


@register
class Script(Optimization):
    name = "script"
    description = "TorchScript: torch.jit.script, falling back to torch.jit.trace (deprecated in torch ≥ 2.9)"
    conflicts = ("compile",)
    order = ORDER_GRAPH
    prior = 100
    cost = Cost(warm_s=5.0)  # tracing or scripting at start-up
    addresses = {"host-bound": "TorchScript runs the model without one Python call per layer"}

    def caveat(self, env: Any) -> str:
        return "TorchScript is deprecated in torch 2.9 and later; compile is its successor"

    def wrap_model(self, model: Any, ctx: TrainContext) -> Any:
        # The stage's own inputs when the session has them: a plug-in's shape and dtype (token ids) are
        # not the image batch the config implies.
        example = ctx.example() if ctx.example is not None else example_input(ctx.cfg, ctx.device, ctx.memory_format)
        wrapped, notes = script_model(model, example)
        ctx.notes.update(notes)
        return wrapped
