"""Flow factories share one convention: ``factory(dim, n_layers, *, options)``, ``n_layers`` transforms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bgflow_sci.flows import (
    ActNorm,
    AffineCoupling,
    Coupling,
    Domain,
    MaskedAutoregressive,
    Permutation,
    Sequential,
    half_mask,
    neural_spline_flow,
    real_nvp,
)
from bgflow_sci.hep.variable_model import conditional_autoregressive_flow

MIXED = [Domain.real(), Domain.interval(-1.0, 2.0), Domain.circle()]


def count(flow: Sequential, kind: type) -> int:
    return sum(isinstance(layer, kind) for layer in flow)


@pytest.mark.parametrize("n_layers", [1, 3, 8])
def test_factories_build_n_layers_transforms(n_layers):
    flow = real_nvp(3, n_layers, hidden=(8,), context_dim=2, actnorm=True)
    assert len(flow) == n_layers + 1 and count(flow, AffineCoupling) == n_layers and isinstance(flow[-1], ActNorm)
    for i, layer in enumerate(flow.flows[:-1]):  # alternating halves, second half first
        assert torch.equal(layer.transformed, half_mask(3, second=i % 2 == 0).nonzero().flatten())
    assert flow.context_dim == 2

    nsf = neural_spline_flow(3, n_layers, domains=MIXED, n_bins=4, hidden=(8,), context_dim=1)
    assert len(nsf) == count(nsf, Coupling) == n_layers and nsf.context_dim == 1

    caf = conditional_autoregressive_flow(3, n_layers, context_dim=2, transformer="spline", hidden=(8,))
    assert count(caf, MaskedAutoregressive) == n_layers
    assert all(isinstance(layer, (MaskedAutoregressive, Permutation)) for layer in caf)
    x, c = 0.9 * torch.rand(5, 3), torch.randn(5, 2)  # inside every domain of MIXED
    for f, ctx in ((flow, c), (nsf, c[:, :1]), (caf, c)):
        y, logdet = f(x, ctx)
        assert y.shape == (5, 3) and logdet.shape == (5,)


def test_real_nvp_is_the_former_pairs_of_couplings_with_the_same_seeded_initialisation():
    """``real_nvp(dim, 2 k)`` is exactly the former ``real_nvp(dim, n_blocks=k)``: layers, order, initial weights."""

    def former(dim: int, n_blocks: int, hidden, context_dim: int = 0) -> Sequential:
        layers = []
        for _ in range(n_blocks):
            for second in (True, False):
                layers.append(AffineCoupling(dim, half_mask(dim, second), hidden, context_dim, activation=nn.SiLU))
        return Sequential(*layers)

    torch.manual_seed(7)
    old = former(4, 3, (16, 16), context_dim=1)
    torch.manual_seed(7)
    new = real_nvp(4, 6, hidden=(16, 16), context_dim=1)
    old_state, new_state = old.state_dict(), new.state_dict()
    assert list(old_state) == list(new_state)
    assert all(torch.equal(old_state[k], new_state[k]) for k in old_state)
    # and the default is the former default (4 pairs = 8 couplings)
    assert len(real_nvp(2)) == 8


def test_options_are_keyword_only_and_bad_positional_arguments_say_so():
    with pytest.raises(TypeError):
        real_nvp(2, 4, (8,))  # hidden is keyword-only
    with pytest.raises(TypeError, match=r"n_layers must be an integer.*\(dim, n_layers, \*, options\)"):
        neural_spline_flow(2, Domain.circle())  # the former (dim, domains, n_layers) order
    with pytest.raises(TypeError):
        real_nvp(2, n_blocks=4)  # the former pair count
    with pytest.raises(TypeError):
        conditional_autoregressive_flow(3, 2, "affine")  # context_dim and transformer are keyword-only
    with pytest.raises(ValueError, match="n_layers must be positive"):
        real_nvp(2, 0)
    with pytest.raises(ValueError, match="dim must be positive"):
        neural_spline_flow(0, 2)
    assert len(real_nvp(torch.tensor(2).item(), torch.tensor(2))) == 2  # integer-like values are fine
