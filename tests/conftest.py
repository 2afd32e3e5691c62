import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("DCANAS_DATA", ROOT / "data"))

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def fashion_root() -> Path:
    """The real Fashion-MNIST fetched by `make data`; tests needing it skip visibly without it."""
    if not (DATA_ROOT / "fashion-mnist" / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real Fashion-MNIST not found under {DATA_ROOT}/fashion-mnist: run `make data` "
                    "(needs Debian's package dataset-fashion-mnist)")
    return DATA_ROOT / "fashion-mnist"
