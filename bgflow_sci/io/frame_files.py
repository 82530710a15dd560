"""Frame files that grow by appending and can be cut back to a committed length (crash-safe MD output).

``forces.npy``: an ``.npy`` file with a fixed 256-byte header whose shape is rewritten in place on append; DCD
positions (Å, as CHARMM/NAMD write them; ``NSET`` updated on append); a CSV energy log with a header row. Each has
``*_append``, a frame count and ``*_truncate`` to a given number of frames; :func:`write_json_atomic` replaces a JSON
file atomically (temporary file, then ``os.replace``). Used by :mod:`bgflow_sci.workflows.md`.
"""

from __future__ import annotations

import csv
import json
import math
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

#: columns of the energy log: time (ps), potential and kinetic energy (kJ/mol), instantaneous temperature (K)
ENERGY_COLUMNS = ("time_ps", "potential_kjmol", "kinetic_kjmol", "temperature_k")
NPY_HEADER = 256  # fixed header length of forces.npy, so appending only rewrites the shape in place


def npy_header(shape: tuple[int, ...]) -> bytes:
    text = repr({"descr": "<f4", "fortran_order": False, "shape": tuple(shape)})
    head = b"\x93NUMPY\x01\x00" + struct.pack("<H", NPY_HEADER - 10)
    body = text.encode("latin1").ljust(NPY_HEADER - 10 - 1) + b"\n"
    return head + body


def npy_frames(path: Path, frame_shape: tuple[int, ...]) -> int:
    if not path.is_file():
        return 0
    size = path.stat().st_size - NPY_HEADER
    frame_bytes = 4 * math.prod(frame_shape)
    return max(0, size // frame_bytes)


def npy_append(path: Path, frames: np.ndarray) -> None:
    """Append ``frames`` (float32) to a ``.npy`` file written by this function (created when missing)."""
    frames = np.ascontiguousarray(frames, dtype="<f4")
    n_old = npy_frames(path, frames.shape[1:])
    mode = "r+b" if path.is_file() else "w+b"
    with open(path, mode) as f:
        f.seek(NPY_HEADER + n_old * frames[0].nbytes)
        f.write(frames.tobytes())
        f.truncate()
        f.seek(0)
        f.write(npy_header((n_old + len(frames), *frames.shape[1:])))
        f.flush()
        os.fsync(f.fileno())


def npy_truncate(path: Path, n: int, frame_shape: tuple[int, ...]) -> None:
    if not path.is_file():
        return
    with open(path, "r+b") as f:
        f.truncate(NPY_HEADER + n * 4 * math.prod(frame_shape))
        f.seek(0)
        f.write(npy_header((n, *frame_shape)))


def dcd_frame_bytes(n_atoms: int, cell: bool) -> int:
    return 3 * (8 + 4 * n_atoms) + (56 if cell else 0)


def dcd_nset(path: Path) -> int:
    with open(path, "rb") as f:
        return struct.unpack("<i", f.read(12)[8:12])[0]


def dcd_set_nset(f, nset: int) -> None:
    f.seek(8)
    f.write(struct.pack("<i", nset))
    f.seek(16)
    nsavc = struct.unpack("<i", f.read(4))[0]
    f.seek(12)
    istart = struct.unpack("<i", f.read(4))[0]
    f.seek(20)
    f.write(struct.pack("<i", istart + nsavc * nset))


def dcd_append(path: Path, xyz_nm: np.ndarray, box_nm: np.ndarray | None) -> None:
    """Append frames to a DCD: mdtraj writes them to a temporary DCD whose frame records are copied behind the
    existing ones, and the frame count in the header is updated (mdtraj's DCD writer cannot append)."""
    from mdtraj.formats import DCDTrajectoryFile

    n, n_atoms = xyz_nm.shape[:2]
    kwargs = {}
    if box_nm is not None:
        kwargs = {"cell_lengths": 10.0 * box_nm, "cell_angles": np.full((n, 3), 90.0)}
    tmp = path.with_suffix(".dcd.tmp")
    with DCDTrajectoryFile(str(tmp), "w", force_overwrite=True) as f:
        f.write(10.0 * np.asarray(xyz_nm, dtype=np.float32), **kwargs)
    data = tmp.read_bytes()
    tmp.unlink()
    frame_bytes = dcd_frame_bytes(n_atoms, box_nm is not None)
    if not path.is_file():
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return
    header = len(data) - n * frame_bytes
    old = dcd_nset(path)
    with open(path, "r+b") as f:
        f.seek(header + old * frame_bytes)
        f.write(data[header:])
        f.truncate()
        dcd_set_nset(f, old + n)
        f.flush()
        os.fsync(f.fileno())


def dcd_truncate(path: Path, n: int, n_atoms: int, cell: bool) -> None:
    if not path.is_file():
        return
    if n == 0:
        path.unlink()
        return
    frame_bytes = dcd_frame_bytes(n_atoms, cell)
    old = dcd_nset(path)
    header = path.stat().st_size - old * frame_bytes
    with open(path, "r+b") as f:
        f.truncate(header + n * frame_bytes)
        dcd_set_nset(f, n)


def csv_append(path: Path, rows: np.ndarray) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(ENERGY_COLUMNS)
        for row in rows:
            writer.writerow([repr(float(v)) for v in row])
        f.flush()
        os.fsync(f.fileno())


def csv_read(path: Path) -> np.ndarray:
    if not path.is_file():
        return np.zeros((0, len(ENERGY_COLUMNS)))
    lines = path.read_text().splitlines()[1:]
    rows = [[float(v) for v in line.split(",")] for line in lines if line.count(",") == len(ENERGY_COLUMNS) - 1]
    return np.asarray(rows, dtype=np.float64).reshape(-1, len(ENERGY_COLUMNS))


def csv_truncate(path: Path, n: int) -> None:
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: n + 1]))


def write_json_atomic(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(value, f, indent=2, default=str)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
