"""`cosmotrain validate dataset`: every file of a dataset checked against its manifest, on demand.

Each shard is hashed in full (sha256, whatever the cache says) and compared with the
manifest, then opened: its datasets must have the schema's dtypes, shapes and counts, and
every value its range (labels -1..2, vote fractions in [0, 1], no NaN or inf in any float
field). Under N ranks each rank checks every N-th file. Every problem is one line naming
the file; the last line sums up. Files found intact are remembered as verified
(``data.checksums``), so the next job that opens the dataset does not hash them again.
"""
from __future__ import annotations

from pathlib import Path

from cosmotrain import dist, logs
from cosmotrain.data import checksums
from cosmotrain.data.reader import read_manifest
from cosmotrain.data.shards import SHARDS, check_field, schema_of, value_problem
from cosmotrain.errors import UserError


def validate_dataset(root: str | Path) -> int:
    """Check the dataset in ``root``; print one line per problem and a summary (rank 0); returns
    the exit code, 0 when every file is intact and 1 otherwise, on every rank."""
    ctx = dist.context()
    root = Path(root)
    manifest = read_manifest(root)
    kind = manifest.get("kind")
    schema = schema_of(kind)
    shards = [(split, shard) for split, entry in manifest["splits"].items() for shard in entry["shards"]]
    mine = [shard_problems(root, kind, schema, shard) for split, shard in shards[ctx.rank::ctx.size]]
    gathered = dist.gather_object(mine)
    damaged = sum(bool(lines) for rank in gathered for lines in rank) if gathered else 0
    problems = sorted(p for rank in gathered for lines in rank for p in lines) if gathered else []
    listed = {shard["file"] for _, shard in shards}
    strays = sorted(p.name for p in root.glob(SHARDS) if p.name not in listed)
    for line in problems:
        logs.result(line)
    for name in strays:
        logs.result(f"note: {root / name} is not in the manifest (left over from another dataset?); it is not used")
    samples = sum(entry["n"] for entry in manifest["splits"].values())
    logs.result(f"{root}: {len(shards)} files, {samples} samples in {len(manifest['splits'])} splits: " +
                (f"{damaged} damaged; restore them or remake the dataset" if problems else "all intact"))
    return int(dist.broadcast_object(1 if problems else 0))


def shard_problems(root: Path, kind: str, schema: dict, shard: dict) -> list[str]:
    """Lines naming what is wrong with one shard of the manifest (empty when nothing is)."""
    path = root / shard["file"]
    problem = checksums.problem(path, shard["sha256"], shard.get("bytes"), cached=False)
    if problem:
        return [problem]
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            return [line for name, field in schema.items() for line in _field_problems(h5, name, field, path,
                                                                                      shard["n"], kind)]
    except OSError as err:
        return [f"shard {path} cannot be read as HDF5 ({str(err).splitlines()[0][:120]}); remake the dataset"]


def _field_problems(h5, name: str, field, path: Path, count: int, kind: str) -> list[str]:
    if name not in h5:
        return [f"shard {path} lacks dataset '{name}'; remake the dataset"]
    data = h5[name]
    try:
        check_field(name, field, data.dtype, data.shape[1:], f"shard {path}", kind)
    except UserError as err:
        return [str(err)]
    if data.shape[0] != count:
        return [f"shard {path}: '{name}' holds {data.shape[0]} samples, the manifest says {count}; remake the dataset"]
    problem = value_problem(name, field, data)
    return [f"shard {path}: {problem}; remake the dataset or fix that value"] if problem else []
