"""Data losses read a tensor, an iterable (DataLoader, list, generator function), an iterator or a sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from bgflow_sci import BoltzmannGenerator
from bgflow_sci.distributions import Normal
from bgflow_sci.energies import DoubleWell2D
from bgflow_sci.flows import VectorField, real_nvp
from bgflow_sci.training import FlowMatching, ForceMatching, MaximumLikelihood, Trainer, as_batch_source, ml_then_kl

F64 = torch.float64


def gaussian(dim: int = 2) -> Normal:
    return Normal(dim, mean=torch.tensor([0.5, -1.0][:dim]), std=torch.tensor([1.5, 0.5][:dim])).double()


# ------------------------------------------------------------------------------------------------ the helper
def test_tensor_source_draws_the_same_rows_as_before():
    data, ctx = torch.randn(50, 2), torch.randn(50, 1)
    source = as_batch_source(data, 8, ("x", "weights", "context"), {"context": ctx})
    assert not source.streamed and source.kind == "tensor"
    torch.manual_seed(4)
    batch = source()
    torch.manual_seed(4)
    idx = torch.randint(50, (8,))
    assert torch.equal(batch["x"], data[idx]) and torch.equal(batch["context"], ctx[idx]) and batch["weights"] is None
    whole = as_batch_source(data, None, ("x", "context"), {"context": ctx})()
    assert whole["x"] is data and whole["context"] is ctx
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a = as_batch_source(data, 8, generator=gen_a)()["x"]
    assert torch.equal(a, data[torch.randint(50, (8,), generator=gen_b)])


def test_iterables_restart_and_iterators_run_out():
    batches = [torch.full((3, 2), float(i)) for i in range(3)]
    source = as_batch_source(batches, None)
    seen = [source()["x"][0, 0].item() for _ in range(7)]
    assert seen == [0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0] and source.kind == "iterable"

    def epoch():
        yield from batches[:2]

    source = as_batch_source(epoch, 4)
    assert [source()["x"][0, 0].item() for _ in range(5)] == [0.0, 1.0, 0.0, 1.0, 0.0]
    assert source.kind == "generator function"

    one_shot = as_batch_source(iter(batches), 4)
    assert one_shot.kind == "iterator"
    for _ in range(3):
        one_shot()
    with pytest.raises(RuntimeError, match="exhausted after 3 batches.*one-shot"):
        one_shot()
    with pytest.raises(RuntimeError, match="no batches"):
        as_batch_source([], 4)()


def test_batch_forms_tuples_lists_mappings():
    x, w = torch.randn(4, 2), torch.rand(4)
    fields = ("x", "weights", "context")
    assert as_batch_source([(x, w)], None, fields)()["weights"] is w
    loader_batch = as_batch_source([[x]], None, fields)()
    assert loader_batch["x"] is x and loader_batch["weights"] is None and loader_batch["context"] is None
    assert as_batch_source([{"x": x, "context": w[:, None]}], None, fields)()["context"].shape == (4, 1)
    with pytest.raises(ValueError, match="unknown fields"):
        as_batch_source([{"x": x, "force": x}], None, fields)()
    with pytest.raises(ValueError, match="1 to 3 items"):
        as_batch_source([(x, w, w, w)], None, fields)()
    with pytest.raises(TypeError, match="must be a Tensor"):
        as_batch_source([(x, np.ones(4))], None, fields)()
    with pytest.raises(ValueError, match="'x' tensor"):
        as_batch_source([(None, w)], None, fields)()


def test_sampler_is_called_with_the_batch_size():
    calls = []

    def sampler(n):
        calls.append(n)
        return torch.zeros(n, 2)

    source = as_batch_source(sampler, 16)
    assert source()["x"].shape == (16, 2) and calls == [16] and source.kind == "sampler"
    with pytest.raises(ValueError, match="needs a batch_size"):
        as_batch_source(sampler, None)


def test_bad_sources_raise():
    with pytest.raises(TypeError, match="numpy"):
        as_batch_source(np.zeros((4, 2)), 2)
    with pytest.raises(TypeError, match="must be a Tensor, an iterable"):
        as_batch_source(3.0, 2)
    with pytest.raises(ValueError, match="separate tensors"):
        as_batch_source([torch.zeros(2, 2)], 2, ("x", "context"), {"context": torch.zeros(2, 1)})
    with pytest.raises(ValueError, match="rows"):
        as_batch_source(torch.zeros(4, 2), 2, ("x", "context"), {"context": torch.zeros(3, 1)})
    with pytest.raises(ValueError, match="batch_size"):
        as_batch_source(torch.zeros(4, 2), 0)


# ------------------------------------------------------------------------------------------ maximum likelihood
def test_maximum_likelihood_tensor_path_is_unchanged():
    model, data = gaussian(), torch.randn(100, 2, dtype=F64)
    torch.manual_seed(2)
    value = MaximumLikelihood(model, data, batch_size=32)()
    torch.manual_seed(2)
    idx = torch.randint(100, (32,))
    assert torch.equal(value, -model.log_prob(data[idx]).mean())


def test_maximum_likelihood_from_a_dataloader_equals_the_full_data_mean():
    model, data = gaussian(), torch.randn(96, 2, dtype=F64)
    loss = MaximumLikelihood(model, DataLoader(TensorDataset(data), batch_size=32, shuffle=False))
    values = torch.stack([loss() for _ in range(3)])  # one epoch
    torch.testing.assert_close(values.mean(), -model.log_prob(data).mean())
    torch.testing.assert_close(loss(), values[0])  # a new epoch starts over
    with pytest.raises(ValueError, match=r"data batch must have shape \(batch, 2\)"):
        MaximumLikelihood(model, [torch.zeros(4, 3, dtype=F64)])()
    with pytest.raises(ValueError, match=r"weights must have shape \(4,\).*\(x, None, context\)"):
        MaximumLikelihood(model, [(torch.zeros(4, 2, dtype=F64), torch.zeros(4, 1, dtype=F64))])()


def test_weighted_maximum_likelihood_tensor_and_generator_function():
    model, data, w = gaussian(), torch.randn(64, 2, dtype=F64), torch.rand(64, dtype=F64)
    torch.manual_seed(0)
    value = MaximumLikelihood(model, data, batch_size=16, weights=w)()
    torch.manual_seed(0)
    idx = torch.randint(64, (16,))
    torch.testing.assert_close(value, -(w[idx] * model.log_prob(data[idx])).sum() / w[idx].sum())

    def weighted_batches():
        for i in range(0, 64, 16):
            yield data[i : i + 16], w[i : i + 16]

    loss = MaximumLikelihood(model, weighted_batches)
    values = [loss() for _ in range(5)]
    torch.testing.assert_close(values[1], -(w[16:32] * model.log_prob(data[16:32])).sum() / w[16:32].sum())
    torch.testing.assert_close(values[4], values[0])  # restarted
    with pytest.raises(ValueError, match="weights must be non-negative"):
        MaximumLikelihood(model, data, weights=-w)


def test_maximum_likelihood_sampler_and_one_shot_iterator():
    target = DoubleWell2D()
    bg = BoltzmannGenerator(Normal(2), real_nvp(2, 2, hidden=(8,)), target)
    calls = []

    def sampler(n):
        calls.append(n)
        return target.sample_exact(n)

    assert torch.isfinite(MaximumLikelihood(bg, sampler, batch_size=24)()) and calls == [24]
    loss = MaximumLikelihood(bg, (target.sample_exact(8) for _ in range(2)))
    loss(), loss()
    with pytest.raises(RuntimeError, match="exhausted after 2 batches"):
        loss()


def test_ml_then_kl_trains_from_a_sampler():
    torch.manual_seed(0)
    target = DoubleWell2D()
    bg = BoltzmannGenerator(Normal(2), real_nvp(2, 4, hidden=(16,)), target)
    trainer = ml_then_kl(bg, target.sample_exact, 150, 0, batch_size=128, lr=3e-3, progress=False)
    trainer.train(150)
    first = np.mean([h["loss/ml"] for h in trainer.history[:10]])
    last = np.mean([h["loss/ml"] for h in trainer.history[-10:]])
    assert last < first - 0.5  # from ~4.6 nats (standard normal on the double well) towards its entropy


# --------------------------------------------------------------------------------------------- flow matching
def test_flow_matching_tensor_path_is_unchanged():
    data = torch.randn(200, 2)
    field = VectorField(2, hidden=(8,))
    torch.manual_seed(3)
    value = FlowMatching(field, Normal(2), data, batch_size=32)()
    torch.manual_seed(3)
    idx = torch.randint(200, (32,))
    x1 = data[idx]
    x0 = Normal(2).sample(32)
    t = torch.rand(32, 1)
    expected = (field(t[:, 0], (1 - t) * x0 + t * x1) - (x1 - x0)).pow(2).sum(-1).mean()
    assert torch.equal(value, expected)


def test_flow_matching_from_sampler_dataloader_and_context_batches():
    target = DoubleWell2D()
    fm = FlowMatching(VectorField(2, hidden=(8,)), Normal(2), target.sample_exact, batch_size=40, coupling="ot")
    x0, x1, ctx = fm.sample_pairs()
    assert x0.shape == x1.shape == (40, 2) and ctx is None
    loader = DataLoader(TensorDataset(torch.randn(30, 2), torch.randn(30, 1)), batch_size=12)
    fm = FlowMatching(VectorField(2, context_dim=1, hidden=(8,)), Normal(2), loader)
    sizes = [len(fm.sample_pairs()[1]) for _ in range(4)]
    assert sizes == [12, 12, 6, 12]  # the last, short batch of each epoch is used as it comes
    assert torch.isfinite(fm())
    with pytest.raises(ValueError, match="context_dim=1"):
        FlowMatching(VectorField(2, context_dim=1), Normal(2), [torch.randn(5, 2)])()


def test_flow_matching_trains_from_a_generator_function():
    torch.manual_seed(0)
    target = DoubleWell2D()

    def stream():
        for _ in range(10):
            yield target.sample_exact(128)

    field = VectorField(2, hidden=(32, 32))
    trainer = Trainer(field, {"fm": FlowMatching(field, Normal(2), stream)}, lr=3e-3, progress=False)
    trainer.train(200)
    first = np.mean([h["loss/fm"] for h in trainer.history[:10]])
    last = np.mean([h["loss/fm"] for h in trainer.history[-10:]])
    assert last < 0.8 * first


# -------------------------------------------------------------------------------------------- force matching
def exact_gaussian_forces(model: Normal, x: torch.Tensor) -> torch.Tensor:
    """``∇ log q = -(x - μ) / σ²``."""
    return -(x - model.mean) / model.std**2


def test_force_matching_tensor_path_is_unchanged():
    model = gaussian()
    x = torch.randn(40, 2, dtype=F64)
    f = exact_gaussian_forces(model, x) + torch.randn(40, 2, dtype=F64)
    torch.manual_seed(1)
    value = ForceMatching(model, x, f, batch_size=8)()
    torch.manual_seed(1)
    idx = torch.randint(40, (8,))
    torch.testing.assert_close(value, (exact_gaussian_forces(model, x[idx]) - f[idx]).pow(2).sum(-1).mean())


def test_force_matching_from_batches_of_positions_and_forces():
    model = gaussian()

    def md_sampler(n):  # an "MD run" reporting positions and exact forces
        x = torch.randn(n, 2, dtype=F64)
        return x, exact_gaussian_forces(model, x)

    assert ForceMatching(model, md_sampler, batch_size=16)().item() < 1e-20

    x = torch.randn(20, 2, dtype=F64)
    shifted = exact_gaussian_forces(model, x) + 0.5
    loader = DataLoader(TensorDataset(x, shifted), batch_size=10)
    loss = ForceMatching(model, loader)
    assert [round(loss().item(), 12) for _ in range(3)] == [0.5, 0.5, 0.5]  # |0.5|² summed over 2 coordinates
    with pytest.raises(ValueError, match="no forces"):
        ForceMatching(model, [x])()
    with pytest.raises(ValueError, match="forces_kT are needed"):
        ForceMatching(model, x)
