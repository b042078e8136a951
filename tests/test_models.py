"""The real architectures build, load local weights, freeze, and run a real training step."""
import pytest
import torch

from study.core.config import ConfigError, RunConfig
from study.models.builtins import build_model, count_parameters
from study.train.tasks import build_task


def _one_step(model, task, x, y):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    model.train()
    loss = task.loss(model(x), y)
    loss.backward()
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    opt.step()
    after = [p.detach() for p in model.parameters() if p.requires_grad]
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


@pytest.mark.slow
def test_resnet50_real_training_step():
    model = build_model(RunConfig(model="resnet50"), num_classes=10)
    assert model.fc.out_features == 10
    assert count_parameters(model)[0] > 23_000_000
    _one_step(model, build_task("classify", 10), torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))


@pytest.mark.slow
def test_deeplabv3_resnet101_real_training_step():
    model = build_model(RunConfig(task="segment"), num_classes=2)
    assert model.classifier[-1].out_channels == 2
    x = torch.randn(2, 3, 64, 64)
    y = torch.randint(0, 2, (2, 64, 64))
    out = model(x)
    assert out["out"].shape == (2, 2, 64, 64)
    _one_step(model, build_task("segment", 2), x, y)


def test_local_weights_load_and_head_is_replaced(tmp_path):
    import torchvision

    src = torchvision.models.resnet18(weights=None)  # stands in for an ImageNet checkpoint (1000 classes)
    torch.nn.init.constant_(src.conv1.weight, 0.125)
    torch.save(src.state_dict(), tmp_path / "w.pt")
    model = build_model(RunConfig(model="resnet18", weights=str(tmp_path / "w.pt"), freeze_backbone=True), 10)
    assert torch.all(model.conv1.weight == 0.125)
    assert model.fc.out_features == 10
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["fc.weight", "fc.bias"]
    loaded, total = model.loaded_weights
    # loaded into the ImageNet-shaped model before its head is replaced: every tensor matches
    assert loaded == total


def test_bad_weights_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        build_model(RunConfig(model="tiny", weights=str(tmp_path / "none.pt")), 10)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot load weights"):
        build_model(RunConfig(model="tiny", weights=str(tmp_path / "junk.pt")), 10)
