"""Sources confined to the data roots, on the real stack: a path, glob or DuckDB query that reaches outside them
is refused (422 before a job starts where that can be known, a FAILED job where only reading shows it), and
nothing is written or leaked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pmls.settings import Settings
from tests.helpers import error_fields, unique, wait_for


def _start(api, demo_request, source: str, **extra):
    body = demo_request(unique("src"), dataset_config={"source": source, **extra})
    return body["training_id"], api.post("/api/v1/training/start", json=body)


def _refused(api, job_id, resp, words: str) -> None:
    assert resp.status_code == 422, resp.text
    assert error_fields(resp) == ["dataset_config.source"]
    assert words in resp.json()["message"]
    assert api.get(f"/api/v1/training/{job_id}/status").status_code == 404  # no job, no workflow


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("/etc/passwd", "outside the data roots"),
        ("~/.bashrc", "'~' is not expanded"),
        ("/proc/self/environ", "outside the data roots"),
        ("/**/*.parquet", "outside the data roots"),
        ("duckdb:COPY (SELECT 42) TO '{data}/written.csv'", "only a SELECT"),
        ("duckdb:SELECT 1; SELECT 2", "exactly one SELECT"),
        ("duckdb:ATTACH '{data}/x.duckdb'", "only a SELECT"),
        ("duckdb:INSTALL httpfs", "only a SELECT"),
    ],
)
def test_sources_outside_the_roots_are_422_and_write_nothing(api, demo_request, demo_data, source, words):
    data = demo_data.parent
    job_id, resp = _start(api, demo_request, source.format(data=data))
    _refused(api, job_id, resp, words)
    assert not (data / "written.csv").exists() and not (data / "x.duckdb").exists()


def test_the_roots_are_named_and_another_jobs_snapshot_is_no_source(api, demo_request, settings):
    job_id, resp = _start(api, demo_request, f"{settings.artifacts}/jobs/*/dataset.parquet")
    _refused(api, job_id, resp, "outside the data roots")
    assert str(settings.data_root_paths[0]) in resp.json()["message"]


def test_a_link_out_of_a_root_and_a_duckdb_read_outside_fail_the_job_without_leaking(
    api, demo_request, demo_data, tmp_path_factory
):
    outside = Path(os.environ["PMLS_HOME"]) / "secret.parquet"  # the service's own folder: not a root
    outside.write_bytes(demo_data.read_bytes())
    link = tmp_path_factory.mktemp("links") / "innocent.parquet"
    link.symlink_to(outside)
    job_id, resp = _start(api, demo_request, str(link.parent / "*.parquet"))
    assert resp.status_code == 202, resp.text
    job = wait_for(api, job_id, timeout=60)
    assert job["status"] == "FAILED" and "links outside the data roots" in job["error"]

    job_id, resp = _start(api, demo_request, "duckdb:SELECT * FROM read_text('/proc/self/environ')")
    assert resp.status_code == 202, resp.text
    job = wait_for(api, job_id, timeout=60)
    assert job["status"] == "FAILED" and "Permission Error" in job["error"]
    assert "PMLS_" not in job["error"]  # the worker's environment stays where it is


def test_a_data_root_holding_the_service_home_is_refused_at_start(settings):
    for roots in ("/", str(settings.home), f"{settings.artifacts}/mine"):
        with pytest.raises(ValueError, match="PMLS_DATA_ROOTS"):
            _ = Settings(data_roots=roots).data_root_paths


def test_database_sources_go_through_named_connections_only(api, demo_request, demo_data, settings):
    url = settings.database.url
    job_id, resp = _start(
        api, demo_request, f"{url}?table=training_jobs"
    )  # the service's own database, by URL
    _refused(api, job_id, resp, "credentials do not belong in a request")
    assert url not in resp.text
    job_id, resp = _start(api, demo_request, "connection:payroll?table=salaries")
    _refused(api, job_id, resp, "no connection named 'payroll'; configured: warehouse")
    for query in (
        "DELETE FROM training_jobs",
        "SELECT * INTO stolen FROM training_jobs",
        "SELECT pg_read_file('x')",
    ):
        job_id, resp = _start(api, demo_request, f"connection:warehouse?query={query}")
        assert resp.status_code == 422, resp.text


def test_a_job_trains_from_a_named_connections_table_and_the_superuser_role_is_warned_about(
    api, demo_request, demo_data, settings
):
    import polars as pl
    import sqlalchemy as sa

    table = unique("churn_src").lower()
    engine = sa.create_engine(settings.database.url.replace("postgresql://", "postgresql+psycopg2://", 1))
    pl.read_parquet(demo_data).write_database(table, connection=engine)
    try:
        job_id, resp = _start(api, demo_request, f"connection:warehouse?table={table}")
        assert resp.status_code == 202, resp.text
        job = wait_for(api, job_id, timeout=180)
        assert job["status"] == "COMPLETED", job.get("error")
        assert job["training_request"]["dataset_config"]["source"] == f"connection:warehouse?table={table}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()
    logs = "".join(p.read_text(errors="replace") for p in (settings.home / "logs").glob("*.log"))
    assert "connection 'warehouse' logs in as a superuser" in logs
