"""Faults, second round (issue 30): latency CSVs and model files validated like profiles. Degenerate fits, infinite
and absurd latencies, spreadsheet encodings, hand-edited models, a model of another space, and --out naming a folder."""
from __future__ import annotations

import json
from functools import partial

import pytest

from conftest import run_dcanas
from test_latency import _synthetic

from dcanas.nets.genotype import dumps

dcanas = partial(run_dcanas, timeout=900)
FIT = ("latency", "fit", "--space", "darts", "--eval-channels", "8", "--eval-layers", "5")


def _one_line(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout[-1000:], r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and all(n in lines[0] for n in needles), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def _csv(tmp_path, n=12, seed=1, space="darts", latencies=None, encoding="utf-8", bom=False):
    _, _, gs, ys = _synthetic(space, n, seed=seed)
    lines = ["genotype,latency_ms"]
    for i, (g, y) in enumerate(zip(gs, latencies or ys)):
        if space == "nb201":
            lines.append(f"{g.tostr()},{y}")
        else:
            (tmp_path / f"g{seed}-{i}.json").write_text(dumps(g))
            lines.append(f"{tmp_path / f'g{seed}-{i}.json'},{y}")
    path = tmp_path / f"rows-{space}-{seed}.csv"
    path.write_bytes(("\ufeff" if bom else "").encode(encoding) + ("\n".join(lines) + "\n").encode(encoding))
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("lat")
    out = d / "lat.json"
    r = dcanas(*FIT, "--csv", str(_csv(d)), "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.parametrize("rows,needle", [
    ([2.0] * 10, "10 rows, 10 different genotypes, 1 different latencies"),  # it used to say Spearman nan, within 10% 100%
    ([2.0], "1 rows"),
    ([2.0, 3.0], "2 rows"),
])
def test_degenerate_fit_is_refused(tmp_path, rows, needle):
    out = tmp_path / "m.json"
    _one_line(dcanas(*FIT, "--csv", str(_csv(tmp_path, n=len(rows), latencies=rows)), "--out", str(out)), needle, "at least 3")
    assert not out.exists()


def test_fit_on_fewer_networks_than_terms_is_flagged(tmp_path):
    r = dcanas(*FIT, "--csv", str(_csv(tmp_path, n=5)), "--out", str(tmp_path / "m.json"))
    assert r.returncode == 0, r.stderr
    assert "WARNING: 5 networks, fewer than the model's 8 terms" in r.stdout and "nan" not in r.stdout


@pytest.mark.parametrize("value", ["inf", "nan", "1e308", "-0.5", "0"])
def test_infinite_or_absurd_latency_is_refused(tmp_path, value):
    rows = [1.0 + i / 10 for i in range(12)]
    path = _csv(tmp_path, latencies=rows)
    text = path.read_text().splitlines()
    text[3] = text[3].rsplit(",", 1)[0] + f",{value}"
    path.write_text("\n".join(text) + "\n")
    _one_line(dcanas(*FIT, "--csv", str(path), "--out", str(tmp_path / "m.json")), "line 4", f"'{value}'", "(0, 3.6e+06]")


def test_spreadsheet_bom_is_read_and_a_latin1_byte_is_one_line(tmp_path):
    r = dcanas(*FIT, "--csv", str(_csv(tmp_path, bom=True)), "--out", str(tmp_path / "m.json"))
    assert r.returncode == 0, r.stderr
    path = _csv(tmp_path, seed=2)
    lines = path.read_bytes().split(b"\n")
    lines[5] = lines[5] + b",caf\xe9"  # a Latin-1 note in a sixth line
    lines[0] = lines[0] + b",note"
    path.write_bytes(b"\n".join(lines))
    _one_line(dcanas(*FIT, "--csv", str(path), "--out", str(tmp_path / "m2.json")), "line 6: byte 0xe9 is not UTF-8",
              "save the CSV as UTF-8")


def test_predict_checks_the_space(model, tmp_path):
    """An NB201 CSV against a DARTS model used to give '2 predictions', both the model's intercept."""
    out = tmp_path / "p.csv"
    _one_line(dcanas("latency", "predict", "--model", str(model), "--csv", str(_csv(tmp_path, n=2, space="nb201")),
                     "--out", str(out)), "line 2: a nb201 genotype", "models the darts space")
    assert not out.exists()


@pytest.mark.parametrize("edit,needle", [
    (lambda d: d["weights"].pop("sep_conv_3x3"), "weights['sep_conv_3x3'] is missing"),
    (lambda d: d["weights"].update(sep_conv_3x3="fast"), "weights['sep_conv_3x3'] is 'fast', not a finite number"),
    (lambda d: d["eval_config"].update(C=-5), "eval_config.C is -5, not an integer >= 1"),
    (lambda d: d.update(space="mobilenet"), "space is 'mobilenet'"),
    (lambda d: d.update(margin=float("inf")), "margin is inf"),
    (lambda d: d.update(op_names="sep_conv_3x3"), "op_names is 'sep_conv_3x3'"),
    (lambda d: d.update(calibration={}), "calibration is not a list"),
])
def test_hand_edited_model_is_named_by_field(model, tmp_path, edit, needle):
    d = json.loads(model.read_text())
    edit(d)
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(d))
    for args in (("show", str(edited)), ("predict", "--model", str(edited), "--csv", str(_csv(tmp_path, n=3)),
                                         "--out", str(tmp_path / "p.csv"))):
        _one_line(dcanas("latency", *args), needle, "rebuild it")


def test_negative_intercept_predictions_are_refused(model, tmp_path):
    d = json.loads(model.read_text())
    d["intercept"] = -100.0
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(d))
    _one_line(dcanas("latency", "predict", "--model", str(edited), "--csv", str(_csv(tmp_path, n=3)), "--out",
                     str(tmp_path / "p.csv")), "not a latency", "intercept -100")


@pytest.mark.parametrize("action", ["fit", "predict"])
def test_out_naming_a_folder_is_refused_before_work(model, tmp_path, action):
    (tmp_path / "folder").mkdir()
    args = (FIT if action == "fit" else ("latency", "predict", "--model", str(model)))
    _one_line(dcanas(*args, "--csv", str(_csv(tmp_path)), "--out", str(tmp_path / "folder")), "is a folder; give a file name")
