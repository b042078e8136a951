import pytest
import torch

from optimizations.base import parse_stack
from optimizations.cudnn import enable_cudnn_fast_paths
from tests.optimizations.helpers import cpu_env, cuda_env


def test_cuda_only():
    (t,) = parse_stack("cudnn")
    ok, reason = t.applicable(cpu_env())
    assert not ok and "CUDA" in reason
    assert t.applicable(cuda_env())[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="cuDNN flags only matter on a CUDA device")
def test_sets_benchmark_and_tf32():
    enable_cudnn_fast_paths()
    assert torch.backends.cudnn.benchmark
    matmul = torch.backends.cuda.matmul
    assert getattr(matmul, "fp32_precision", "tf32") == "tf32" or matmul.allow_tf32
