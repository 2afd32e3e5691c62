"""Datasets in their real on-disk formats, their shapes, splits and batch transforms.

The DATASETS table is the one place a named dataset's shape (channels, side, classes) and
normalization are written; the cost CLI, the search, training and export read it.
Small datasets are held in memory as uint8 tensors and batched without per-sample Python.
A user's own ImageFolder tree (``folder:PATH``, :mod:`dcanas.data.folders`) is scanned once, its
shape and normalization measured, and its images decoded per batch by DataLoader workers.
"""
from __future__ import annotations

import codecs
import math
import gzip
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch

from ..errors import DataError, UserError
from .folders import FOLDER_PREFIX, FileImages, decoded_batches, fingerprint, folder_info, folder_split, parse_name, scan

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    in_channels: int
    size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hint: str                         # how to obtain it, for the missing-data message
    class_names: tuple[str, ...] = ()
    flip: bool = True                 # horizontal flip is a valid augmentation
    crop_padding: int = 4

    def classes(self) -> list[str]:
        return list(self.class_names) or [str(i) for i in range(self.num_classes)]


DATASETS: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec("fashion-mnist", 1, 28, 10, (0.2860,), (0.3530,),
                "run `make data` (real Fashion-MNIST from Debian's dataset-fashion-mnist) or put the 4 IDX files "
                "(train-images-idx3-ubyte[.gz], ...) in the data root", FASHION_CLASSES, flip=False, crop_padding=2),
    DatasetSpec("mnist", 1, 28, 10, (0.1307,), (0.3081,),
                "put the 4 MNIST IDX files (train-images-idx3-ubyte[.gz], ...) in the data root", flip=False, crop_padding=2),
    DatasetSpec("cifar10", 3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                "put the extracted cifar-10-batches-py/ folder (from cifar-10-python.tar.gz) in the data root", CIFAR10_CLASSES),
    DatasetSpec("cifar100", 3, 32, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                "put the extracted cifar-100-python/ folder in the data root"),
    DatasetSpec("imagenet16-120", 3, 16, 120, (0.4811, 0.4575, 0.4078), (0.2472, 0.2406, 0.2453),
                "put the ImageNet16 pickles (train_data_batch_1..10, val_data) in the data root", crop_padding=2),
    DatasetSpec("tinyimagenet", 3, 64, 200, (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821),
                "put an ImageFolder tree with train/ and val/ class folders in the data root", crop_padding=8),
    DatasetSpec("imagenet", 3, 224, 1000, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
                "put an ImageFolder tree with train/ and val/ class folders in the data root"),
)}


def get_spec(name: str) -> DatasetSpec:
    if name.startswith(FOLDER_PREFIX):
        return _folder_spec(name)
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}, or folder:PATH (an ImageFolder tree)")
    return DATASETS[name]


def _folder_spec(name: str) -> DatasetSpec:
    """The spec of a ``folder:`` dataset from what ``data.folders`` measured on its tree."""
    f = folder_info(name)
    return DatasetSpec(name, f.channels, f.size, len(f.classes), f.mean, f.std,
                       f"an ImageFolder tree at {f.root} (train/<class>/, val/<class>/ or --val-split)", f.classes,
                       flip=True, crop_padding=max(1, math.ceil(f.size / 8)))


def short_name(name: str) -> str:
    """A dataset's name fit for a folder name (a folder: dataset by its tree's own name)."""
    if name.startswith(FOLDER_PREFIX):
        return parse_name(name).root.name or "folder"
    return name


def dataset_identity(name: str) -> str | dict[str, Any]:
    """What a stage's result depends on in a dataset: a named dataset by its name (its files are fixed releases), a
    ``folder:`` tree also by what it holds (``data.folders.fingerprint``: classes, files, sizes, times)."""
    return {"name": name, **fingerprint(name)} if name.startswith(FOLDER_PREFIX) else name


@dataclass
class ArrayData:
    """Images as uint8 N x C x H x W (a tensor, or files decoded on demand: ``data.folders.FileImages``)
    and int64 labels."""

    images: Any
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor | slice) -> "ArrayData":
        return ArrayData(self.images[index], self.labels[index])

    def take(self, index: torch.Tensor | slice) -> torch.Tensor:
        """The uint8 pixels of the images at ``index`` (decoded now for files)."""
        images = self.images[index]
        return images if isinstance(images, torch.Tensor) else images.decode()


# ---- readers of the real formats ---------------------------------------------------

def _open_maybe_gz(root: Path, stem: str) -> bytes:
    for cand in (root / stem, root / f"{stem}.gz", root / "raw" / stem, root / "raw" / f"{stem}.gz"):
        if cand.is_file():
            return gzip.decompress(cand.read_bytes()) if cand.suffix == ".gz" else cand.read_bytes()
    raise FileNotFoundError(stem)


def read_idx(data: bytes) -> np.ndarray:
    """Parse an IDX file (MNIST's format): magic 0x0000 0x08 ndim, big-endian dims, uint8 payload."""
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise DataError(f"not a uint8 IDX file (magic {data[:4].hex()})")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write_idx(array: np.ndarray) -> bytes:
    """An IDX file of a uint8 array (:func:`read_idx`'s inverse)."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    return struct.pack(f">HBB{a.ndim}I", 0, 0x08, a.ndim, *a.shape) + a.tobytes()


def _idx_dirs(root: Path, name: str) -> list[Path]:
    torchvision_name = {"fashion-mnist": "FashionMNIST", "mnist": "MNIST"}[name]
    return [root, root / name, root / torchvision_name, root / torchvision_name / "raw"]


def _load_idx(root: Path, name: str, train: bool) -> ArrayData:
    prefix = "train" if train else "t10k"
    for d in _idx_dirs(root, name):
        try:
            images = read_idx(_open_maybe_gz(d, f"{prefix}-images-idx3-ubyte"))
            labels = read_idx(_open_maybe_gz(d, f"{prefix}-labels-idx1-ubyte"))
        except FileNotFoundError:
            continue
        return ArrayData(torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))
    raise FileNotFoundError(f"{prefix}-images-idx3-ubyte")


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays, lists, dicts, strings and numbers, nothing else: a dataset file can
    never run code (CIFAR and ImageNet16 ship as pickles)."""

    ALLOWED = {("_codecs", "encode"): codecs.encode, ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        ALLOWED[(_mod, "_reconstruct")] = np.ndarray.__reduce__(np.zeros(1))[0]
        ALLOWED[(_mod, "scalar")] = np.float64(0).__reduce__()[0]

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"{module}.{name}")


def read_pickle(path: Path) -> Any:
    """A dataset pickle through :class:`_ArraysOnly`; anything else in it is a one-line DataError."""
    try:
        with path.open("rb") as fh:
            return _ArraysOnly(fh, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise DataError(f"{path} holds a Python object other than arrays, lists, dicts and numbers ({exc}); refusing to "
                        f"unpickle it (it could run code): use the dataset's original files") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise DataError(f"{path} is not a readable dataset pickle ({type(exc).__name__}); use the dataset's original files") from None


def _field(entry: Any, path: Path, *keys: str) -> Any:
    for k in keys:
        for key in (k, k.encode()):
            if isinstance(entry, dict) and key in entry:
                return entry[key]
    raise DataError(f"{path}: no {' or '.join(keys)!r} entry; use the dataset's original files")


def _load_cifar(root: Path, name: str, train: bool) -> ArrayData:
    """The python-pickle CIFAR batches (cifar-10-batches-py/, cifar-100-python/)."""
    folder, files, label_key = (("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"], "labels")
                                if name == "cifar10" else ("cifar-100-python", ["train" if train else "test"], "fine_labels"))
    for d in (root, root.parent):
        if (d / folder).is_dir():
            xs, ys = [], []
            for f in files:
                path = d / folder / f
                if not path.is_file():
                    raise FileNotFoundError(f"{folder}/{f}")
                entry = read_pickle(path)
                xs.append(np.asarray(_field(entry, path, "data"), dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(_field(entry, path, label_key), dtype=np.int64))
            return ArrayData(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)))
    raise FileNotFoundError(folder)


def _load_imagenet16(root: Path, name: str, train: bool, classes: int = 120) -> ArrayData:
    files = [root / f"train_data_batch_{i}" for i in range(1, 11)] if train else [root / "val_data"]
    xs, ys = [], []
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f.name)
        entry = read_pickle(f)
        x = np.asarray(_field(entry, f, "data"), dtype=np.uint8).reshape(-1, 3, 16, 16)
        y = np.asarray(_field(entry, f, "labels"), dtype=np.int64) - 1
        keep = y < classes
        xs.append(x[keep]), ys.append(y[keep])
    return ArrayData(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)))


LOADERS = {"fashion-mnist": _load_idx, "mnist": _load_idx, "cifar10": _load_cifar, "cifar100": _load_cifar,
           "imagenet16-120": _load_imagenet16}

DEFAULT_DATA_ROOT = Path("data")


def load_split(name: str, root: str | Path | None, train: bool) -> ArrayData:
    """The train or test split of dataset ``name`` from ``root`` (default ./data)."""
    spec = get_spec(name)
    if name.startswith(FOLDER_PREFIX):
        return ArrayData(*folder_split(name, train))
    root = Path(root) if root is not None else DEFAULT_DATA_ROOT
    if name not in LOADERS:
        return _load_imagefolder(spec, root, train)
    try:
        return LOADERS[name](root, name, train)
    except FileNotFoundError as exc:
        raise DataError(f"{name}: {exc} not found under {root}; {spec.hint}") from None


def _load_imagefolder(spec: DatasetSpec, root: Path, train: bool) -> ArrayData:
    """ImageFolder trees (TinyImageNet, ImageNet): the files listed by the one ImageFolder reader (``data/folders.py``)
    and decoded per batch (shorter side resized, centre crop) at the dataset's size and channels."""
    if not (root / ("train" if train else "val")).is_dir():
        raise DataError(f"{spec.name}: {root / ('train' if train else 'val')} not found; {spec.hint}")
    s = scan(root, None)
    items = s.train if train else s.val
    return ArrayData(FileImages(np.array([str(f) for f, _ in items], dtype=object), spec.in_channels, spec.size),
                     torch.tensor([c for _, c in items], dtype=torch.int64))


def holdout(train: ArrayData, fraction: float, seed: int) -> tuple[ArrayData, ArrayData]:
    """(training, validation): ``fraction`` of the images, drawn with ``seed``, held out for model selection."""
    n_val = int(len(train) * fraction)
    if n_val == 0:
        return train, train.subset(slice(0, 0))
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return train.subset(perm[n_val:]), train.subset(perm[:n_val])


def search_split(train: ArrayData, subset: Optional[int], seed: int) -> tuple[ArrayData, ArrayData]:
    """DARTS' split of the training set into search-train and search-val halves (``subset`` caps the total)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(train), generator=g)
    if subset:
        perm = perm[:subset]
    half = len(perm) // 2
    return train.subset(perm[:half]), train.subset(perm[half:])


# ---- batches -----------------------------------------------------------------------

def normalize(images: torch.Tensor, spec: DatasetSpec) -> torch.Tensor:
    """uint8 N x C x H x W -> normalized float."""
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    return (images.float().div_(255.0) - mean) / std


def augment(x: torch.Tensor, spec: DatasetSpec, g: torch.Generator, cutout: int = 0) -> torch.Tensor:
    """Random crop with zero padding, horizontal flip (where valid) and cutout, on a normalized batch."""
    n, _, h, w = x.shape
    p = spec.crop_padding
    if p:
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        dx = torch.randint(0, 2 * p + 1, (n,), generator=g)
        dy = torch.randint(0, 2 * p + 1, (n,), generator=g)
        rows = (dy.view(n, 1) + torch.arange(h).view(1, h))  # n x h
        cols = (dx.view(n, 1) + torch.arange(w).view(1, w))  # n x w
        x = padded[torch.arange(n).view(n, 1, 1), :, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)
    if spec.flip:
        flip = torch.rand(n, generator=g) < 0.5
        x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
    if cutout:
        cy = torch.randint(0, h, (n,), generator=g).view(n, 1, 1)
        cx = torch.randint(0, w, (n,), generator=g).view(n, 1, 1)
        ys = torch.arange(h).view(1, h, 1)
        xs = torch.arange(w).view(1, 1, w)
        half = cutout // 2  # a cutout x cutout square centred at (cy, cx), clipped at the border (DARTS' Cutout)
        hole = (ys >= cy - half) & (ys < cy - half + cutout) & (xs >= cx - half) & (xs < cx - half + cutout)
        x = x.masked_fill(hole.unsqueeze(1), 0.0)
    return x.contiguous()


def batches(data: ArrayData, spec: DatasetSpec, batch_size: int, *, shuffle: bool, g: Optional[torch.Generator] = None,
            train_aug: bool = False, cutout: int = 0, drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalized (and optionally augmented) batches; reproducible through ``g``."""
    n = len(data)
    order = torch.randperm(n, generator=g) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    chunks = [order[i:i + batch_size] for i in range(0, stop, batch_size)]
    if isinstance(data.images, FileImages):  # files: decoded per batch by DataLoader workers, a few batches ahead
        pixels: Iterator[torch.Tensor] = decoded_batches(data.images, chunks)
    else:
        pixels = (data.images[idx] for idx in chunks)
    for idx, raw in zip(chunks, pixels):
        x = normalize(raw, spec)
        if train_aug:
            x = augment(x, spec, g if g is not None else torch.Generator(), cutout)
        yield x, data.labels[idx]


def n_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)
