"""dcanas: Device Constraints-Aware NAS as a one-command edge deployment pipeline."""

__version__ = "0.1.0"
