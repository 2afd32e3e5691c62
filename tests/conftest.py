import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA_ROOT = Path(os.environ.get("DCANAS_DATA", ROOT / "data"))

torch.set_num_threads(min(2, os.cpu_count() or 1))


NO_CUDA = "no CUDA device here (torch.cuda.is_available() is False): the gpu tests run on a GPU machine (benchmarks/gpu_check.sh)"
# The devices a test parametrized over `device` runs on: the CPU always; CUDA marked `gpu`, skipped with its reason without one.
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)])]


@pytest.fixture(params=DEVICES)
def torch_device(request) -> torch.device:
    """The device under test: every test taking it (`torch_device`) runs on the CPU and, marked ``gpu``, on CUDA."""
    return torch.device(request.param)


@pytest.fixture(scope="session")
def fashion_root() -> Path:
    """The real Fashion-MNIST fetched by `make data`; tests needing it skip visibly without it."""
    if not (DATA_ROOT / "fashion-mnist" / "train-images-idx3-ubyte.gz").is_file():
        skip_unless_ci(f"real Fashion-MNIST not found under {DATA_ROOT}/fashion-mnist: run `make data` "
                       "(needs Debian's package dataset-fashion-mnist)")
    return DATA_ROOT / "fashion-mnist"


def skip_unless_ci(reason: str) -> None:
    """Skip visibly for ``reason``; under CI (CI=true), where `make test` installs everything, fail instead, so a
    missing install step cannot pass as a skipped test."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"under CI: {reason}")
    pytest.skip(reason)


_ZYGOTE = None


def run_command(cmd: list, *, timeout: float = 300, capture_output: bool = True, text: bool = True, **kw):
    """subprocess.run for a command whose output a test reads: `python -m dcanas ...` goes through :func:`run_dcanas`."""
    import subprocess
    import sys

    if capture_output and text and [str(c) for c in cmd[:3]] == [sys.executable, "-m", "dcanas"]:
        return run_dcanas(*map(str, cmd[3:]), timeout=timeout, **kw)
    return subprocess.run(cmd, capture_output=capture_output, text=text, timeout=timeout, **kw)


# variables an interpreter or a library reads as it starts: a command whose environment changes one needs a fresh one
AT_START = ("PYTHON", "LD_", "OMP_", "MKL_", "TORCH_", "CUDA_")


def _read_at_start(env) -> bool:
    if env is None:
        return False
    changed = {k for k in set(env) | set(os.environ) if env.get(k) != os.environ.get(k)}
    return any(k.startswith(AT_START) for k in changed)


def run_dcanas(*args: str, timeout: float = 300, **kw):
    """`python -m dcanas ARGS` in a process of its own (no stdin, as in CI), forked from the tests' zygote
    (tests/zygote.py: the imports paid once); DCANAS_TEST_ZYGOTE=0, options the zygote does not take, or an environment
    that changes what an interpreter reads as it starts (AT_START) start a fresh interpreter instead."""
    import atexit
    import subprocess
    import sys

    global _ZYGOTE
    if os.environ.get("DCANAS_TEST_ZYGOTE", "1") != "0" and set(kw) <= {"env", "cwd"} and not _read_at_start(kw.get("env")):
        if _ZYGOTE is None:
            from zygote import Zygote

            _ZYGOTE = Zygote()
            atexit.register(_ZYGOTE.close)
        return _ZYGOTE.run(list(args), timeout=timeout, **kw)
    return subprocess.run([sys.executable, "-m", "dcanas", *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    """An (untrained) small DARTS network exported to ONNX and TFLite with metadata and reference pairs.
    Shared and read-only: a test that tampers with a file copies it first."""
    from dcanas.export.exporter import export_model
    from dcanas.nets.genotype import KNOWN
    from dcanas.data.datasets import get_spec
    from dcanas.train.model_io import save_model
    from dcanas.train.trainer import TrainConfig, build_model

    d = tmp_path_factory.mktemp("artifacts")
    model, meta = build_model(TrainConfig(genotype=KNOWN["DARTS_V2"], C=4, layers=3), get_spec("fashion-mnist"))
    save_model(d / "model.pt", model.eval(), meta)
    rows = export_model(d / "model.pt", ["onnx", "tflite"], d, data_root=str(d / "no-data"), n_validate=4, n_calibration=4,
                        progress=lambda m: None)
    assert all(r["passed"] for r in rows)
    return {"onnx": d / "model.onnx", "tflite": d / "model.tflite", "pt": d / "model.pt"}


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real OpenSSH sshd on 127.0.0.1 (tests/sshd.py)."""
    from sshd import SSHD, start_sshd

    if not os.path.exists(SSHD):
        skip_unless_ci("openssh-server not installed (make test installs it when run as root)")
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """LUG caches and anything else under XDG_CACHE_HOME go to a temporary folder, never the user's
    ~/.cache (subprocesses inherit it)."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


def write_fashion_tree(root: Path, fashion_root: Path, *, per_class: int, size: int, fmt: str, rgb: bool,
                       val: bool = True, offset: int = 0) -> Path:
    """An ImageFolder tree of REAL Fashion-MNIST images written as PNG or JPEG files: train/<class>/ (and
    val/<class>/ from the test split), resized from 28 px to ``size``; ``rgb`` tints each class's images
    into colour (an RGB tree), else they stay grayscale."""
    from PIL import Image

    from dcanas.data.datasets import FASHION_CLASSES, load_split

    for split, train in (("train", True), ("val", False)) if val else (("train", True),):
        data = load_split("fashion-mnist", fashion_root, train=train)
        counts = [0] * 10
        for i in range(offset, len(data)):
            c = int(data.labels[i])
            if counts[c] >= per_class:
                continue
            counts[c] += 1
            img = Image.fromarray(data.images[i, 0].numpy(), "L").resize((size, size), Image.BILINEAR)
            if rgb:
                tint = ((c * 37) % 256, (c * 91) % 256, (c * 151) % 256)
                img = Image.merge("RGB", [img.point(lambda v, t=t: v * (128 + t // 2) // 255) for t in tint])
            folder = root / split / FASHION_CLASSES[c].replace("/", "-")
            folder.mkdir(parents=True, exist_ok=True)
            img.save(folder / f"{i}.{fmt}")
            if min(counts) >= per_class:
                break
    return root
