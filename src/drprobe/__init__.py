"""drprobe: measure diffused redundancy in pretrained neural representations."""

__version__ = "0.1.0"
