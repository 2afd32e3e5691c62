"""Faults, second round (issue 30): a user's own image tree. 16-bit and float images, decompression bombs,
truncated files, symbolic links out of the tree and in loops, folder names with ``?``, ``#`` and ``%``, and a tree
that changed under ``--resume``. Every tree holds REAL Fashion-MNIST images written as files."""
import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from conftest import run_dcanas, write_fashion_tree


@pytest.fixture(scope="module")
def tree(tmp_path_factory, fashion_root):
    return write_fashion_tree(tmp_path_factory.mktemp("own") / "parts", fashion_root, per_class=6, size=32, fmt="png", rgb=False)


def _copy(tree, dest):
    shutil.copytree(tree, dest, symlinks=True)
    return dest


def _one_line(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and all(n in lines[0] for n in needles), r.stderr
    return lines[0]


def _cost(root_spec, *extra):
    return run_dcanas("cost", "--genotype", "DARTS_V2", "--dataset", root_spec, "--channels", "8", "--layers", "5", *extra)


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_high_depth_gray_images_keep_their_grey_levels(tree, tmp_path, mode):
    """The 16-bit (and 32-bit integer, float) copy of each 8-bit image decodes to the same pixels: convert("L")
    alone clipped them to {0, 255}."""
    from PIL import Image

    from dcanas.data.folders import decode_file

    files = sorted((tree / "train").rglob("*.png"))[:6]
    for k, f in enumerate(files):
        a8 = np.asarray(Image.open(f), dtype=np.uint8)
        if mode == "I;16":
            img = Image.fromarray(a8.astype(np.uint16) * 257)
        elif mode == "I":
            img = Image.fromarray(a8.astype(np.int32) * 257)
        else:
            img = Image.fromarray(a8.astype(np.float32) / 255.0)
        path = tmp_path / (f"{k}.png" if mode == "I;16" else f"{k}.tiff")  # PNG holds 16 bits; TIFF 32-bit and float
        img.save(path)
        assert Image.open(path).mode.startswith(mode[:1])
        got = decode_file(str(path), 1, 32)[0].numpy()
        want = decode_file(str(f), 1, 32)[0].numpy()
        assert len(np.unique(got)) == len(np.unique(want)) > 2
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_bomb_and_truncated_files_are_skipped_at_scan_time(tree, tmp_path):
    """A PNG whose header claims 100,000 x 100,000 pixels and a PNG cut in half are skipped and counted when the tree
    is scanned, by reason; no DecompressionBombError, no worker traceback after an epoch."""
    import struct
    import zlib

    root = _copy(tree, tmp_path / "t")
    victim = sorted((root / "val" / "Bag").glob("*.png"))[0]
    data = victim.read_bytes()
    (root / "val" / "Bag" / "cut.png").write_bytes(data[: len(data) // 2])
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    bomb = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[33:]
    (root / "train" / "Bag" / "bomb.png").write_bytes(bomb)
    r = _cost(f"folder:{root}", "--json")
    assert r.returncode == 0, r.stderr
    assert "skipped 2 of 122 files (" in r.stderr and "1 decompression bomb" in r.stderr and "1 truncated" in r.stderr
    assert "Traceback" not in r.stderr

    from dcanas.data import datasets as D
    from dcanas.data.folders import folder_dataset

    val = D.load_split(folder_dataset(str(root)), None, train=False)
    assert len(val) == 60 and all("cut.png" not in f for f in val.images.files)


def test_a_file_broken_after_the_scan_is_one_line_not_a_worker_traceback(tree, tmp_path, monkeypatch):
    from dcanas.data import datasets as D
    from dcanas.data.folders import folder_dataset
    from dcanas.errors import DataError

    monkeypatch.setenv("DCANAS_LOADER_WORKERS", "1")  # a real DataLoader worker decodes
    root = _copy(tree, tmp_path / "t")
    name = folder_dataset(str(root))
    spec, val = D.get_spec(name), D.load_split(name, None, train=False)
    victim = val.images.files[5]
    data = open(victim, "rb").read()
    open(victim, "wb").write(data[: len(data) // 3])
    with pytest.raises(DataError) as e:
        list(D.batches(val, spec, 8, shuffle=False))
    assert victim in str(e.value) and "remove or replace the file" in str(e.value) and "Traceback" not in str(e.value)


def test_symlink_out_of_the_tree_is_refused_and_can_be_allowed(tree, tmp_path):
    outside = _copy(tree / "train" / "Bag", tmp_path / "elsewhere")
    root = _copy(tree, tmp_path / "t")
    shutil.rmtree(root / "train" / "Bag")
    (root / "train" / "Bag").symlink_to(outside, target_is_directory=True)
    line = _one_line(_cost(f"folder:{root}"), "symbolic link to", str(outside), "outside the tree", "?links=follow")
    assert "--dataset 'folder:" in line
    r = _cost(f"folder:{root}?links=follow", "--json")
    assert r.returncode == 0, r.stderr
    from dcanas.data.folders import folder_dataset

    assert folder_dataset(f"folder:{root}?links=follow").endswith("?links=follow")


@pytest.mark.parametrize("kind", ["loop-class", "loop-inside", "dangling"])
def test_symlink_loops_and_dangling_links_are_named(tree, tmp_path, kind):
    root = _copy(tree, tmp_path / "t")
    if kind == "loop-class":  # a class folder that is a link to itself: it used to vanish silently
        shutil.rmtree(root / "val" / "Bag")
        (root / "val" / "Bag").symlink_to(root / "val" / "Bag")
        needle = "loops or points nowhere"
    elif kind == "loop-inside":  # a link back up to its own class folder
        (root / "train" / "Bag" / "again").symlink_to(root / "train" / "Bag", target_is_directory=True)
        needle = "symbolic link loop"
    else:
        (root / "train" / "Bag" / "gone.png").symlink_to(tmp_path / "no-such.png")
        needle = "loops or points nowhere"
    _one_line(_cost(f"folder:{root}"), needle)


@pytest.mark.parametrize("folder", ["what?now", "hash#tag", "100%real", "sp ace%3F"])
def test_folder_names_with_query_characters_round_trip(tree, tmp_path, folder):
    from dcanas.data import datasets as D
    from dcanas.data.folders import folder_dataset, parse_name

    root = _copy(tree, tmp_path / folder)
    name = folder_dataset(f"folder:{root}", val_split=None)
    assert parse_name(name).root == root.resolve()
    assert folder_dataset(name) == name  # the canonical spec, given back, names the same tree
    with_val = folder_dataset(f"folder:{root}", val_split=0.25)
    assert parse_name(with_val).root == root.resolve() and parse_name(with_val).val_split == 0.25
    assert folder_dataset(with_val) == with_val  # the query of a spec given back is kept (it used to be dropped)
    assert D.short_name(name) == folder
    assert len(D.load_split(name, None, train=True)) == 60


def test_unknown_option_in_the_spec_is_named(tree):
    _one_line(_cost(f"folder:{tree}?vall=0.1"), "unknown option 'vall'", "valid: size, val, links")


@pytest.mark.slow
def test_resume_after_a_class_is_added_reruns_from_the_search(tree, tmp_path, fashion_root):
    """A class added to the tree: the stage hashes include the tree's files, so --resume says the dataset changed
    and reruns search onwards; the retrained network has the new class."""
    root = write_fashion_tree(tmp_path / "t", fashion_root, per_class=14, size=32, fmt="png", rgb=False)
    prof = tmp_path / "p.yaml"
    prof.write_text(yaml.safe_dump(dict(name="own-data", description="tiny budget", budget=dict(params=30000, latency_ms=1000),
                                        runtime=dict(engine="onnxruntime", threads=1, precision="fp32"),
                                        connection=dict(transport="local"))))
    out = tmp_path / "run"
    args = ("run", "--device", str(prof), "--dataset", f"folder:{root}", "--preset", "tiny", "--runs", "3", "--warmup", "1",
            "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--formats", "onnx")
    r = run_dcanas(*args, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_dcanas(*args, "--resume", timeout=900)
    assert r.returncode == 0 and r.stderr.count("unchanged, reused") == 7, r.stderr
    from PIL import Image

    for split in ("train", "val"):
        src = sorted((root / split / "Bag").glob("*.png"))
        (root / split / "Zebra").mkdir()
        for k, f in enumerate(src):
            Image.open(f).transpose(Image.FLIP_TOP_BOTTOM).save(root / split / "Zebra" / f"{k}.png")
    r = run_dcanas(*args, "--resume", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "the dataset changed since the last attempt (classes 10 -> 11, files 280 -> 308)" in r.stderr, r.stderr
    assert "== latency: unchanged" in r.stderr and "== search: unchanged" not in r.stderr and "== train: unchanged" not in r.stderr
    s = json.loads((out / "run.json").read_text())["stages"]
    assert s["search"]["summary"]["eval_config"]["num_classes"] == 11
    state = torch.load(out / s["train"]["summary"]["model"], weights_only=True)
    heads = [v for k, v in state["state_dict"].items() if k.endswith("classifier.weight")] if "state_dict" in state else []
    assert not heads or heads[0].shape[0] == 11
