"""Plain helpers that several test files share (fixtures live in conftest.py).

Import them as ``from helpers import ...``: pytest puts this folder on ``sys.path``, as it does
for ``report_runs``.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from drprobe.cli import main

#: The job ids of :func:`tiny_config`, in the order the runner plans them.
TINY_JOBS = ["mobilenet_v2-pretrained-digits-features.14",
             "mobilenet_v2-random-digits-features.14"]


@pytest.fixture
def one_torch_thread():
    """Torch on one thread for the test (restored after): import it into a module with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(name: str, *, n_train: int = 300, n_test: int = 150, **extra: object) -> dict:
    """A fresh experiment config dict: MobileNetV2 pretrained and random at ``features.14`` on
    scikit-learn's digits at 32 px, fractions 0.1 and 0.5 (and the full layer), seeds 1 and 2.

    Two jobs (:data:`TINY_JOBS`), 2 x 2 x 3 = 12 probes. ``extra`` keys (``resources``,
    ``protocol``, ...) are added at the end, after ``seeds``.
    """
    return {
        "name": name,
        "models": [{"spec": "builtin:mobilenet_v2", "weights": ["pretrained", "random"]}],
        "layers": ["features.14"],
        "datasets": [{"name": "digits", "n_train": n_train, "n_test": n_test,
                      "image_size": 32}],
        "fractions": [0.1, 0.5],
        "seeds": [1, 2],
        **extra,
    }


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``drprobe ARGV`` in this process: (exit status, stdout, stderr)."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line(err: pytest.ExceptionInfo) -> str:
    """The message of a raised error, checked to be one non-empty line."""
    message = str(err.value)
    assert "\n" not in message and message, repr(message)
    return message


class SliceRecorder:
    """An array stand-in, shape ``data.shape``, that records the ``(start, stop)`` of every
    slice read from it (``reads``), so a test can see which batches were read and when.
    """

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape = data, data.shape
        self.reads: list[tuple[int | None, int | None]] = []

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, item: slice) -> np.ndarray:
        self.reads.append((item.start, item.stop))
        return self.data[item]

    @property
    def starts(self) -> list[int | None]:
        """The first row of every read, in read order."""
        return [start for start, _stop in self.reads]


def relu_task(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Made data for the wide-layer tests: (n, d) float32 ReLU features of a 6-dim latent (plus
    noise) and (n,) labels in 0..2 read off the latent's first three coordinates."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 6))
    y = np.argmax(latent[:, :3] + 0.7 * rng.normal(size=(n, 3)), axis=1)
    X = np.maximum(latent @ rng.normal(size=(6, d)) + rng.normal(size=(n, d)) + 0.5, 0.0)
    return X.astype(np.float32), y


CHROMIUM = shutil.which("chromium")


def chromium(tmp_path, *args: str) -> str:
    """Run headless Chromium with ``args``; return its stdout."""
    profile = tmp_path / "chromium-profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
           "--virtual-time-budget=10000", *args]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def image_check(tmp_path, page) -> dict[str, str]:
    """The attributes of the page's ``#image-check`` element after load, from --dump-dom."""
    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    tag = re.search(r'<p id="image-check"([^>]*)>([^<]*)<', dom)
    assert tag, dom[-2000:]
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', tag.group(1)))
    attrs["text"] = tag.group(2)
    return attrs
