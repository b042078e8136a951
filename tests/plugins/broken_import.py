"""A dataset file that does not import (a dependency the machine lacks): the bad-input catalogue's case."""
import a_package_nobody_installed  # noqa: F401


def data():
    return [], []
