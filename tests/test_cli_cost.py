import json

import pytest


from conftest import run_dcanas as run


def test_cost_darts_v2_json():
    r = run("cost", "--genotype", "DARTS_V2", "--json")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert row["params"] == row["fvcore_params"] == 3_349_342
    assert all(isinstance(row[k], int) for k in ("params", "flops", "fvcore_params", "fvcore_flops"))


@pytest.mark.parametrize("name,params", [("NASNet", 3_830_950), ("AmoebaNet", 3_145_078)])
def test_cost_paper_baselines(name, params):
    """The paper's Table 1 baselines, buildable: `dcanas cost --genotype NASNet --dataset cifar10`."""
    r = run("cost", "--genotype", name, "--dataset", "cifar10", "--json")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert row["params"] == row["fvcore_params"] == params and row["flops"] == row["fvcore_flops"]


def test_cost_table_output():
    r = run("cost", "--genotype", "DARTS_V2")
    assert r.returncode == 0 and "3,349,342" in r.stdout


@pytest.mark.parametrize("args,needle", [
    (["--genotype", "missing.json"], "is not a file"),
    (["--genotype", "|foo~0|"], "unknown op"),
    (["--genotype", "|nor_conv_3x3~0|+|x"], "malformed"),
    (["--genotype", "DARTS_V2", "--dataset", "svhn"], "unknown dataset"),
])
def test_cost_bad_input_one_line_exit_2(args, needle):
    r = run("cost", *args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr
