"""gaze-nas: hardware-aware neural architecture search for gaze estimation."""

__version__ = "0.1.0"
