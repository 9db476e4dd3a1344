"""sciatic: sciatic nerve segmentation in proton-density MR of the upper leg."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sciatic")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
