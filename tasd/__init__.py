"""tasd: TCP acceleration as a Linux service."""

__version__ = "0.1.0"
