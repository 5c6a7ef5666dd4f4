"""evowatt: power-aware neuroevolution for PyTorch."""

from evowatt.errors import EvowattError

__version__ = "0.1.0"

__all__ = ["EvowattError", "__version__"]
