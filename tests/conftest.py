import os

import pytest
import torch

# The Triton kernel's logic is tested on CPU through Triton's interpreter; it must be switched
# on before triton is first imported (adamtune imports it lazily, so here is early enough).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty directory, so sqlite:///adamtune.db and friends land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def storage(tmp_path):
    return f"sqlite:///{tmp_path / 'studies.db'}"
