"""``bgflow-sci morph {train,apply,report}``: MDMM morphing of MC to data on ROOT files
(:mod:`bgflow_sci.workflows.morph`).

::

    bgflow-sci morph train --mc mc.root:events --data data.root:events --vars r9_1 sieie_1 iso_1 \\
        --context pt_1 eta_1 --kinds r9_1=logit sieie_1=log iso_1=spike pt_1=log --out model.pt
    bgflow-sci morph apply model.pt --in mc.root:events --out mc_corrected.root
    bgflow-sci morph report --data data.root:events --corrected mc_corrected.root:events --model model.pt --out report/
"""

from __future__ import annotations

import argparse
from typing import Any

from ._common import print_json


def _train(args: argparse.Namespace) -> int:
    from ..workflows.morph import train_morphing

    print_json(
        train_morphing(
            args.mc,
            args.data,
            args.vars,
            args.context,
            args.kinds,
            args.out,
            derive=args.derive,
            feature_weight=args.feature_weight,
            holdout=args.holdout,
            holdout_key=args.holdout_key,
            validation=args.validation,
            validate_every=args.validate_every,
            ensemble=args.ensemble,
            tree=args.tree,
            overwrite=args.overwrite,
            cut=args.cut,
            mc_weight=args.mc_weight,
            data_weight=args.data_weight,
            transformer=args.transformer,
            layers=args.layers,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            eval_batches=args.eval_batches,
            log=args.log,
            seed=args.seed,
            threads=args.threads,
            progress=not args.no_progress,
            checkpoint_every=args.checkpoint_every or None,
            resume=args.resume,
        )
    )
    return 0


def _many(args: argparse.Namespace) -> bool:
    """Several inputs, a glob or a folder as --out: the Dask path (one output per input)."""
    import glob
    from pathlib import Path

    single = len(args.input) == 1 and not glob.has_magic(args.input[0].rpartition(":")[0] or args.input[0])
    return not single or args.out.endswith("/") or Path(args.out).is_dir()


def _apply(args: argparse.Namespace) -> int:
    common = dict(
        tree=args.tree,
        overwrite=args.overwrite,
        vars=args.vars,
        context=args.context,
        step_size=args.step_size,
        batch_size=args.batch_size,
        seed=args.seed,
        threads=args.threads,
        progress=not args.no_progress,
    )
    if _many(args):
        from ..workflows.morph_many import apply_many

        common["threads"] = args.threads or 1  # one torch thread per worker process unless asked otherwise
        summary = apply_many(
            args.model, args.input, args.out, workers=args.workers, scheduler=args.scheduler, **common
        )  # fmt: skip
    else:
        from ..workflows.morph import apply_morphing

        summary = apply_morphing(args.model, args.input[0], args.out, **common)
    print_json(summary)
    return 0


def _report(args: argparse.Namespace) -> int:
    from ..workflows.morph import morph_report

    summary = morph_report(
        args.data,
        args.corrected,
        model=args.model,
        vars=args.vars,
        context=args.context,
        out=args.out,
        tree=args.tree,
        cut=args.cut,
        mc_weight=args.mc_weight,
        data_weight=args.data_weight,
        mass=args.mass,
        mass_range=args.mass_range,
        events=args.events,
        floor=not args.no_floor,
        log_y=args.log_y,
        auc=not args.no_auc,
        auc_events=args.auc_events,
        mmd_events=args.mmd_events,
        permutations=args.permutations,
        seed=args.seed,
        threads=args.threads,
        progress=not args.no_progress,
    )
    print(summary["table"])
    for msg in summary["warnings"]:
        print(f"warning: {msg}")
    print(f"report: {args.out}/report.json, plots: {', '.join(p.rsplit('/', 1)[-1] for p in summary['plots'])}")
    return 0


def _example(args: argparse.Namespace) -> int:
    from ..hep.examples import write_example

    print_json(write_example(args.name, args.out, seed=args.seed, overwrite=args.overwrite))
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tree", default=None, help="tree name for files given without :TREE")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's default)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``morph train|apply|report`` to an ``argparse`` subparsers object; returns the ``morph`` parser."""
    morph = subparsers.add_parser(
        "morph",
        help="morph MC to data with an MDMM-trained conditional flow: train, apply (<branch>_corr), report",
        description=(
            "Sim-to-data morphing without pairs (Gendreau-Distler et al., arXiv:2504.12343): a conditional masked-"
            "autoregressive flow maps MC events to data-like events, trained with a transport cost subject to "
            "MMD^2 <= data-vs-data noise floor (MDMM).  train -> model file; apply -> new ROOT file with "
            "<var>_corr branches; report -> metrics JSON and PNG plots."
        ),
    )
    sub = morph.add_subparsers(dest="morph_command", required=True, metavar="{train,apply,report,example}")

    p = sub.add_parser("train", help="fit a morphing flow MC -> data and save it (names and preprocessing included)")
    p.add_argument("--mc", required=True, help="MC ROOT file (FILE:TREE or FILE with --tree)")
    p.add_argument("--data", required=True, help="data ROOT file (FILE:TREE or FILE with --tree)")
    p.add_argument("--vars", nargs="+", required=True, help="flat branches to correct")
    p.add_argument("--context", nargs="*", default=[], help="flat kinematic branches to condition on")
    p.add_argument(
        "--kinds", nargs="*", default=[], help="preprocessing NAME=KIND: identity, log, logit[:lo:hi], spike"
    )
    p.add_argument(
        "--derive",
        action="append",
        default=[],
        metavar="NAME=EXPR",
        help="derived observable over --vars/--context added to the MMD constraint, e.g. "
        "'mass=sqrt(2*pt1*pt2*(cosh(eta1-eta2)-cos(phi1-phi2)))' (repeatable; + - * / ** sqrt exp log sin cos tan "
        "sinh cosh tanh abs atan2 hypot min max); apply writes NAME_corr, report --mass NAME recomputes it",
    )
    p.add_argument("--feature-weight", type=float, default=1.0, help="weight of the derived observables in the MMD")
    p.add_argument(
        "--holdout",
        type=float,
        default=0.0,
        metavar="F",
        help="keep a random fraction F of the MC and data entries out of training (recorded in the model; "
        "`morph report` evaluates on them by default)",
    )
    p.add_argument(
        "--holdout-key",
        default=None,
        metavar="BRANCH",
        help="integer branch (e.g. an event number) that decides the split instead of the entry number, so that "
        "all rows of one event are held out together",
    )
    p.add_argument(
        "--validation",
        type=float,
        default=0.0,
        metavar="F",
        help="use a fraction F of the training events only to pick the best training step (recommended with small "
        "samples: the flow otherwise learns their fluctuations)",
    )
    p.add_argument("--validate-every", type=int, default=100, help="steps between validation scores (default 100)")
    p.add_argument(
        "--ensemble",
        type=int,
        default=1,
        metavar="K",
        help="train K models on bootstrap resamples (seeds seed..seed+K-1); apply writes the mean as <var>_corr "
        "and the member spread as <var>_corr_unc",
    )
    p.add_argument("--out", default="morph_model.pt", help="model file to write (default morph_model.pt)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from <out>.ckpt")
    p.add_argument(
        "--checkpoint-every", type=int, default=200, help="steps between checkpoints in <out>.ckpt (0: none)"
    )
    p.add_argument("--cut", default=None, help="selection applied to MC and data, e.g. '(pt_1 > 30)'")
    p.add_argument("--mc-weight", default=None, help="MC event-weight branch (negative weights allowed)")
    p.add_argument("--data-weight", default=None, help="data event-weight branch")
    p.add_argument("--transformer", default="affine", choices=["affine", "spline"], help="flow transformer")
    p.add_argument("--layers", type=int, default=4, help="autoregressive layers (default 4)")
    p.add_argument("--steps", type=int, default=2000, help="training steps (default 2000)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="MC and data events per step (default 1024, at most half the smaller sample; larger values are drawn "
        "with replacement)",
    )
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate")
    p.add_argument("--eval-batches", type=int, default=50, help="minibatch pairs for the final constraint check")
    p.add_argument("--log", default=None, help="JSON-lines metrics log (loss, MMD^2/eps, lambda per step)")
    _common(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("apply", help="write a new ROOT file: the input tree plus <var>_corr for every model variable")
    p.add_argument("model", help="model file written by `morph train`")
    p.add_argument(
        "--in",
        dest="input",
        nargs="+",
        required=True,
        help="ROOT file(s) to correct (FILE:TREE or FILE with --tree; globs such as 'mc/*.root:Events' allowed)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="new ROOT file (never the input); with several inputs, a glob or an existing folder: the folder for "
        "one <stem>_corr.root per input",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="several inputs: local Dask worker processes (default 2; 0: a plain loop without Dask)",
    )
    p.add_argument("--scheduler", default=None, metavar="ADDR", help="several inputs: a running Dask scheduler")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (never the input)")
    p.add_argument("--vars", nargs="+", default=None, help="optional check: must equal the model's variables")
    p.add_argument("--context", nargs="*", default=None, help="optional check: must equal the model's context")
    p.add_argument("--step-size", type=int, default=200_000, help="entries read per chunk (default 200000)")
    p.add_argument("--batch-size", type=int, default=65_536, help="events per flow evaluation (default 65536)")
    _common(p)
    p.set_defaults(func=_apply)

    p = sub.add_parser("report", help="metrics (W1, correlations, AUC, MMD) and plots: data vs MC vs corrected MC")
    p.add_argument(
        "--data", nargs="+", required=True, help="data ROOT file(s) (FILE:TREE or FILE with --tree; globs allowed)"
    )
    p.add_argument(
        "--corrected", nargs="+", required=True, help="output(s) of `morph apply` (FILE:TREE; several or a glob)"
    )
    p.add_argument("--model", default=None, help="model file: takes --vars/--context from it")
    p.add_argument("--vars", nargs="+", default=None, help="corrected variables (read <var> and <var>_corr)")
    p.add_argument("--context", nargs="*", default=None, help="kinematic variables included in the metrics")
    p.add_argument("--out", default="morph_report", help="folder for report.json and the PNG plots")
    p.add_argument("--cut", default=None, help="selection applied to both samples")
    p.add_argument("--mc-weight", default=None, help="MC event-weight branch")
    p.add_argument("--data-weight", default=None, help="data event-weight branch")
    p.add_argument("--mass", default=None, help="also plot this branch (e.g. the diphoton mass) for the 3 samples")
    p.add_argument("--mass-range", type=float, nargs=2, default=None, metavar=("LO", "HI"), help="mass plot range")
    p.add_argument(
        "--events",
        default="auto",
        choices=["auto", "holdout", "all"],
        help="auto (default): the entries the model's --holdout kept out of training, for files that are the "
        "training files; holdout: require that; all: every event",
    )
    p.add_argument("--no-floor", action="store_true", help="skip the data-vs-data floor row")
    p.add_argument("--log-y", nargs="*", default=[], help="variables plotted with a log y axis")
    p.add_argument("--no-auc", action="store_true", help="skip the classifier two-sample test")
    p.add_argument("--auc-events", type=int, default=20_000, help="events per class for the classifier")
    p.add_argument("--mmd-events", type=int, default=2000, help="events per sample for the MMD test")
    p.add_argument("--permutations", type=int, default=200, help="permutations of the MMD p-value (default 200)")
    _common(p)
    p.set_defaults(func=_report)

    p = sub.add_parser(
        "example",
        help="write mc.root and data.root of a real-events example (hzz-zmumu, zmumu-closure) to try the commands",
        description="hzz-zmumu: simulated H->ZZ muon pairs (MC) and CMS 2010 Z->mumu data; zmumu-closure: the Z->mumu "
        "data split by event in halves, one distorted by a known correlated momentum map (truth kept as *_true). "
        "Flat trees 'events': pt1 eta1 phi1 charge1 pt2 eta2 phi2 charge2 mass weight event_id.",
    )
    p.add_argument("name", choices=["hzz-zmumu", "zmumu-closure"])
    p.add_argument("--out", required=True, help="folder for mc.root and data.root")
    p.add_argument("--seed", type=int, default=0, help="zmumu-closure: which events go to which half")
    p.add_argument("--overwrite", action="store_true", help="replace existing mc.root/data.root")
    p.set_defaults(func=_example)
    return morph
