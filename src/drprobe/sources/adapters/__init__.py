"""Adapters for external model libraries: timm:, torchvision:, hf:, module: (register on import)."""
