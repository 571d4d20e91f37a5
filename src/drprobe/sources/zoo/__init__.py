"""Paper architectures in plain PyTorch and the checkpoint formats the paper used (registers on import)."""
