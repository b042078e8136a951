"""A model file that does not import (a dependency the machine lacks): the bad-input catalogue's case."""
import a_model_package_nobody_installed  # noqa: F401


def build(num_classes):
    raise AssertionError("never reached")
