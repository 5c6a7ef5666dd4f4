from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
COMPAT = FIXTURES / "compat"
EXAMPLES = Path(__file__).parent.parent / "examples"


@pytest.fixture
def compat_dir() -> Path:
    return COMPAT
