"""Model builders that are wrong in each way the bad-input catalogue refuses (tests/test_bad_input.py)."""
from torch import nn

NOT_A_FUNCTION = 3


def raises(num_classes):
    raise ValueError(f"no layout for {num_classes} classes\nwidth must be a multiple of 8")


def returns_a_number(num_classes):
    return 42


def too_many_outputs(num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes + 3))


def a_map_for_classify(num_classes):
    return nn.Conv2d(3, num_classes, 1)
