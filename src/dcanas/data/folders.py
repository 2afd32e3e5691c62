"""A user's own images: ``--dataset folder:PATH``, an ImageFolder tree (``train/<class>/*.png``, and
``val/<class>/...`` or ``--val-split F`` of train), any format Pillow reads, grayscale or RGB.

The dataset's name carries what defines it, so every process (search, training, export, a resumed
run) sees the same dataset: ``folder:/abs/path`` plus ``?size=N`` (``--input-size``) and ``&val=F``
(``--val-split``). The tree is scanned once per process: class folders, every file's header (an
unreadable file is skipped and counted; never silently), the channels (1 when every image is
grayscale, else 3), the input size (default: the median of the images' shorter sides, rounded to a
multiple of 8) and the mean and std (measured on up to 256 training images). Images are decoded per
batch (shorter side resized to the input size, then centre-cropped) by DataLoader workers: memory
holds a few batches, not the tree.
"""
from __future__ import annotations

import multiprocessing
import os
import random
import statistics
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import parse_qs, urlencode

import numpy as np
import torch

from ..errors import DataError

FOLDER_PREFIX = "folder:"

STATS_SAMPLE = 256   # training images the mean and std are measured on
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
LOADER_WORKERS = 2


def folder_dataset(path: str, input_size: Optional[int] = None, val_split: Optional[float] = None) -> str:
    """The canonical dataset name of a tree: ``folder:/abs/path[?size=N&val=F]``."""
    root = Path(path.removeprefix(FOLDER_PREFIX).split("?")[0]).expanduser().resolve()
    query = {k: v for k, v in (("size", input_size), ("val", val_split)) if v is not None}
    if input_size is not None and not (8 <= input_size <= 1024):
        raise DataError(f"--input-size {input_size}: give a side in pixels between 8 and 1024")
    if val_split is not None and not (0 < val_split < 1):
        raise DataError(f"--val-split {val_split}: give a fraction of train/ between 0 and 1 (e.g. 0.1)")
    return f"{FOLDER_PREFIX}{root}" + (f"?{urlencode(query)}" if query else "")


@dataclass(frozen=True)
class FolderSource:
    root: Path
    size: Optional[int]
    val_split: Optional[float]


def parse_name(name: str) -> FolderSource:
    body = name.removeprefix(FOLDER_PREFIX)
    path, _, query = body.partition("?")
    q = {k: v[-1] for k, v in parse_qs(query).items()}
    try:
        return FolderSource(Path(path), int(q["size"]) if "size" in q else None, float(q["val"]) if "val" in q else None)
    except ValueError:
        raise DataError(f"dataset {name!r}: size must be an integer and val a fraction (folder:PATH?size=96&val=0.1)") from None


@dataclass(frozen=True)
class Scan:
    classes: tuple[str, ...]
    train: tuple[tuple[str, int], ...]   # (file, class index)
    val: tuple[tuple[str, int], ...]
    skipped: tuple[str, ...]             # unreadable files, not used
    channels: int
    shorter_sides: tuple[int, ...]


def _image_suffixes() -> set[str]:
    from PIL import Image

    return {s.lower() for s in Image.registered_extensions()}


def _class_files(folder: Path, suffixes: set[str]) -> dict[str, list[Path]]:
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"{folder}: no class folders; an ImageFolder tree has one folder per class ({folder}/<class>/<image>)")
    out = {}
    for c in classes:
        files = sorted(p for p in (folder / c).rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        if not files:
            raise DataError(f"{folder / c}: class {c!r} holds no images (any format Pillow reads: .png, .jpg, ...); "
                            f"add images or remove the folder")
        out[c] = files
    return out


def _header(path: Path) -> Optional[tuple[int, str]]:
    """(shorter side, mode) from the file's header, or None when Pillow cannot read it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return min(img.size), img.mode
    except (UnidentifiedImageError, OSError, ValueError):
        return None


@lru_cache(maxsize=8)
def scan(root: Path, val_split: Optional[float]) -> Scan:
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; --dataset folder:PATH needs an ImageFolder tree (PATH/train/<class>/<image>)")
    train_dir, val_dir = root / "train", root / "val"
    if not train_dir.is_dir():
        raise DataError(f"{root}: no train/ folder; put the training images in {train_dir}/<class>/ (and validation images in "
                        f"{val_dir}/<class>/, or pass --val-split 0.1)")
    suffixes = _image_suffixes()
    train = _class_files(train_dir, suffixes)
    classes = tuple(train)
    if val_dir.is_dir() and val_split is None:
        val = _class_files(val_dir, suffixes)
        if tuple(val) != classes:
            only_t, only_v = sorted(set(classes) - set(val)), sorted(set(val) - set(classes))
            raise DataError(f"{root}: train/ and val/ have different classes (only in train/: {only_t or 'none'}; only in val/: "
                            f"{only_v or 'none'}); give both the same class folders")
    elif val_split is None:
        raise DataError(f"{root}: no val/ folder; add {val_dir}/<class>/ with the same classes as train/, or pass --val-split 0.1 "
                        f"to hold out a tenth of train/")
    else:  # a stratified, seeded hold-out of train/
        rng = random.Random(0)
        val = {}
        for c, files in train.items():
            files = files[:]
            rng.shuffle(files)
            k = max(1, round(len(files) * val_split)) if len(files) > 1 else 0
            val[c], train[c] = sorted(files[:k]), sorted(files[k:])
    skipped: list[str] = []
    sides: list[int] = []
    gray = True
    lists: dict[str, list[tuple[str, int]]] = {"train": [], "val": []}
    for split, table in (("train", train), ("val", val)):
        for ci, c in enumerate(classes):
            for f in table.get(c, []):
                h = _header(f)
                if h is None:
                    skipped.append(str(f))
                    continue
                sides.append(h[0])
                gray = gray and h[1] in GRAY_MODES
                lists[split].append((str(f), ci))
    for split in ("train", "val"):
        have = {ci for _, ci in lists[split]}
        missing = [classes[ci] for ci in range(len(classes)) if ci not in have]
        if missing:
            raise DataError(f"{root}: no readable {split} image of class {missing[0]!r}"
                            + (f" ({len(skipped)} unreadable files skipped, e.g. {skipped[0]})" if skipped else "")
                            + ("; train/ needs at least 2 images per class for --val-split" if split == "val" and val_split else ""))
    return Scan(classes, tuple(lists["train"]), tuple(lists["val"]), tuple(skipped), 1 if gray else 3, tuple(sides))


def decode_file(path: str, channels: int, size: int) -> torch.Tensor:
    """C x size x size uint8: the shorter side resized to ``size`` (bilinear), then the centre crop."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            w, h = img.size
            scale = size / min(w, h)
            img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
            w, h = img.size
            left, top = (w - size) // 2, (h - size) // 2
            img = img.crop((left, top, left + size, top + size))
            a = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot be decoded ({type(exc).__name__}: {exc}); remove or replace the file") from None
    return torch.from_numpy(a.copy()).view(size, size, -1).permute(2, 0, 1).contiguous()


class FileImages:
    """Image files decoded on demand; indexing gives a view (another FileImages), ``decode()`` the pixels."""

    def __init__(self, files: np.ndarray, channels: int, size: int) -> None:
        self.files, self.channels, self.size = files, channels, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index) -> "FileImages":
        if isinstance(index, torch.Tensor):
            index = index.numpy()
        files = self.files[index]
        return FileImages(np.atleast_1d(files), self.channels, self.size)

    def decode(self) -> torch.Tensor:
        if not len(self.files):
            return torch.zeros(0, self.channels, self.size, self.size, dtype=torch.uint8)
        return torch.stack([decode_file(f, self.channels, self.size) for f in self.files])


class _Chunks(torch.utils.data.Dataset):
    def __init__(self, images: FileImages, chunks: list[torch.Tensor]) -> None:
        self.images, self.chunks = images, chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, k: int) -> torch.Tensor:
        return self.images[self.chunks[k]].decode()


def loader_workers() -> int:
    """DataLoader workers: none inside a daemon process (which cannot have children) or when
    DCANAS_LOADER_WORKERS says so."""
    env = os.environ.get("DCANAS_LOADER_WORKERS")
    if env is not None:
        return max(0, int(env))
    return 0 if multiprocessing.current_process().daemon else LOADER_WORKERS


def decoded_batches(images: FileImages, chunks: list[torch.Tensor]) -> Iterator[torch.Tensor]:
    """uint8 batches in ``chunks`` order, decoded by DataLoader workers two batches ahead each."""
    workers = loader_workers()
    loader = torch.utils.data.DataLoader(_Chunks(images, chunks), batch_size=None, shuffle=False, num_workers=workers,
                                         prefetch_factor=2 if workers else None, persistent_workers=False)
    yield from loader


def _input_size(s: Scan) -> int:
    """The median shorter side, rounded to a multiple of 8."""
    return max(8, int(8 * round(statistics.median(s.shorter_sides) / 8)))


@dataclass(frozen=True)
class FolderInfo:
    """What a tree's scan measured: ``datasets`` builds the dataset's spec from it."""

    root: Path
    channels: int
    size: int
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]


@lru_cache(maxsize=8)
def folder_info(name: str) -> FolderInfo:
    src = parse_name(name)
    s = scan(src.root, src.val_split)
    size = src.size or _input_size(s)
    rng = random.Random(0)
    sample = [f for f, _ in rng.sample(s.train, min(STATS_SAMPLE, len(s.train)))]
    x = FileImages(np.array(sample, dtype=object), s.channels, size).decode().float().div_(255.0)
    mean = tuple(round(float(v), 4) for v in x.mean(dim=(0, 2, 3)))
    std = tuple(round(max(float(v), 1e-3), 4) for v in x.std(dim=(0, 2, 3)))
    if s.skipped:
        import sys

        print(f"{src.root}: skipped {len(s.skipped)} unreadable of {len(s.skipped) + len(s.train) + len(s.val)} files "
              f"(e.g. {s.skipped[0]})", file=sys.stderr)
    return FolderInfo(src.root, s.channels, size, s.classes, mean, std)


def folder_split(name: str, train: bool) -> tuple[FileImages, torch.Tensor]:
    """The training or validation files of the tree and their labels (the validation split stands as the
    test split)."""
    src = parse_name(name)
    info = folder_info(name)
    s = scan(src.root, src.val_split)
    items = s.train if train else s.val
    return (FileImages(np.array([f for f, _ in items], dtype=object), info.channels, info.size),
            torch.tensor([c for _, c in items], dtype=torch.int64))
