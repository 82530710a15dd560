"""Hot loops without device-to-host round trips: every ``bool()``/``float()``/``int()``/``.item()``/``.tolist()`` of
a tensor made by package code is counted (on the CPU these are what become synchronisations on a GPU)."""

from __future__ import annotations

import collections
import traceback
from pathlib import Path

import pytest
import torch

import bgflow_sci
from bgflow_sci import BoltzmannGenerator
from bgflow_sci.distributions import Normal
from bgflow_sci.energies import DoubleWell2D
from bgflow_sci.flows import OverdampedLangevinBlock, Sequential, neural_spline_flow, real_nvp
from bgflow_sci.samplers import HMC, MALA, Sampler, UnderdampedLangevin
from bgflow_sci.training import MaximumLikelihood, ReverseKL, Trainer

PACKAGE = str(Path(bgflow_sci.__file__).parent)


@pytest.fixture
def host_syncs(monkeypatch):
    """A counter of tensor-to-Python conversions called from package code, by ``file:line``."""
    sites: collections.Counter = collections.Counter()
    for name in ("item", "__bool__", "__float__", "__int__", "tolist"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            caller = traceback.extract_stack(limit=2)[0]
            if caller.filename.startswith(PACKAGE):
                sites[f"{Path(caller.filename).name}:{caller.lineno}"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return sites


def _generator(flow):
    torch.manual_seed(0)
    return BoltzmannGenerator(Normal(2), flow, DoubleWell2D())


@pytest.mark.parametrize("flow", ["real_nvp", "spline"])
def test_a_training_step_has_one_host_sync(flow, host_syncs):
    bg = _generator(real_nvp(2, 4, hidden=(16,)) if flow == "real_nvp" else neural_spline_flow(2, 4, hidden=(16,)))
    losses = {"ml": MaximumLikelihood(bg, torch.randn(300, 2), 64), "kl": ReverseKL(bg, 64)}
    trainer = Trainer(bg, losses, progress=False, log_every=1000)
    trainer.train(2)  # the logged first step, the optimizer's lazy state
    with bgflow_sci.checks(False):  # the spline domain checks synchronise once per call when on
        host_syncs.clear()
        trainer.train(5)
    assert sum(host_syncs.values()) == 5 + 1, host_syncs  # the skip decision per step + the final step's log record


def test_sampling_and_stochastic_layers_do_not_sync(host_syncs):
    target = DoubleWell2D()
    snf = _generator(Sequential(real_nvp(2, 2, hidden=(16,)), OverdampedLangevinBlock(target, 2, 0.01, 3)))
    with torch.no_grad():
        snf.sample_with_log_weights(16)
        host_syncs.clear()
        snf.sample_with_log_weights(256)
        snf.sample_with_log_prob(256)
    assert not host_syncs, host_syncs


@pytest.mark.parametrize("kernel", ["mala", "hmc", "underdamped"])
def test_mcmc_steps_do_not_sync(kernel, host_syncs):
    target = DoubleWell2D()
    k = {"mala": lambda: MALA(target, 0.05), "hmc": lambda: HMC(target, 0.05, 5),
         "underdamped": lambda: UnderdampedLangevin(target, 0.01)}[kernel]()  # fmt: skip
    sampler = Sampler(k, torch.randn(64, 2), seed=0)
    sampler.run(2, progress=False)
    host_syncs.clear()
    sampler.run(3, progress=False)
    short = sum(host_syncs.values())
    host_syncs.clear()
    sampler.run(30, progress=False)
    assert sum(host_syncs.values()) == short <= 4, host_syncs  # only the run's end-of-run summary
