"""hear-diffbyola: difference-aware BYOL-A audio representations."""
__version__ = "0.1.0"
