"""Golden training numerics: one tiny trial of each model family the shipped
specs use, trained through `dynamics_core.train.run` (the sweeps' entry) on
the CPU with one thread; prints as JSON the versions it ran with and
{family: {metric: float.hex of the float64}}: every epoch metric (`key@step`)
and the final summary, wall-clock seconds left out.

`tests/test_golden_numerics.py` runs this file in a fresh interpreter whose
CPU kernels are pinned to one instruction set (`PINNED_ENV`: ATen's baseline
kernels, MKL's conditional numerical reproducibility, oneDNN capped at
SSE4.1), so that the bits do not depend on which x86 CPU runs the test, and
compares the output with `numerics.json` beside this file.
"""
from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

PINNED_ENV = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE",
              "ONEDNN_MAX_CPU_ISA": "SSE41", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

COMMON = {"optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
          "train": {"epochs": 2, "batch_size": 16, "device": "cpu"}}
MNIST1D = {"dataset": "mnist1d", "train_size": 64, "test_size": 32}
IMAGES = {"dataset": "mnist"}           # written by `write_mnist`: 12x12 images, no download
FAMILIES = {
    "mlp": {"data": MNIST1D, "model": {"name": "mlp", "width": 16, "depth": 2}},
    "cnn1d": {"data": MNIST1D, "model": {"name": "cnn1d", "width": 8, "batchnorm": True}},
    "simple_cnn": {"data": IMAGES, "model": {"name": "simple_cnn"}},
    "resnet20": {"data": IMAGES, "model": {"name": "resnet20"}},
    "allcnn": {"data": IMAGES, "model": {"name": "allcnn", "batchnorm": True}},
}
N_TRAIN, N_TEST, SIDE = 48, 16, 12


def write_mnist(root: Path) -> None:
    """A tiny MNIST in torchvision's raw format (idx files): 12x12 images whose
    pixels are integer functions of the index and the label (no RNG, so the same
    bytes everywhere), 10 classes in turn."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", N_TRAIN), ("t10k", N_TEST)):
        labels = [i % 10 for i in range(n)]
        pixels = bytes((lab * 37 + r * 11 * (lab % 3 + 1) + c * 7 * (lab % 4 + 1) + i * 3) % 256
                       for i, lab in enumerate(labels) for r in range(SIDE) for c in range(SIDE))
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, SIDE, SIDE) + pixels)
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + bytes(labels))


def numerics(cache_dir: Path, image_root: Path) -> dict:
    """What `numerics.json` records: versions, the CPU kernels used, the metrics."""
    import numpy
    import torch

    return {"torch": torch.__version__, "numpy": numpy.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "families": train_all(cache_dir, image_root)}


def train_all(cache_dir: Path, image_root: Path) -> dict[str, dict[str, str]]:
    """`cache_dir`: where MNIST-1D is (or is generated); `image_root`: where the
    tiny MNIST is written."""
    import torch

    from dynamics_core.config import TrialConfig
    from dynamics_core.sink import MemorySink
    from dynamics_core.train import RunEnv, reproducible, run

    torch.set_num_threads(1)
    write_mnist(image_root)
    out = {}
    for family, tree in FAMILIES.items():
        data = {**tree["data"], "root": str(image_root)} if tree["data"] is IMAGES else tree["data"]
        cfg = TrialConfig.model_validate({**COMMON, **tree, "data": data})
        sink = MemorySink()
        result = run(cfg, sink, RunEnv(cache_dir=str(cache_dir), checkpoint_every_epochs=0))
        assert result.status == "finished", (family, result.status)
        metrics = {f"{key}@{step}": value for step, key, value in reproducible(sink.metrics)
                   if not key.startswith("final/")}           # the summary holds those
        metrics.update(reproducible(result.summary))
        out[family] = {k: float(v).hex() for k, v in sorted(metrics.items())}
    return out


if __name__ == "__main__":
    json.dump(numerics(Path(sys.argv[1]), Path(sys.argv[2])), sys.stdout, indent=1, sort_keys=True)
