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

import hashlib
import multiprocessing
import os
import random
import statistics
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, Optional
from urllib.parse import parse_qs, unquote, urlencode

import numpy as np
import torch

from ..errors import DataError

FOLDER_PREFIX = "folder:"

STATS_SAMPLE = 256   # training images the mean and std are measured on
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
LOADER_WORKERS = 2


QUERY_KEYS = ("size", "val", "links")


def _escape(path: str) -> str:
    """The path part of a spec: ``%``, ``?`` and ``#`` escaped, so that a folder named with them round-trips."""
    return path.replace("%", "%25").replace("?", "%3F").replace("#", "%23")


def _split_spec(spec: str) -> tuple[Path, dict[str, str]]:
    """(folder, query) of ``folder:PATH[?size=N&val=F&links=follow]``: a PATH that exists as written wins (a folder
    named ``a?b``); else the query is cut at the last ``?`` and the path unescaped (a canonical spec read back)."""
    body = spec.removeprefix(FOLDER_PREFIX)
    literal = Path(body).expanduser()
    if literal.exists():
        return literal, {}
    path, sep, query = body.rpartition("?")
    if not sep:
        path, query = body, ""
    q = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    unknown = sorted(set(q) - set(QUERY_KEYS))
    if unknown:
        raise DataError(f"dataset {spec!r}: unknown option {unknown[0]!r} after '?'; valid: {', '.join(QUERY_KEYS)} "
                        f"(folder:PATH?size=96&val=0.1&links=follow)")
    raw = Path(path).expanduser()
    return (raw if raw.exists() else Path(unquote(path)).expanduser()), q


def folder_dataset(path: str, input_size: Optional[int] = None, val_split: Optional[float] = None) -> str:
    """The canonical dataset name of a tree: ``folder:/abs/path[?size=N&val=F&links=follow]`` (options given here win
    over the spec's own query)."""
    folder, q = _split_spec(path)
    src = _source(folder.resolve(), q, path)
    size = input_size if input_size is not None else src.size
    val = val_split if val_split is not None else src.val_split
    if size is not None and not (8 <= size <= 1024):
        raise DataError(f"--input-size {size}: give a side in pixels between 8 and 1024")
    if val is not None and not (0 < val < 1):
        raise DataError(f"--val-split {val}: give a fraction of train/ between 0 and 1 (e.g. 0.1)")
    query = {k: v for k, v in (("size", size), ("val", val), ("links", "follow" if src.follow_links else None)) if v is not None}
    return f"{FOLDER_PREFIX}{_escape(str(src.root))}" + (f"?{urlencode(query)}" if query else "")


@dataclass(frozen=True)
class FolderSource:
    root: Path
    size: Optional[int]
    val_split: Optional[float]
    follow_links: bool = False  # symbolic links that leave the tree are followed (``links=follow``)


def _source(root: Path, q: dict[str, str], name: str) -> FolderSource:
    links = q.get("links", "")
    if links not in ("", "follow"):
        raise DataError(f"dataset {name!r}: links={links!r}; the only value is links=follow (follow symbolic links out of the tree)")
    try:
        return FolderSource(root, int(q["size"]) if "size" in q else None, float(q["val"]) if "val" in q else None, links == "follow")
    except ValueError:
        raise DataError(f"dataset {name!r}: size must be an integer and val a fraction (folder:PATH?size=96&val=0.1)") from None


def parse_name(name: str) -> FolderSource:
    """The tree and options of a canonical ``folder:`` name."""
    body = name.removeprefix(FOLDER_PREFIX)
    path, _, query = body.partition("?")
    return _source(Path(unquote(path)), {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}, name)


@dataclass(frozen=True)
class Scan:
    classes: tuple[str, ...]
    train: tuple[tuple[str, int], ...]   # (file, class index)
    val: tuple[tuple[str, int], ...]
    skipped: tuple[tuple[str, str], ...]  # (file, why): unreadable, truncated or decompression-bomb files, not used
    channels: int
    shorter_sides: tuple[int, ...]


def _image_suffixes() -> set[str]:
    from PIL import Image

    return {s.lower() for s in Image.registered_extensions()}


def _link_target(p: Path, root: Path, follow: bool) -> None:
    """Refuse a symbolic link that loops, points nowhere or (unless followed on purpose) leaves the tree."""
    try:
        target = p.resolve(strict=True)
    except (OSError, RuntimeError):
        raise DataError(f"{p}: a symbolic link that loops or points nowhere; remove it or point it at a folder or image") from None
    if not follow and not target.is_relative_to(root):
        raise DataError(f"{p} is a symbolic link to {target}, outside the tree {root}; copy those files into the tree, or "
                        f"follow links out of it with --dataset 'folder:{_escape(str(root))}?links=follow'")


def _images_under(d: Path, root: Path, follow: bool, suffixes: set[str], seen: frozenset[Path] = frozenset()) -> Iterator[Path]:
    """Image files under ``d``, sorted, hidden entries left out; symbolic links checked (``_link_target``), a folder
    that contains itself through links refused."""
    real = d.resolve()
    if real in seen:
        raise DataError(f"{d}: a symbolic link loop (this folder contains itself); remove the link")
    for entry in sorted(os.scandir(d), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        p = Path(entry.path)
        if entry.is_symlink():
            _link_target(p, root, follow)
        if entry.is_dir():
            yield from _images_under(p, root, follow, suffixes, seen | {real})
        elif entry.is_file() and p.suffix.lower() in suffixes:
            yield p


def _class_files(folder: Path, suffixes: set[str], root: Path, follow: bool) -> dict[str, list[Path]]:
    if folder.is_symlink():
        _link_target(folder, root, follow)
    classes = sorted(e.name for e in os.scandir(folder) if not e.name.startswith(".") and (e.is_symlink() or e.is_dir()))
    if not classes:
        raise DataError(f"{folder}: no class folders; an ImageFolder tree has one folder per class ({folder}/<class>/<image>)")
    out = {}
    for c in classes:
        if (folder / c).is_symlink():
            _link_target(folder / c, root, follow)
        files = list(_images_under(folder / c, root, follow, suffixes))
        if not files:
            raise DataError(f"{folder / c}: class {c!r} holds no images (any format Pillow reads: .png, .jpg, ...); "
                            f"add images or remove the folder")
        out[c] = files
    return out


def _header(path: Path) -> tuple[int, str] | str:
    """(shorter side, mode) of a whole, decodable image; else why it is skipped: unreadable, truncated, or a
    decompression bomb (more pixels than Pillow's limit). A PNG's chunks are checked (CRC, through IEND); other
    formats are decoded at a reduced scale where the format allows (JPEG's draft mode)."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                side, mode = min(img.size), img.mode
                if img.format == "PNG":
                    img.verify()
                else:
                    img.draft(img.mode, (max(1, img.size[0] // 8), max(1, img.size[1] // 8)))
                    img.load()
        return side, mode
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "decompression bomb"
    except UnidentifiedImageError:
        return "unreadable"
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        return "truncated" if "truncat" in str(exc).lower() or isinstance(exc, (EOFError, SyntaxError)) else "unreadable"


@lru_cache(maxsize=8)
def scan(root: Path, val_split: Optional[float], follow_links: bool = False) -> Scan:
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; --dataset folder:PATH needs an ImageFolder tree (PATH/train/<class>/<image>)")
    train_dir, val_dir = root / "train", root / "val"
    if not train_dir.is_dir():
        raise DataError(f"{root}: no train/ folder; put the training images in {train_dir}/<class>/ (and validation images in "
                        f"{val_dir}/<class>/, or pass --val-split 0.1)")
    suffixes = _image_suffixes()
    real_root = root.resolve()
    train = _class_files(train_dir, suffixes, real_root, follow_links)
    classes = tuple(train)
    if val_dir.is_dir() and val_split is None:
        val = _class_files(val_dir, suffixes, real_root, follow_links)
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
    skipped: list[tuple[str, str]] = []
    sides: list[int] = []
    gray = True
    lists: dict[str, list[tuple[str, int]]] = {"train": [], "val": []}
    for split, table in (("train", train), ("val", val)):
        for ci, c in enumerate(classes):
            for f in table.get(c, []):
                h = _header(f)
                if isinstance(h, str):
                    skipped.append((str(f), h))
                    continue
                sides.append(h[0])
                gray = gray and h[1] in GRAY_MODES
                lists[split].append((str(f), ci))
    for split in ("train", "val"):
        have = {ci for _, ci in lists[split]}
        missing = [classes[ci] for ci in range(len(classes)) if ci not in have]
        if missing:
            raise DataError(f"{root}: no readable {split} image of class {missing[0]!r}"
                            + (f" ({len(skipped)} files skipped, e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else "")
                            + ("; train/ needs at least 2 images per class for --val-split" if split == "val" and val_split else ""))
    return Scan(classes, tuple(lists["train"]), tuple(lists["val"]), tuple(skipped), 1 if gray else 3, tuple(sides))


def skipped_line(root: Path, s: Scan) -> str:
    """One line: how many files the scan skipped, by reason, with an example."""
    from collections import Counter

    reasons = Counter(r for _, r in s.skipped)
    total = len(s.skipped) + len(s.train) + len(s.val)
    return (f"{root}: skipped {len(s.skipped)} of {total} files ({', '.join(f'{n} {r}' for r, n in reasons.most_common())}; "
            f"e.g. {s.skipped[0][0]}); they are not used")


def _to_8bit(img):
    """16-bit, 32-bit integer and float grayscale images rescaled to 8 bits (``convert("L")`` would clip them to
    {0, 255}): I;16 by its range (/257); I and F by the range their values use (0..1, 0..255, 0..65535), else by
    the image's own min..max."""
    from PIL import Image

    if img.mode not in ("I", "F") and not img.mode.startswith("I;16"):
        return img
    a = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16") or (img.mode == "I" and img.format == "PNG"):  # a 16-bit PNG (older Pillow: mode I)
        scale, lo = 255.0 / 65535.0, 0.0
    else:
        lo, hi = float(a.min()), float(a.max())
        top = next((t for t in (1.0, 255.0, 65535.0) if lo >= 0 and hi <= t), None)
        scale, lo = (255.0 / top, 0.0) if top else (255.0 / max(hi - lo, 1e-12), lo)
    return Image.fromarray(np.clip(np.rint((a - lo) * scale), 0, 255).astype(np.uint8))


def decode_file(path: str, channels: int, size: int) -> torch.Tensor:
    """C x size x size uint8: the shorter side resized to ``size`` (bilinear), then the centre crop."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = _to_8bit(img).convert("L" if channels == 1 else "RGB")
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

    def __getitem__(self, k: int) -> torch.Tensor | str:
        try:
            return self.images[self.chunks[k]].decode()
        except DataError as exc:  # to the main process as its one line, not as a worker's traceback
            return str(exc)


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
    for batch in loader:
        if isinstance(batch, str):
            raise DataError(batch)
        yield batch


def fingerprint(name: str) -> dict[str, Any]:
    """What a tree holds, without opening an image: its classes and each file's path (relative to the tree), size and
    modification time, hashed. Stage hashes include it, so ``--resume`` reruns what a changed tree invalidates."""
    src = parse_name(name)
    h = hashlib.sha256()
    classes: set[str] = set()
    files = 0
    for split in ("train",) + (("val",) if src.val_split is None and (src.root / "val").is_dir() else ()):
        if not (src.root / split).is_dir():
            continue
        for c, paths in _class_files(src.root / split, _image_suffixes(), src.root.resolve(), src.follow_links).items():
            classes.add(c)
            h.update(f"{split}/{c}\n".encode())
            for f in paths:
                st = f.stat()
                h.update(f"{f.relative_to(src.root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
                files += 1
    return {"classes": len(classes), "files": files, "sha256": h.hexdigest()}


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
    s = scan(src.root, src.val_split, src.follow_links)
    size = src.size or _input_size(s)
    rng = random.Random(0)
    sample = [f for f, _ in rng.sample(s.train, min(STATS_SAMPLE, len(s.train)))]
    x = FileImages(np.array(sample, dtype=object), s.channels, size).decode().float().div_(255.0)
    mean = tuple(round(float(v), 4) for v in x.mean(dim=(0, 2, 3)))
    std = tuple(round(max(float(v), 1e-3), 4) for v in x.std(dim=(0, 2, 3)))
    if s.skipped:
        import sys

        print(skipped_line(src.root, s), file=sys.stderr)
    return FolderInfo(src.root, s.channels, size, s.classes, mean, std)


def folder_split(name: str, train: bool) -> tuple[FileImages, torch.Tensor]:
    """The training or validation files of the tree and their labels (the validation split stands as the
    test split)."""
    src = parse_name(name)
    info = folder_info(name)
    s = scan(src.root, src.val_split, src.follow_links)
    items = s.train if train else s.val
    return (FileImages(np.array([f for f, _ in items], dtype=object), info.channels, info.size),
            torch.tensor([c for _, c in items], dtype=torch.int64))
