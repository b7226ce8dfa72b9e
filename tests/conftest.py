"""Shared pytest fixtures. Real-data tests use ``shared_data``: skipped with a reason on a
fresh clone without ../shared/data, but a failure under CI=true, so CI always runs them."""
import os

import pytest
import torch

import medseg_core  # noqa: F401  (compat shim before detectron2)
from medseg_core.projects import load_projects
from medseg_core.testing import shared_data_or_skip

torch.set_num_threads(int(os.environ.get("MEDSEG_TEST_THREADS", "2")))
load_projects()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")


@pytest.fixture(scope="session")
def shared_data():
    return shared_data_or_skip(pytest)


@pytest.fixture(scope="session")
def repo_root():
    return REPO


@pytest.fixture
def one_thread():
    """Run a test on one torch thread (small 3D convolutions gain nothing from a second one, and
    on a busy 2-core machine OpenMP spinning makes them up to 10x slower); restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def keep_torch_threads():
    """Give the next tests their torch thread count back after a tool set its own."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
