"""Image subtraction: Alard–Lupton PSF matching with noise decorrelation, and ZOGY.

:func:`subtract` takes a calibrated science exposure and a template already on its pixel grid
and returns a :class:`Subtraction`: the difference exposure (``science - template`` in science
counts, with its variance, mask and :class:`DifferencePsf`), the fitted
:class:`KernelSolution` and :class:`SubtractionQuality` figures. See ``docs/subtraction.md``.
"""

from .basis import KernelBasis, alard_lupton_basis
from .config import KernelConfig, StampConfig, SubtractConfig
from .decorrelate import decorrelation_kernel
from .masking import noise_ratio
from .psf import DifferencePsf
from .solution import KernelSolution
from .subtract import Subtraction, SubtractionQuality, subtract
from .zogy import zogy_kernels

__all__ = [
    "DifferencePsf",
    "KernelBasis",
    "KernelConfig",
    "KernelSolution",
    "StampConfig",
    "SubtractConfig",
    "Subtraction",
    "SubtractionQuality",
    "alard_lupton_basis",
    "decorrelation_kernel",
    "noise_ratio",
    "subtract",
    "zogy_kernels",
]
