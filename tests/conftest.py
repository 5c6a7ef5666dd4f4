from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
COMPAT = FIXTURES / "compat"
EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.fixture
def compat_dir() -> Path:
    return COMPAT


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests run beside other work on 2 cores; oversubscribed torch threads make small nets ~100x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
