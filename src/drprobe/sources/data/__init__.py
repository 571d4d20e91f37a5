"""Dataset loaders behind :func:`drprobe.sources.datasets.load_dataset`, one module per family.

``base`` (containers, sampling, shared helpers), ``mnist`` (IDX, Fashion-MNIST, MNIST, digits),
``cifar``, ``images`` (Pillow decoding, ``imagefolder:``), ``hf`` (``hf:``), ``arrays``
(``npz:`` and precomputed ``features:``), ``text`` (``text:``).
"""
