"""Evaluation networks: the reference architectures' exact sizes; analytic == fvcore everywhere."""
import random

import pytest
import torch

from dcanas.nets.build import build_network
from dcanas.nets.config import NetConfig, default_config
from dcanas.nets.cost import fvcore_cost, module_graph_counts, network_cost
from dcanas.nets.genotype import load_genotype, random_genotype
from dcanas.data.datasets import DATASETS


def test_darts_v2_reference_params():
    cfg = NetConfig(C=36, layers=20, num_classes=10)
    net = build_network(load_genotype("DARTS_V2"), cfg)
    assert sum(p.numel() for p in net.parameters()) == 3_349_342
    assert network_cost(load_genotype("DARTS_V2"), cfg).params == 3_349_342


@pytest.mark.parametrize("name,params,flops,multipliers", [("NASNet", 3_830_950, 614_004_768, (5, 3)),
                                                          ("AmoebaNet", 3_145_078, 497_861_856, (3, 3)),
                                                          ("PC_DARTS", 3_634_678, 567_434_880, (4, 4))])  # PC-DARTS paper: 3.6M
def test_paper_baselines_at_darts_cifar_size(name, params, flops, multipliers):
    """NASNet-A and AmoebaNet-A as DARTS' NetworkCIFAR builds them (C=36, 20 cells): 5 intermediate nodes, a
    cell's output is its concatenated nodes (5 or 3 x C channels, normal and reduction cells differing), and
    the ops outside the search space (sep_conv_7x7, conv_7x1_1x7); PC-DARTS' published cell beside them. The
    analytic counter equals fvcore."""
    cfg = NetConfig(C=36, layers=20, num_classes=10)
    g = load_genotype(name)
    net = build_network(g, cfg).eval()
    a, f = network_cost(g, cfg), fvcore_cost(net, 32, 3)
    assert (a.params, a.flops) == (f.params, f.flops) == (params, flops)
    assert sum(p.numel() for p in net.parameters()) == params
    normal, reduce = multipliers
    after_reduce = net.cells[cfg.layers // 3 + 1].preprocess1[1]  # reads the reduction cell's output
    after_normal = net.cells[1].preprocess1[1]
    assert (after_reduce.in_channels, after_normal.in_channels) == (reduce * 2 * 36, normal * 36)
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_nb201_reference_params():
    cfg = NetConfig(C=16, layers=5, num_classes=10)
    g = load_genotype("NB201_REF")
    assert sum(p.numel() for p in build_network(g, cfg).parameters()) == 1_073_466
    assert network_cost(g, cfg).params == 1_073_466


def test_auxiliary_head_not_counted_and_trains():
    cfg = NetConfig(C=8, layers=6, num_classes=10, auxiliary=True)
    g = load_genotype("DARTS_V2")
    net = build_network(g, cfg).train()
    logits, aux = net(torch.randn(2, 3, 32, 32))
    assert logits.shape == aux.shape == (2, 10)
    assert fvcore_cost(net, 32, 3).params == network_cost(g, cfg).params
    assert net.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)


GENOTYPES = ["DARTS_V1", "DARTS_V2", "PC_DARTS", "NASNet", "AmoebaNet", "NB201_REF"] + [f"random-{s}-{i}" for s in ("darts", "nb201") for i in range(3)]


def _genotype(name):
    if name.startswith("random-"):
        _, space, seed = name.split("-")
        return random_genotype(space, random.Random(int(seed)))
    return load_genotype(name)


@pytest.mark.parametrize("name", GENOTYPES)
@pytest.mark.parametrize("dataset", ["cifar10", "fashion-mnist", "imagenet16-120"])
def test_analytic_equals_fvcore(name, dataset):
    g = _genotype(name)
    spec = DATASETS[dataset]
    cfg = NetConfig(C=8, layers=6 if g.space == "darts" else 2, num_classes=spec.num_classes,
                    in_channels=spec.in_channels, input_size=spec.size)
    net = build_network(g, cfg)
    assert net.eval()(torch.randn(1, spec.in_channels, spec.size, spec.size)).shape == (1, spec.num_classes)
    a, f = network_cost(g, cfg), fvcore_cost(net, spec.size, spec.in_channels)
    assert a.params == f.params
    m = module_graph_counts(net)
    assert (a.layers, a.channels, a.avgpools) == (m.layers, m.channels, m.avgpools)
    assert abs(a.flops - f.flops) <= 0.01 * f.flops


@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_every_dataset_preset_builds(dataset):
    """Each preset at its paper default size (ImageNet stem from 64 px up) matches fvcore."""
    spec = DATASETS[dataset]
    g = load_genotype("DARTS_V2")
    cfg = default_config("darts", in_channels=spec.in_channels, input_size=spec.size, num_classes=spec.num_classes,
                         C=8 if spec.size < 64 else None, layers=5 if spec.size < 64 else None)
    a, f = network_cost(g, cfg), fvcore_cost(build_network(g, cfg), spec.size, spec.in_channels)
    assert (a.params, a.flops) == (f.params, f.flops)
