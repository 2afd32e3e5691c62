"""Every op of the ONE table: output shape, and analytic cost == the real module's."""
import pytest
import torch

from dcanas.nets.cost import OP_COSTS, fvcore_cost, module_graph_counts, op_cost
from dcanas.nets.ops import OPS, SPACE_OPS, build_op


def test_cost_table_matches_ops_table():
    assert set(OP_COSTS) == set(OPS)
    for ops in SPACE_OPS.values():
        assert set(ops) <= set(OPS)


class _Wrap(torch.nn.Module):
    def __init__(self, op):
        super().__init__()
        self.op = op

    def forward(self, x):
        return self.op(x)


@pytest.mark.parametrize("name", sorted(OPS))  # the search spaces' ops and the baselines' (sep_conv_7x7, conv_7x1_1x7)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("channels", [(8, 8), (6, 10)])
@pytest.mark.parametrize("size", [8, 7])
def test_op_shape_and_cost(name, stride, channels, size):
    C_in, C_out = channels
    op = build_op(name, C_in, C_out, stride).eval()
    x = torch.randn(2, C_in, size, size)
    y = op(x)
    out = (size - 1) // stride + 1
    assert y.shape == (2, C_out, out, out)
    analytic = op_cost(name, C_in, C_out, stride, size)
    assert analytic.params == sum(p.numel() for p in op.parameters())
    g = module_graph_counts(op)  # the counts the model-size model reads
    assert (analytic.layers, analytic.channels, analytic.avgpools) == (g.layers, g.channels, g.avgpools)
    # Identity and none have no weights to trace through; fvcore counts 0 for them as we do.
    real = fvcore_cost(_Wrap(op), size, C_in)
    assert analytic.flops == real.flops


def test_avg_pool_excludes_padding_like_torch():
    x = torch.randn(2, 4, 9, 9)
    for stride in (1, 2):
        ref = torch.nn.AvgPool2d(3, stride, padding=1, count_include_pad=False)(x)
        assert torch.allclose(build_op("avg_pool_3x3", 4, 4, stride)(x), ref, atol=1e-6)


def test_unknown_op_names_valid_ones():
    with pytest.raises(KeyError, match="valid ops"):
        build_op("conv_9x9", 4, 4, 1)
