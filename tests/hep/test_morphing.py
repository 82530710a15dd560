"""Morphing flows: identity at init, conditioning, MDMM recovery of a known conditional shift with the constraint met,
flow quantile morphing of a 1D conditional Gaussian, variable checks, save/load, derived MMD features.  Runtime ≈ 30 s
(1 thread)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bgflow_sci.hep.morphing import MorphingFlow, fit_morphing
from bgflow_sci.hep.quantile_flow import FlowQuantileMorpher


def _shift(c: np.ndarray) -> np.ndarray:
    return np.concatenate([0.5 + 0.5 * c, np.full_like(c, -0.3)], 1)


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(0)
    n = 6000
    c_mc, c_d = rng.uniform(-1, 1, (n, 1)), rng.uniform(-1, 1, (n, 1))
    x_mc, x_d = rng.normal(size=(n, 2)), rng.normal(size=(n, 2)) + _shift(c_d)
    return x_mc, c_mc, x_d, c_d


@pytest.fixture(scope="module")
def trained(toy, device):
    x_mc, c_mc, x_d, c_d = toy
    torch.manual_seed(0)
    model = MorphingFlow(["a", "b"], ["c"], n_layers=2, hidden=(32, 32)).to(device)
    res = fit_morphing(model, x_mc, x_d, c_mc, c_d, steps=350, batch_size=256, lr=5e-3, damping=2.0, multiplier_lr=0.5)
    return model, res


@pytest.mark.parametrize("transformer", ["affine", "spline"])
def test_identity_at_init(transformer, device):
    rng = np.random.default_rng(1)
    x = np.abs(rng.normal(size=(200, 3))) + 0.1
    c = rng.normal(size=(200, 2))
    model = MorphingFlow(["p", "q", "r"], ["u", "v"], kinds=["log", "identity", "identity"], transformer=transformer)
    model = model.to(device)
    model.fit_preprocessing(torch.as_tensor(x).float().to(device), torch.as_tensor(c).float().to(device))
    y = torch.randn(50, 3).to(device)
    out, logdet = model(y, torch.randn(50, 2).to(device))
    torch.testing.assert_close(out.cpu(), y.cpu())
    torch.testing.assert_close(logdet.cpu(), torch.zeros(50))
    np.testing.assert_allclose(model.morph(x, c), x, rtol=1e-5)


def test_mdmm_recovers_conditional_shift_and_meets_constraint(trained):
    model, res = trained
    rng = np.random.default_rng(2)
    x, c = rng.normal(size=(2000, 2)), rng.uniform(-1, 1, (2000, 1))
    err = model.morph(x, c) - (x + _shift(c))
    assert np.abs(err.mean(0)).max() < 0.1
    assert np.sqrt((err**2).mean(0)).max() < 0.2
    # the multiplier history is logged, λ became active, the averaged MMD² is within the noise floor ε
    lam = res.multipliers
    assert len(lam) == 350 and lam.max() > 1.0 and (lam >= 0).all()
    assert all("mmd/g" in r and "mmd/value" in r for r in res.history)
    assert res.final["ratio"] < 1.15 and res.satisfied


def test_context_changes_the_map(trained):
    model, _ = trained
    x = np.random.default_rng(5).normal(size=(1000, 2))
    lo = model.morph(x, np.full((1000, 1), -0.8)).mean(0)
    hi = model.morph(x, np.full((1000, 1), 0.8)).mean(0)
    # the true shift of the first variable differs by 0.8 between c = -0.8 and c = +0.8, the second not at all
    assert abs((hi - lo)[0] - 0.8) < 0.15
    assert abs((hi - lo)[1]) < 0.15


def test_wrong_variables_refused(trained):
    model, _ = trained
    with pytest.raises(ValueError, match=r"\['a', 'b'\]"):
        model.morph({"a": np.zeros(3), "c": np.zeros(3)})
    with pytest.raises(ValueError, match="expects"):
        model.morph(np.zeros((3, 2)), np.zeros((3, 1)), names=["b", "a"])
    with pytest.raises(ValueError, match=r"\(n, 2\)"):
        model.morph(np.zeros((3, 3)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="context"):
        model.morph(np.zeros((3, 2)))


def test_save_load_roundtrip(trained, tmp_path, device):
    model, _ = trained
    path = model.save(tmp_path / "morph.pt")
    loaded = MorphingFlow.load(path).to(device)
    assert loaded.names == ["a", "b"] and loaded.context_names == ["c"]
    x, c = np.random.default_rng(3).normal(size=(100, 2)), np.zeros((100, 1))
    np.testing.assert_array_equal(loaded.morph(x, c), model.morph(x, c))
    out = loaded.morph({"a": x[:, 0], "b": x[:, 1], "c": c[:, 0]})
    np.testing.assert_allclose(out["b"], model.morph(x, c)[:, 1])
    with pytest.raises(ValueError, match="FlowQuantileMorpher"):
        FlowQuantileMorpher.load(path)


def test_flow_quantile_morphing_exact_map(tmp_path, device):
    # MC: x | c ~ N(c, 1); data: x | c ~ N(1 + 0.5 c, 0.8²)  =>  exact map x' = 1 + 0.5 c + 0.8 (x - c)
    rng = np.random.default_rng(4)
    n = 4000
    c_mc, c_d = rng.uniform(-1, 1, (n, 1)), rng.uniform(-1, 1, (n, 1))
    x_mc = c_mc + rng.normal(size=(n, 1))
    x_d = 1 + 0.5 * c_d + 0.8 * rng.normal(size=(n, 1))
    torch.manual_seed(0)
    fq = FlowQuantileMorpher(["x"], ["c"], transformer="affine", n_layers=1, hidden=(16,))
    fq.mc.to(device)
    fq.data.to(device)
    fq.fit(x_mc, x_d, c_mc, c_d, steps=500, batch_size=512, lr=1e-2)
    cg = np.repeat(np.linspace(-0.9, 0.9, 7), 7)[:, None]
    xg = cg + np.tile(np.linspace(-1.5, 1.5, 7), 7)[:, None]
    exact = 1 + 0.5 * cg + 0.8 * (xg - cg)
    np.testing.assert_allclose(fq.morph(xg, cg), exact, atol=0.12)
    loaded = FlowQuantileMorpher.load(fq.save(tmp_path / "fq.pt"))
    loaded.mc.to(device)
    loaded.data.to(device)
    np.testing.assert_allclose(loaded.morph(xg, cg), fq.morph(xg, cg), rtol=1e-6)
    with pytest.raises(ValueError, match=r"\['x'\]"):
        fq.morph({"y": xg[:, 0], "c": cg[:, 0]})


# ------------------------------------------------------------------------------- derived features in the MMD
def _narrow_sum(n: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """(u, v) with u ~ N(0, 1) and v = −u + noise·N(0, 1): the derived feature u + v is a narrow peak of width noise."""
    u = rng.normal(size=n)
    return np.stack([u, -u + noise * rng.normal(size=n)], 1)


def _sum_feature(x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    return (x[:, 0] + x[:, 1])[:, None]


def test_mmd_features_equal_the_mmd_on_concatenated_columns(device):
    from bgflow_sci.hep.morphing import MorphingObjective
    from bgflow_sci.training.mmd import mmd2

    rng = np.random.default_rng(6)
    n = 300  # batch = n: every minibatch is a permutation of the whole sample, MMD² is permutation invariant
    mc = np.abs(rng.normal(size=(n, 2))) + 0.5
    data = np.abs(rng.normal(1.0, 1.0, size=(n, 2))) + 0.5

    def feats(x, c):
        return torch.stack([x[:, 0] * x[:, 1], torch.log(x[:, 0] / x[:, 1])], 1)

    model = MorphingFlow(["p", "q"], kinds=["log", "log"], n_layers=1, hidden=(8,)).double().to(device)
    obj = MorphingObjective(model, mc, data, batch_size=n, mmd_features=feats, feature_weight=2.0)
    with torch.no_grad():
        value = obj.mmd2().item()  # identity at init: morphed MC = MC
    mc_t, data_t = torch.as_tensor(mc, device=device), torch.as_tensor(data, device=device)
    y_mc, _ = model.preprocess(mc_t, None)
    y_d, _ = model.preprocess(data_t, None)
    f_mc, f_d = feats(mc_t, None), feats(data_t, None)
    mu, sd = f_d.mean(0), f_d.std(0, unbiased=False)
    by_hand = mmd2(
        torch.cat([y_mc, 2.0 * (f_mc - mu) / sd], 1), torch.cat([y_d, 2.0 * (f_d - mu) / sd], 1), obj.kernel
    ).item()
    assert obj.f_data.shape == (n, 2)
    assert value == pytest.approx(by_hand, rel=1e-9)
    assert obj.derived_features(data_t).std(0, unbiased=False).cpu().numpy() == pytest.approx([2.0, 2.0])
    with pytest.raises(ValueError, match="columns"):
        MorphingObjective(model, mc, data, batch_size=n, mmd_features=lambda x, c: x[:5])


def test_mmd_features_reveal_and_fix_a_narrow_feature(device):
    # MC and data differ only in the width of the narrow peak u + v (0.3 vs 0.05): the MMD on (u, v) hardly sees it
    rng = np.random.default_rng(7)
    mc, data = _narrow_sum(2000, 0.3, rng), _narrow_sum(2000, 0.05, rng)
    plain = _identity_ratio(mc, data, None, device)
    hooked = _identity_ratio(mc, data, _sum_feature, device)
    assert plain < 2.0 and hooked > 20.0
    # trained with the feature in the constraint, the morphed MC gets the narrow peak (gradients flow through P⁻¹)
    torch.manual_seed(0)
    model = MorphingFlow(["u", "v"], n_layers=2, hidden=(32, 32)).to(device)
    res = fit_morphing(
        model, mc, data, steps=500, batch_size=256, lr=5e-3, multiplier_lr=0.5, mmd_features=_sum_feature
    )
    x = model.morph(mc)
    assert (x[:, 0] + x[:, 1]).std() < 0.1
    # both constraints: the joint MMD and the feature's own (which the joint one barely sees)
    assert set(res.trainer.constraints) == {"mmd", "mmd_derived"}
    assert res.final["ratio"] < 1.3 and res.final["feature_ratio"] < 1.3 and res.satisfied


def _identity_ratio(mc: np.ndarray, data: np.ndarray, features, device: torch.device) -> float:
    """Averaged MMD²/ε of the identity map (MC against data) with or without derived features."""
    from bgflow_sci.hep.morphing import MorphingObjective

    torch.manual_seed(0)
    model = MorphingFlow(["u", "v"], n_layers=1, hidden=(8,)).to(device)
    return MorphingObjective(model, mc, data, batch_size=256, mmd_features=features).evaluate(20)["ratio"]
