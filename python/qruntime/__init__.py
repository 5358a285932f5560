"""qruntime: exact int8 inference on the CPU with native SIMD kernels, no PyTorch at run time."""
from . import ops
from ._core import get_num_threads
from .dispatch import available_isas, cpu_info, isa, set_num_threads

__version__ = "0.1.0"

__all__ = [
    "ops",
    "cpu_info",
    "isa",
    "available_isas",
    "set_num_threads",
    "get_num_threads",
    "__version__",
]
