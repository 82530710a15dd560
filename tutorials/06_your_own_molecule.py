"""Tutorial 6 — your own molecule: from a PDB and force-field names to reweighted free energies and enhanced MD.

Run:  python tutorials/06_your_own_molecule.py [--quick] [--out DIR]

Nothing here is specific to the molecule: a structure file and the names of OpenMM force-field files in a config
file are the whole system. The steps, each one library call (the shell equivalent in brackets):

0. a PDB — here one is built for ACE-VAL-NME by :func:`bgflow_sci.io.peptides.build_capped_peptide`; use your own
   (or Amber ``{"prmtop", "inpcrd"}``, GROMACS ``{"top", "gro"}``, a serialized OpenMM ``{"system_xml", "pdb"}``),
1. a config file: ``topology``, ``forcefield``, ``temperature``, the reference MD to run, collective variables by
   atom names (``"<residue number>:<atom name>"``; every backbone φ/ψ by default) and free-energy regions as CV
   ranges (:func:`bgflow_sci.workflows.load_molecule` checks it and builds the OpenMM system),
2. reference MD with OpenMM, independent replicas in parallel, resumable (``bgflow-sci md CONFIG``),
3. a Boltzmann generator on internal coordinates, maximum likelihood on the MD frames then reverse KL against the
   batched torch force field (here amber14 with the GBn2 implicit solvent: a ``CustomGBForce`` compiled to torch),
   sampled and importance-weighted with the exact energy: ESS, ΔF between the regions and the profiles against
   the MD, with bootstrap errors (``bgflow-sci train CONFIG``; it runs step 2 itself when the MD is missing),
4. flow-enhanced MD: OpenMM Langevin segments plus Metropolis moves proposed by the flow and accepted with the exact
   energy (unbiased), reported as transitions between the config's regions (``bgflow-sci enhanced-md MODEL``).

What to change for your molecule: the PDB path and ``forcefield`` in step 1, the CVs and regions (names of atoms in
your file), ``md.ns`` (long enough to cross the barriers you care about) and the training lengths. The quick mode
(a 50 ps MD, a tiny flow) only checks that the pipeline runs; the full mode (2 × 2 ns MD, the default flow)
takes about an hour on one CPU core.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bgflow_sci.io.peptides import build_capped_peptide
from bgflow_sci.workflows import load_molecule, read_md, run_molecule_md
from bgflow_sci.workflows.enhanced_md import enhanced_md
from bgflow_sci.workflows.train import train

FORCEFIELD = ("amber14-all.xml", "implicit/gbn2.xml")


def main(quick: bool = False, out: str = "tutorial_out/your_own_molecule") -> dict:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)

    # 0. The structure. With your own PDB, skip this and point "topology" at your file.
    pdb = build_capped_peptide(["VAL"], out_dir / "ace_val_nme.pdb", forcefield=FORCEFIELD)

    # 1. The config file: relative paths resolve against its folder. ψ of valine (residue 2) separates α_R from
    #    β/PPII; χ1 (N-CA-CB-CG1) is a side-chain rotamer, a CV named by atoms alone.
    config = {
        "name": "ace_val_nme",
        "topology": Path(pdb).name,
        "forcefield": list(FORCEFIELD),
        "temperature": 300.0,
        "md": {
            "ns": 0.05 if quick else 2.0,
            "frame_ps": 0.1 if quick else 1.0,
            "replicas": 1 if quick else 2,
            "equilibration_ps": 1.0 if quick else 10.0,
            "seed": 0,
        },
        "collective_variables": {"backbone": True, "chi1_2": ["2:N", "2:CA", "2:CB", "2:CG1"]},
        "free_energy_regions": {"psi_2_beta_vs_alpha": {"a": {"psi_2": [-2.0, 1.0]}, "b": {"psi_2": [1.0, -2.0]}}},
    }
    if quick:  # a smoke test: a tiny flow and a few hundred steps
        config["model"] = {"n_layers": 2, "hidden": [16]}
        config["train"] = {"ml_steps": 150, "kl_steps": 20, "kl_batch_size": 64, "checkpoint_every": 100}
        config["evaluate"] = {"samples": 500, "batch_size": 500, "n_bootstrap": 10}
    else:
        config["train"] = {"ml_steps": 1500, "kl_steps": 4000}
    path = out_dir / "ace_val_nme.json"
    path.write_text(json.dumps(config, indent=2) + "\n")
    molecule = load_molecule(path)
    print(
        f"{molecule.name}: {molecule.n_atoms} atoms, forces {[type(f).__name__ for f in molecule.system.getForces()]}"
    )

    # 2. Reference MD (skipped when the folder already holds it; a killed run resumes where it stopped).
    md = read_md(run_molecule_md(molecule, progress=not quick))
    print(f"MD: {len(md['positions'])} frames, mean kinetic temperature {md['temperature'].mean():.1f} K")

    # 3. Train, sample and reweight. `results["reweighting"]` is what run/results.json holds.
    results = train(path, out_dir / "run", progress=not quick)
    rw = results["reweighting"]
    print(f"held-out NLL {results['heldout_nll']:.1f} nats; Kish ESS {rw['ess']:.4f} of {rw['samples']} samples")
    for name, entry in rw["delta_f"].items():  # the MD reference needs MD frames in both regions
        md_ref = f"{entry['reference']:.2f} ± {entry['reference_error']:.2f}" if "reference" in entry else "n/a"
        print(f"ΔF {name}: reweighted flow {entry['reweighted']:.2f} ± {entry['error']:.2f} kT, MD {md_ref} kT")
    for name, profile in rw["profiles"].items():
        diff = profile.get("vs_reference") or {}
        print(f"F({name}): rms distance to the MD profile {diff.get('rms', float('nan')):.2f} kT")

    # 4. Flow-enhanced MD from the trained model: the config's CVs and regions make its report.
    cycles, md_steps = (10, 20) if quick else (2000, 100)
    report = enhanced_md(
        out_dir / "run" / "model.pt", out_dir / "enhanced_md", cycles, md_steps=md_steps, progress=not quick
    )
    region = report["regions"]["psi_2_beta_vs_alpha"]
    print(
        f"flow-enhanced MD: acceptance {report['acceptance_rate']:.2f}, {region['transitions']} transitions "
        f"α_R ↔ β, β fraction {region['fraction_in_b']:.2f}"
    )
    chi1 = np.load(out_dir / "enhanced_md" / "cvs.npz")["cv_chi1_2"]  # per frame, beside the trajectory
    print(f"χ1 visited: [{chi1.min():.2f}, {chi1.max():.2f}] rad over {len(chi1)} frames")

    summary = {
        "n_atoms": molecule.n_atoms,
        "md_frames": len(md["positions"]),
        "heldout_nll": results["heldout_nll"],
        "ess": rw["ess"],
        "delta_f": rw["delta_f"],
        "profiles_vs_md": {k: v.get("vs_reference") for k, v in rw["profiles"].items()},
        "enhanced_md": report,
        "figures": [str(out_dir / "run" / n) for n in ("free_energy_psi_2.png", "map_phi_2_psi_2.png")],
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "enhanced_md"}, indent=2, default=float))
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default="tutorial_out/your_own_molecule")
    args = parser.parse_args()
    main(args.quick, args.out)
