"""stages/runtime/artifacts.py and schemas/: validation, atomic writes, manifests, keys, superseding."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import schemas
from schemas.boundaries import BOUNDARIES
from spo.config import RunConfig
from stages.runtime.artifacts import (
    ArtifactError,
    StageSpec,
    cache_key,
    execute,
    is_finished,
    manifest_path,
    read_table,
    write_table,
)
from stages.runtime.run_dir import RunDir, create_run


def boundaries_table(n=3):
    return pa.Table.from_pylist([{"rollout_id": i, "method": "cutpoint", "boundaries": [1, 4], "n_cutpoints": 5,
                                  "n_segments": 3} for i in range(n)], schema=BOUNDARIES)


def test_validate_lists_missing_extra_and_mistyped_columns(tmp_path):
    table = boundaries_table().drop(["method"]).append_column("extra", pa.array([1, 2, 3]))
    table = table.set_column(0, "rollout_id", pa.array([1, 2, 3], pa.int32()))
    with pytest.raises(schemas.SchemaError) as error:
        schemas.validate(table, BOUNDARIES, tmp_path / "boundaries.parquet")
    text = str(error.value)
    assert "boundaries.parquet" in text and "missing column(s) ['method']" in text
    assert "unexpected column(s) ['extra']" in text and "'rollout_id' is int32, expected int64" in text


def test_nulls_in_non_nullable_columns_are_errors(tmp_path):
    table = boundaries_table().set_column(1, pa.field("method", pa.string()), pa.array(["a", None, "b"]))
    with pytest.raises(schemas.SchemaError, match="'method' has 1 null"):
        schemas.validate(table, BOUNDARIES, tmp_path / "boundaries.parquet")


def test_written_file_carries_the_documented_schema(tmp_path):
    path = tmp_path / "boundaries.parquet"
    write_table(path, boundaries_table())
    schema = pq.read_schema(path)
    assert schema.metadata[b"artifact"] == b"boundaries" and schema.metadata[b"version"] == b"1"
    assert schema.field("boundaries").metadata[b"doc"].startswith(b"sorted prefix lengths")
    assert not list(tmp_path.glob(".*tmp*"))


def make_spec(calls):
    def body(ctx):
        calls.append(ctx.iteration)
        return {"boundaries": boundaries_table(ctx.cfg.partition.interval)}, {"n": 1.0}

    spec = StageSpec("toy", reads=lambda run, i: [], writes=lambda run, i: [run.artifact(i, "boundaries")],
                     config=("partition",), module=__name__)
    return spec, body


def test_execute_skips_finished_work_and_supersedes_on_force(tmp_path):
    run = create_run(tmp_path / "run", RunConfig(partition=RunConfig().partition.__class__(interval=3)))
    calls = []
    spec, body = make_spec(calls)
    first = execute(spec, run, 0, body)
    assert calls == [0] and first.rows == {"boundaries": 3} and not first.cached
    assert cache_key(spec, run, 0) == first.key and is_finished(spec, run, 0)
    again = execute(spec, run, 0, body)
    assert calls == [0] and again.cached and again.key == first.key
    # a changed config section changes the key, but a finished stage is history: kept until forced, and then
    # the old output moves under superseded/
    run = create_run(run.root, RunConfig().with_overrides(["partition.interval=4"]))
    assert cache_key(spec, run, 0) != first.key and is_finished(spec, run, 0)
    assert execute(spec, run, 0, body).cached and calls == [0]
    third = execute(spec, run, 0, body, force=True)
    assert calls == [0, 0] and third.key != first.key and third.rows == {"boundaries": 4}
    kept = list((run.iteration_dir(0) / "superseded").rglob("boundaries.parquet"))
    assert len(kept) == 1 and pq.read_table(kept[0]).num_rows == 3
    assert len(list((run.root / "history").glob("run-*.json"))) == 1


def test_corrupted_artifact_is_detected_and_rebuilt(tmp_path):
    run = create_run(tmp_path / "run", RunConfig())
    calls = []
    spec, body = make_spec(calls)
    execute(spec, run, 0, body)
    path = run.artifact(0, "boundaries")
    path.write_bytes(path.read_bytes()[:-20])  # truncated
    with pytest.raises(ArtifactError, match="differs from its manifest"):
        read_table(path)
    assert not is_finished(spec, run, 0)
    execute(spec, run, 0, body)
    assert calls == [0, 0] and read_table(path).num_rows == 5


def test_failed_stage_leaves_no_finished_output(tmp_path):
    run = create_run(tmp_path / "run", RunConfig())

    def broken(ctx):
        raise RuntimeError("disk full")

    spec, _ = make_spec([])
    with pytest.raises(RuntimeError, match="disk full"):
        execute(spec, run, 0, broken)
    assert not manifest_path(run.artifact(0, "boundaries")).exists()
    with pytest.raises(ArtifactError, match="unfinished or missing"):
        read_table(run.artifact(0, "boundaries"))


def test_run_json_records_config_and_versions(tmp_path):
    run = create_run(tmp_path / "run", RunConfig(seed=3))
    stored = json.loads(run.config_path.read_text())
    assert stored["seed"] == 3 and stored["versions"]["torch"] and RunDir(run.root).config().seed == 3


def test_schema_docs_are_current():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    generated = subprocess.run([sys.executable, "-m", "schemas"], cwd=root, capture_output=True, text=True,
                               check=True).stdout
    assert (root / "docs" / "schemas.md").read_text() == generated, "run `python -m schemas > docs/schemas.md`"
