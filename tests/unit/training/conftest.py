"""Fixtures of the training tests."""

from __future__ import annotations

import pytest
from tiny_run import tiny_workspace


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, request):
    """(workspace, plans) of the tiny dataset, shared by the tests of one module."""
    return tiny_workspace(tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2]) / "ws")
