"""Files on disk: checkpoints (one format, ``weights_only`` loading) and trajectories (mdtraj)."""

from .checkpoints import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .trajectories import as_mdtraj_topology, read_trajectory, write_trajectory

__all__ = [
    "CheckpointError",
    "as_mdtraj_topology",
    "load_checkpoint",
    "read_trajectory",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
    "write_trajectory",
]
