import json
import random

import pytest

from dcanas.nets.genotype import (KNOWN, DartsGenotype, GenotypeError, NB201Genotype, genotype_from_json,
                                  load_genotype, random_genotype)


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_known_json_round_trip(name):
    g = genotype_from_json(KNOWN[name])
    assert g.to_json() == KNOWN[name]
    assert genotype_from_json(json.loads(json.dumps(g.to_json()))) == g


@pytest.mark.parametrize("space", ["darts", "nb201"])
@pytest.mark.parametrize("seed", range(5))
def test_random_round_trip(space, seed):
    g = random_genotype(space, random.Random(seed)).validate()
    assert genotype_from_json(g.to_json()) == g


ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"


def test_nb201_arch_string_printed_exactly():
    assert NB201Genotype.from_str(ARCH).tostr() == ARCH
    assert load_genotype(ARCH).to_json() == {"space": "nb201", "arch": ARCH}


def test_load_from_file(tmp_path):
    p = tmp_path / "g.json"
    p.write_text(json.dumps(KNOWN["DARTS_V2"]))
    assert isinstance(load_genotype(p), DartsGenotype)


BAD = [
    ({"space": "darts", "normal": [["conv_9x9", 0]] * 8, "reduce": [["skip_connect", 0]] * 8}, "unknown op"),
    ({"space": "darts", "normal": [["skip_connect", 5]] * 8, "reduce": [["skip_connect", 0]] * 8}, "input node"),
    ({"space": "darts", "normal": [["skip_connect", 0]] * 7, "reduce": [["skip_connect", 0]] * 7}, "edges"),
    ({"space": "darts", "normal": [["none", 0]] * 8, "reduce": [["skip_connect", 0]] * 8}, "unknown op"),
    ({"space": "nb201", "arch": "|nor_conv_3x3~0|+|nor_conv_3x3~0|"}, "exactly one edge"),
    ({"space": "nb201", "arch": "nor_conv_3x3~0"}, "malformed"),
    ({"space": "nb201", "arch": "|nor_conv_3x3-0|"}, "malformed"),
    ({"space": "nope"}, "unknown genotype space"),
    ([1, 2], "JSON object"),
]


@pytest.mark.parametrize("data,message", BAD)
def test_validate_errors(data, message):
    with pytest.raises(GenotypeError, match=message):
        genotype_from_json(data)
