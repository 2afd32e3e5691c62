"""Your own data: `--dataset folder:PATH` on ImageFolder trees of REAL Fashion-MNIST images written as PNG and
JPEG files (grayscale and RGB, 64 and 96 px), streamed per batch; bad trees refused in one line; the stem rule."""
import json

import pytest
import torch
import yaml

from conftest import run_dcanas, write_fashion_tree


@pytest.fixture(scope="module")
def gray_tree(tmp_path_factory, fashion_root):
    return write_fashion_tree(tmp_path_factory.mktemp("gray") / "parts", fashion_root, per_class=20, size=64, fmt="png", rgb=False)


@pytest.fixture(scope="module")
def rgb_tree(tmp_path_factory, fashion_root):
    """RGB JPEGs at 96 px, no val/ (held out with --val-split)."""
    return write_fashion_tree(tmp_path_factory.mktemp("rgb") / "crops", fashion_root, per_class=20, size=96, fmt="jpg",
                              rgb=True, val=False)


def test_gray_png_tree_is_measured_and_streamed(gray_tree):
    from dcanas.data import datasets as D
    from dcanas.data.datasets import FASHION_CLASSES
    from dcanas.data.folders import FileImages, folder_dataset

    name = folder_dataset(str(gray_tree))
    spec = D.get_spec(name)
    assert (spec.in_channels, spec.size, spec.num_classes) == (1, 64, 10)  # grayscale files; median side 64
    assert list(spec.class_names) == sorted(c.replace("/", "-") for c in FASHION_CLASSES)
    assert 0.2 < spec.mean[0] < 0.4 and 0.25 < spec.std[0] < 0.45  # Fashion-MNIST's own: 0.286, 0.353
    train, val = D.load_split(name, None, train=True), D.load_split(name, None, train=False)
    assert len(train) == len(val) == 200 and isinstance(train.images, FileImages)  # files, not pixels, in memory
    got = list(D.batches(train, spec, 32, shuffle=True, g=torch.Generator().manual_seed(0), train_aug=True))
    assert [tuple(x.shape) for x, _ in got][:2] == [(32, 1, 64, 64)] * 2 and sum(len(y) for _, y in got) == 200
    # the workers decode exactly what the main process would
    order = torch.randperm(200, generator=torch.Generator().manual_seed(1))[:32]
    x, _ = next(D.batches(train.subset(order), spec, 32, shuffle=False))
    assert torch.equal(x, D.normalize(train.take(order), spec))


def test_rgb_jpeg_tree_with_val_split(rgb_tree):
    from dcanas.data import datasets as D
    from dcanas.data.folders import folder_dataset

    name = folder_dataset(str(rgb_tree), val_split=0.1)
    assert name.endswith("crops?val=0.1")
    spec = D.get_spec(name)
    assert (spec.in_channels, spec.size) == (3, 96)
    train, val = D.load_split(name, None, train=True), D.load_split(name, None, train=False)
    assert (len(train), len(val)) == (180, 20) and torch.bincount(val.labels).tolist() == [2] * 10  # stratified
    assert not set(train.images.files) & set(val.images.files)
    assert D.get_spec(folder_dataset(str(rgb_tree), input_size=48, val_split=0.1)).size == 48


@pytest.mark.parametrize("case,needle", [
    ("missing", "no such folder"),
    ("no-train", "no train/ folder"),
    ("no-classes", "no class folders"),
    ("empty-class", "holds no images"),
    ("mismatch", "different classes"),
    ("no-val", "--val-split"),
    ("all-unreadable", "no readable train image"),
])
def test_bad_trees_one_line_exit_2(tmp_path, case, needle):
    root = tmp_path / "tree"
    if case != "missing":
        (root / "train").mkdir(parents=True) if case != "no-train" else (root / "images").mkdir(parents=True)
    from PIL import Image

    def img(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (32, 32), 128).save(path)

    if case in ("empty-class", "mismatch", "no-val", "all-unreadable"):
        for split in ("train",) + (() if case == "no-val" else ("val",)):
            for c in ("a", "b"):
                img(root / split / c / "x.png")
        if case == "empty-class":
            (root / "train" / "c").mkdir()
            (root / "val" / "c").mkdir()
        if case == "mismatch":
            img(root / "val" / "z" / "x.png")
        if case == "all-unreadable":
            (root / "train" / "a" / "x.png").write_bytes(b"not an image")
    r = run_dcanas("cost", "--genotype", "DARTS_V2", "--dataset", f"folder:{root}", "--channels", "8", "--layers", "5")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and str(root) in lines[0], r.stderr


def test_a_few_unreadable_files_are_skipped_and_counted(tmp_path, gray_tree):
    import shutil

    root = tmp_path / "tree"
    shutil.copytree(gray_tree, root)
    for k in range(3):
        (root / "train" / "Bag" / f"broken-{k}.png").write_bytes(b"\x89PNG truncated")
    r = run_dcanas("cost", "--genotype", "DARTS_V2", "--dataset", f"folder:{root}", "--channels", "8", "--layers", "5", "--json")
    assert r.returncode == 0, r.stderr
    assert "skipped 3 of 403 files (3 unreadable; e.g." in r.stderr
    row = json.loads(r.stdout)
    assert row["params"] == row["fvcore_params"] and row["flops"] == row["fvcore_flops"]


def test_folder_options_refused_for_named_datasets():
    r = run_dcanas("cost", "--genotype", "DARTS_V2", "--dataset", "cifar10", "--input-size", "96")
    assert r.returncode == 2 and "--input-size and --val-split apply to --dataset folder:PATH" in r.stderr


@pytest.mark.parametrize("side,stem", [(28, "cifar"), (64, "cifar"), (72, "imagenet"), (96, "imagenet"), (224, "imagenet")])
def test_stem_rule_cost_equals_fvcore(side, stem):
    """Up to 64 px the CIFAR stem, above it the ImageNet stem; the cost counter equals fvcore on both."""
    from dcanas.nets.build import build_network
    from dcanas.nets.config import default_config, stem_for
    from dcanas.nets.cost import fvcore_cost, network_cost
    from dcanas.nets.genotype import load_genotype

    assert stem_for("darts", side) == stem and stem_for("nb201", side) == "cifar"
    g = load_genotype("DARTS_V2")
    cfg = default_config("darts", in_channels=3, input_size=side, num_classes=10, C=8, layers=5)
    assert cfg.stem == stem
    a, f = network_cost(g, cfg), fvcore_cost(build_network(g, cfg), side, 3)
    assert (a.params, a.flops) == (f.params, f.flops)


def test_supernet_uses_the_imagenet_stem_at_224():
    from dcanas.search.supernet import SupernetConfig, Supernet

    net = Supernet(SupernetConfig(C=4, cells=3, nodes=2, input_size=224))
    assert net.stem1 is not None and net.slots[0].size == 28  # three stride-2 convolutions: 224 -> 28
    assert net(torch.randn(2, 3, 224, 224)).shape == (2, 10)
    small = Supernet(SupernetConfig(C=4, cells=3, nodes=2, input_size=64))
    assert small.stem1 is None and small.slots[0].size == 64


@pytest.mark.slow
@pytest.mark.parametrize("tree,extra", [("gray", []), ("rgb", ["--val-split", "0.1"])])
def test_run_on_own_data(request, tmp_path, tree, extra):
    """search -> train -> export -> profile -> verdict on `local` from a tree of PNG (gray, 64 px) or JPEG (RGB,
    96 px: the ImageNet stem) files; the export is validated on the tree's own images."""
    root = request.getfixturevalue(f"{tree}_tree")
    prof = tmp_path / "p.yaml"
    prof.write_text(yaml.safe_dump(dict(name="own-data", description="tiny budget", budget=dict(params=30000, latency_ms=1000),
                                        runtime=dict(engine="onnxruntime", threads=1, precision="fp32"),
                                        connection=dict(transport="local"))))
    out = tmp_path / "run"
    r = run_dcanas("run", "--device", str(prof), "--dataset", f"folder:{root}", *extra, "--preset", "tiny", "--runs", "5",
                   "--warmup", "1", "--cache-dir", str(tmp_path / "cache"), "--out", str(out), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "verdict: PASS" in r.stdout
    s = json.loads((out / "run.json").read_text())["stages"]
    net = s["search"]["summary"]["eval_config"]
    size = 64 if tree == "gray" else 96
    assert net["input_size"] == size and net["stem"] == ("cifar" if size <= 64 else "imagenet")
    assert net["in_channels"] == (1 if tree == "gray" else 3)
    rows = s["export"]["summary"]["rows"]
    assert all(r_["passed"] for r_ in rows)
    export = json.loads((out / "export" / "export.json").read_text())
    assert "real" in export["inputs"] and str(root.name) in export["inputs"]
    from dcanas.export.inspect import metadata

    meta = metadata(out / "export" / "model.onnx")  # the measured normalisation travels with the model
    assert meta["input_shape"][-1] == size and len(meta["mean"]) == net["in_channels"]


@pytest.mark.slow
def test_tiny_search_at_224_px_uses_the_imagenet_stem(tmp_path, fashion_root):
    """A tiny search on a 224 px tree: the supernet and the evaluation network take the ImageNet stem (the first
    cell works at 28 px), and the search finishes on this CPU."""
    tree = write_fashion_tree(tmp_path / "big", fashion_root, per_class=8, size=224, fmt="png", rgb=True, val=False)
    out = tmp_path / "search"
    r = run_dcanas("search", "--dataset", f"folder:{tree}", "--val-split", "0.25", "--preset", "tiny", "--batch-size", "16",
                   "--budget", "20k", "--cache-dir", str(tmp_path / "cache"), "--out", str(out), timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((out / "search.json").read_text())["summary"]
    assert summary["eval_config"]["stem"] == "imagenet" and summary["eval_config"]["input_size"] == 224


def test_a_named_imagefolder_dataset_reads_through_the_one_folder_reader(tmp_path, fashion_root):
    """TinyImageNet's layout (train/<class>/, val/<class>/): listed by data/folders.py, decoded per batch at the
    dataset's own size and channels (64 px RGB), labels in sorted class-folder order as ImageFolder gives them."""
    from dcanas.data import datasets as D
    from dcanas.data.folders import FileImages

    tree = write_fashion_tree(tmp_path / "tiny", fashion_root, per_class=2, size=72, fmt="png", rgb=False)  # the data root
    train = D.load_split("tinyimagenet", tree, train=True)
    assert isinstance(train.images, FileImages) and len(train) == 20
    classes = sorted(p.name for p in (tree / "train").iterdir())
    assert train.labels.tolist() == [c for c in range(10) for _ in range(2)] and len(classes) == 10
    x = train.take(torch.arange(3))
    assert x.shape == (3, 3, 64, 64) and x.dtype == torch.uint8
    assert len(D.load_split("tinyimagenet", tree, train=False)) == 20
