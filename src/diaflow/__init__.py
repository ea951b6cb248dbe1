"""diaflow: prompt (Level 1) processing for a time-domain imaging survey.

Each stage of the data flow is a sub-package (``sim``, ``image``, ...); see DESIGN.md.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("diaflow")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
