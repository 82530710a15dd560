"""A small Boltzmann-generator training run for the torchrun tests (run as a script, one process per rank).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/_ddp_worker.py OUT [--kill-at K] [--resume]

Maximum likelihood then reverse KL (plus, with ``--constraint``, an MDMM constraint) on a 2D double well, global
batch 64, checkpoints every 3 steps into OUT; each rank writes ``OUT/rank<r>.pt`` (its parameters and multipliers).
``--kill-at K``: rank 0 SIGKILLs itself when it starts step K. Without torchrun it runs as one process.
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

import torch

from bgflow_sci import BoltzmannGenerator
from bgflow_sci.distributions import Normal
from bgflow_sci.energies import DoubleWell2D
from bgflow_sci.flows import real_nvp
from bgflow_sci.training import EqualityConstraint, MaximumLikelihood, ReverseKL, Trainer
from bgflow_sci.training.distributed import init_distributed

STEPS, ML_STEPS, BATCH = 12, 6, 64


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--kill-at", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--constraint", action="store_true")
    parser.add_argument("--actnorm", action="store_true", help="a data-dependent initialisation (rank 0's wins)")
    args = parser.parse_args()
    out = Path(args.out)
    torch.set_num_threads(1)
    with init_distributed("cpu") as ctx:
        torch.manual_seed(123 + ctx.rank)  # different initial parameters per rank: DDP must start from rank 0's
        bg = BoltzmannGenerator(Normal(2), real_nvp(2, 4, hidden=(16,), actnorm=args.actnorm), DoubleWell2D()).double()
        data = torch.randn(400, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        data = data * torch.tensor([0.3, 1.0], dtype=torch.float64) + torch.tensor([1.7, 0.0], dtype=torch.float64)
        losses = {"ml": MaximumLikelihood(bg, data, BATCH), "kl": ReverseKL(bg, BATCH)}
        weights = {"ml": lambda s: 1.0 if s < ML_STEPS else 0.1, "kl": lambda s: float(s >= ML_STEPS)}
        constraints = None
        if args.constraint:
            # damping 0: the term λ g is linear in the batch mean, so N ranks give exactly the single-process gradient
            nll = MaximumLikelihood(bg, data, BATCH)
            constraints = {"nll": EqualityConstraint(nll, damping=0.0, target=1.0, lr=0.05)}
        if args.kill_at is not None and ctx.rank == 0:
            ml = losses["ml"]

            def dying_ml() -> torch.Tensor:
                if trainer.step == args.kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                return ml()

            losses["ml"] = dying_ml
        trainer = Trainer(
            bg,
            losses,
            weights,
            lr=1e-2,
            constraints=constraints,
            checkpoint_path=out / "ckpt.pt",
            checkpoint_every=3,
            log_path=out / "metrics.jsonl",
            progress=False,
            seed=7,
        )
        if args.resume:
            trainer.load_checkpoint(out / "ckpt.pt")
        trainer.train(STEPS - trainer.step)
        state = {k: v.detach().clone() for k, v in bg.state_dict().items()}
        if constraints:
            state["multiplier"] = constraints["nll"].multiplier.detach().clone()
        torch.save(state, out / f"rank{ctx.rank}.pt")


if __name__ == "__main__":
    main()
