import pytest
import torch

from optimizations.base import parse_stack
from optimizations.dp import wrap_data_parallel
from tests.optimizations.helpers import cpu_env, cuda_env


def test_needs_two_gpus():
    (dp,) = parse_stack("dp")
    for env in (cpu_env(), cuda_env(gpus=1)):
        ok, reason = dp.applicable(env)
        assert not ok and "at least 2 CUDA GPUs" in reason
    assert dp.applicable(cuda_env(gpus=2))[0]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="DataParallel needs at least 2 CUDA GPUs")
def test_splits_the_batch_over_gpus():
    model = torch.nn.Linear(4, 2).cuda()
    dp = wrap_data_parallel(model, 0)
    assert isinstance(dp, torch.nn.DataParallel) and len(dp.device_ids) == torch.cuda.device_count()
    assert dp(torch.randn(8, 4, device="cuda")).shape == (8, 2)
