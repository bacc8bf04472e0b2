"""localdicom: a folder on your laptop as a standard DICOMweb server."""

__version__ = "0.1.0"
