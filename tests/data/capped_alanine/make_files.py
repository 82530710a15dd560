"""Regenerate the Amber (prmtop/inpcrd) and GROMACS (top/gro) files of capped alanine (ACE-ALA-NME) used by
tests/workflows/test_config_system.py: amber14-all parameters, vacuum, written by ParmEd from the OpenMM System.

    pip install parmed==4.3.1 && python tests/data/capped_alanine/make_files.py
"""

from pathlib import Path

import parmed
from openmm import app

here = Path(__file__).resolve().parent
pdb = app.PDBFile(str(here.parents[2] / "data" / "alanine_dipeptide" / "alanine_dipeptide.pdb"))
system = app.ForceField("amber14-all.xml").createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None)
structure = parmed.openmm.load_topology(pdb.topology, system, xyz=pdb.positions)
structure.save(str(here / "ala2.prmtop"), overwrite=True)
structure.save(str(here / "ala2.inpcrd"), overwrite=True)
structure.save(str(here / "ala2.top"), overwrite=True)
structure.save(str(here / "ala2.gro"), overwrite=True)
