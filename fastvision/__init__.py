"""fastvision: fastai-style high-level vision training on plain PyTorch."""

from ._version import __version__

__all__ = ["__version__"]
