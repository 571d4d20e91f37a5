"""How a job trains its heads: the ``cached`` protocol (the probe bank on cached features) or the
``faithful`` one (heads trained through the frozen backbone on augmented images)."""

from __future__ import annotations

from typing import Any

from drprobe.experiment.config import ExperimentConfig

__all__ = ["FaithfulStage", "probe_device"]


def probe_device(device: str) -> str:
    """The probe bank's device for a config ``device`` (``auto``: CUDA if present, else CPU)."""
    if device == "mps":
        return "cpu"  # the probe bank runs on CPU or CUDA
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class FaithfulStage:
    """The ``faithful`` protocol in :func:`analyze_layer`'s probe-bank slot: the families that
    analyze_layer built (on the clean cached features) get heads trained through the frozen
    backbone on augmented images of the same train split (same subsample, same validation
    split), and are tested on the clean test images."""

    def __init__(self, config: ExperimentConfig, bundle: object, layer: str, data: Any,
                 device: str, progress: bool) -> None:
        self.config, self.bundle, self.layer, self.data = config, bundle, layer, data
        self.device, self.progress = device, progress

    def _images(self, split: str, n: int | None) -> Any:
        from drprobe.sources.datasets import load_dataset, subsample

        return subsample(load_dataset(self.data.name, split, root=self.data.data_root), n, 0)

    def fit(self, X_train: Any, y_train: Any, X_val: Any, y_val: Any,
            families: list) -> FaithfulStage:
        from drprobe.probes.faithful import FaithfulBank

        train = self._images("train", self.data.n_train)
        f = self.config.faithful
        self.bank_ = FaithfulBank(
            self.bundle, families, self.layer, pooling=self.config.pooling,
            image_size=self.data.image_size, epochs=f.epochs, step_size=f.step_size,
            gamma=f.gamma, batch_size=f.batch_size, lr=f.lr, momentum=f.momentum,
            weight_decay=f.weight_decay, val_fraction=self.config.probe.val_fraction,
            device=self.device, random_state=0, progress=self.progress,
        ).fit(train.images, train.labels)
        return self

    def evaluate(self, X_test: Any, y_test: Any) -> list:
        test = self._images("test", self.data.n_test)
        return self.bank_.evaluate(test.images, test.labels)
