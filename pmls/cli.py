"""The ``pmls`` command: run the stack, train, watch, cancel, deploy."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pmls.contracts.temporal import TRAINING_QUEUE, TRIALS_QUEUE
from pmls.settings import Settings

app = typer.Typer(
    help="pmls — the Prediction Model Learning Service. `pmls demo` shows it end to end.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}


def _client(timeout: float = 30.0):
    import httpx

    from pmls.auth import api_headers

    settings = Settings()
    # PMLS_API_TOKEN, else the local admin token `pmls up` wrote to PMLS_HOME/api-token.
    return httpx.Client(base_url=settings.api.base_url, timeout=timeout, headers=api_headers(settings))


def _call(method: str, path: str, **kwargs: Any) -> Any:
    import httpx

    try:
        with _client() as client:
            resp = client.request(method, path, **kwargs)
    except httpx.ConnectError:
        console.print(f"[red]cannot reach the API at {Settings().api.base_url}[/]: start it with `pmls up`")
        raise typer.Exit(2) from None
    body = resp.json() if resp.content else None
    if resp.status_code >= 400:
        console.print(f"[red]{resp.status_code}[/] {body.get('message') if isinstance(body, dict) else body}")
        for item in (body or {}).get("detail", []) if isinstance(body, dict) else []:
            console.print(f"  - {item.get('field')}: {item.get('message')}")
        raise typer.Exit(1)
    return body


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


# -- the stack ---------------------------------------------------------------------------------
@app.command()
def up(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    """Run the whole stack in the foreground until Ctrl-C (embedded servers for every unset PMLS_* URL)."""
    from pmls.stack import Stack, StackError

    _logging(verbose)
    stack = Stack(Settings())
    try:
        with console.status("starting") as status:
            stack.start(progress=lambda msg: status.update(msg))
    except StackError as exc:
        console.print(f"[red]could not start the stack:[/] {exc}")
        raise typer.Exit(1) from None
    _print_urls(stack.urls())
    _print_auth(stack.settings)
    console.print(f"data and logs under {stack.settings.home}; Ctrl-C stops everything")
    _wait_for_signal()
    with console.status("stopping"):
        stack.stop()
    console.print("stopped")


def _wait_for_signal() -> None:
    stop = {"flag": False}

    def handler(_sig: int, _frame: Any) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    while not stop["flag"]:
        time.sleep(0.2)


def _print_auth(settings: Settings) -> None:
    from pmls.auth import local_token_path

    if settings.auth.auth == "disabled":
        console.print(
            "[yellow]PMLS_AUTH=disabled: anyone who reaches the API can start, cancel and deploy[/]"
        )
        return
    path = local_token_path(settings.home)
    console.print(
        f"  API token    {path} (admin; the pmls CLI sends it): "
        f'curl -H "Authorization: Bearer $(cat {path})" {settings.api.base_url}/api/v1/training/jobs'
    )


def _print_urls(urls: dict[str, str]) -> None:
    for name, url in urls.items():
        console.print(f"  {name:12} {url}")


@app.command()
def demo(keep: Annotated[bool, typer.Option(help="leave the stack running afterwards")] = False) -> None:
    """Start the stack, tune and train a churn model on a generated time-ordered data set, print it, stop."""
    from pmls.ml.demo_data import DEMO_PERIODS, generate_demo_dataset
    from pmls.stack import Stack, StackError

    _logging(False)
    settings = Settings()
    stack = Stack(settings)
    started = time.monotonic()
    try:
        with console.status("starting the stack") as status:
            stack.start(progress=lambda msg: status.update(msg))
        console.print(f"stack up in {time.monotonic() - started:.0f} s")
        data = generate_demo_dataset(settings.home / "data" / "churn.parquet")
        request = {
            "training_id": f"demo_{time.strftime('%Y%m%d_%H%M%S')}",
            "model_type": "LIGHTGBM",
            "model_name": "churn_demo",
            "dataset_config": {
                "source": str(data),
                "target": "churned",
                "timestamp_column": "event_time",
                "entity_column": "customer_id",
                **DEMO_PERIODS,
            },
            "hyperparameter_config": {
                "optimization_method": "tpe",
                "optimization_trials": 12,
                "optimization_timeout": "3m",
            },
            # Promoted if it passes the gates, served over HTTP by `pmls serve`.
            "deployment_config": {"auto_deploy": True, "target": "local"},
        }
        job = _call("POST", "/api/v1/training/start", json=request)
        console.print(f"job [bold]{job['job_id']}[/] started")
        job = _watch(job["job_id"])
        _print_result(job)
        _print_trials(job["job_id"])
        if job["status"] == "COMPLETED":
            _print_served(settings, job, data)
        _print_urls(stack.urls())
        if keep:
            console.print("the stack keeps running; Ctrl-C stops it")
            _wait_for_signal()
        if job["status"] != "COMPLETED":
            raise typer.Exit(1)
    except StackError as exc:
        console.print(f"[red]could not start the stack:[/] {exc}")
        raise typer.Exit(1) from None
    finally:
        with console.status("stopping the stack"):
            stack.stop()
        console.print(f"demo finished in {time.monotonic() - started:.0f} s")


def _print_served(settings: Settings, job: dict, data: Path) -> None:
    """The demo's deploy stage, and one prediction from what local serving answers with, over HTTP."""
    import httpx
    import polars as pl

    from pmls.auth import api_headers

    name = job["training_request"]["model_name"]
    mine = [d for d in _call("GET", f"/api/v1/models/{name}/deployments") if d.get("job_id") == job["job_id"]]
    if mine:
        _print_deployment(mine[0])
    rows = pl.read_parquet(data).drop("churned").tail(3).to_pandas()
    body = {"rows": json.loads(rows.to_json(orient="records", date_format="iso"))}
    with httpx.Client(
        base_url=settings.serving.base_url, headers=api_headers(settings), timeout=60
    ) as serving:
        resp = serving.post(f"/v1/models/{name}/predict", json=body)
    if resp.status_code != 200:
        console.print(f"local serving: {resp.status_code} {resp.json().get('message', resp.text)}")
        return
    answer = resp.json()
    console.print(
        f"prediction over HTTP from [bold]{settings.serving.base_url}/v1/models/{name}/predict[/] "
        f"(version {answer['version']}):"
    )
    for row, out in zip(body["rows"], answer["predictions"], strict=True):
        console.print(f"  customer {row.get('customer_id')}: {out}")


def _watch(job_id: str, poll: float = 0.5) -> dict:
    columns = [
        TextColumn("[bold]{task.fields[stage]:<14}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("training", total=100, stage="queued")
        while True:
            job = _call("GET", f"/api/v1/training/{job_id}/status")
            bar.update(task, completed=job["progress_percentage"], stage=job["current_stage"])
            if job["status"] in TERMINAL:
                return job
            time.sleep(poll)


def _print_result(job: dict) -> None:
    color = {"COMPLETED": "green", "FAILED": "red"}.get(job["status"], "yellow")
    console.print(f"job [bold]{job['job_id']}[/]: [{color}]{job['status']}[/]")
    if job.get("error"):
        console.print(f"  reason: {job['error']}")
    if job.get("model_id"):
        console.print(f"  model:  [bold]{job['model_id']}[/]")
    metrics = job.get("training_metrics") or {}
    if metrics.get("test_metrics"):
        table = Table("metric", "validation", "test", title="metrics")
        for name, value in metrics["test_metrics"].items():
            valid = metrics.get("validation_metrics", {}).get(name)
            table.add_row(name, f"{valid:.4f}" if valid is not None else "", f"{value:.4f}")
        console.print(table)


def _print_trials(job_id: str) -> None:
    trials = _call("GET", f"/api/v1/training/{job_id}/trials")
    if not trials:
        return
    states: dict[str, int] = {}
    for trial in trials:
        states[trial["state"]] = states.get(trial["state"], 0) + 1
    scored = [t["performance_score"] for t in trials if t["state"] == "COMPLETE"]
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(states.items()))
    best = f"; CV scores from {min(scored):.4f} to {max(scored):.4f}" if scored else ""
    console.print(f"  tuning: {len(trials)} trials ({counts}){best}")


# -- jobs --------------------------------------------------------------------------------------
@app.command()
def train(
    request_file: Annotated[Path, typer.Argument(exists=True, readable=True, help="TrainingRequest JSON")],
    wait: Annotated[bool, typer.Option("--wait", help="watch it with a progress bar until it ends")] = False,
) -> None:
    """Submit a TrainingRequest (JSON file) to the API."""
    try:
        body = json.loads(request_file.read_text())
    except json.JSONDecodeError as exc:
        console.print(f"[red]{request_file} is not valid JSON:[/] {exc}")
        raise typer.Exit(1) from None
    job = _call("POST", "/api/v1/training/start", json=body)
    console.print(f"job [bold]{job['job_id']}[/] {job['status']}")
    if wait:
        job = _watch(job["job_id"])
        _print_result(job)
        if job["status"] != "COMPLETED":
            raise typer.Exit(1)


@app.command()
def status(job_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show one job's status, stage, progress and metrics."""
    job = _call("GET", f"/api/v1/training/{job_id}/status")
    if as_json:
        console.print_json(data=job)
        return
    console.print(
        f"{job['current_stage']} {job['progress_percentage']:.0f}%  ETA {job.get('estimated_completion')}"
    )
    _print_result(job)
    _print_trials(job_id)


@app.command()
def cancel(job_id: str) -> None:
    """Cancel a job."""
    result = _call("POST", f"/api/v1/training/{job_id}/cancel")
    console.print(f"{result['job_id']}: {result['status']} — {result['message']}")


@app.command()
def jobs(active: Annotated[bool, typer.Option(help="only QUEUED and RUNNING")] = False) -> None:
    """List jobs, newest first."""
    rows = _call("GET", "/api/v1/training/jobs/active" if active else "/api/v1/training/jobs")
    table = Table("job", "model type", "status", "stage", "progress", "model")
    for job in rows:
        table.add_row(
            job["job_id"],
            job["training_request"]["model_type"],
            job["status"],
            job["current_stage"],
            f"{job['progress_percentage']:.0f}%",
            job.get("model_id") or "",
        )
    console.print(table)


@app.command()
def deploy(
    model_id: str,
    alias: Annotated[str, typer.Option(help="the lineage alias to move")] = "production",
    force: Annotated[bool, typer.Option(help="promote although a gate fails (recorded as forced)")] = False,
    min_improvement: Annotated[
        float, typer.Option(help="gate: least improvement over the champion it was compared with")
    ] = 0.0,
    min_primary_metric: Annotated[
        float | None, typer.Option(help="gate: the test primary metric must reach this (at most, for errors)")
    ] = None,
    reason: Annotated[str | None, typer.Option(help="why, for the history")] = None,
) -> None:
    """Promote a version through its lineage's deployment workflow: gates, alias move, smoke test, automatic
    rollback when the smoke test fails."""
    body: dict[str, Any] = {
        "alias": alias,
        "force": force,
        "min_improvement": min_improvement,
        "reason": reason,
    }
    if min_primary_metric is not None:
        body["min_primary_metric"] = min_primary_metric
    _print_deployment(_call("POST", f"/api/v1/models/deploy/{model_id}", json=body))


@app.command()
def rollback(
    model_name: str,
    to_version: Annotated[str | None, typer.Option(help="this version (default: the previous one)")] = None,
    alias: Annotated[str, typer.Option(help="the lineage alias to move back")] = "production",
    reason: Annotated[str | None, typer.Option(help="why, for the history")] = None,
) -> None:
    """Serve a lineage's previous version again (or --to-version), smoke-tested like a promotion."""
    body = {"to_version": to_version, "alias": alias, "reason": reason}
    _print_deployment(_call("POST", f"/api/v1/models/{model_name}/rollback", json=body))


@app.command()
def history(
    model_name: str, limit: Annotated[int, typer.Option(min=1, max=1000, help="rows, newest first")] = 20
) -> None:
    """A lineage's promotions, rejections and rollbacks, newest first."""
    rows = _call("GET", f"/api/v1/models/{model_name}/deployments", params={"limit": limit})
    table = Table("when", "action", "status", "version", "alias", "serving", "by", "why")
    for row in rows:
        failed = ", ".join(g["gate"] for g in row.get("gates") or [] if not g["passed"])
        table.add_row(
            row["deployed_at"][:19],
            row.get("action", "promote"),
            row["status"] + (" (forced)" if row.get("forced") else ""),
            row["version"],
            row["alias"],
            row.get("serving_version") or "",
            row.get("deployed_by") or row.get("job_id") or "",
            row.get("reason") or (f"failed: {failed}" if failed else ""),
        )
    console.print(table)


def _print_deployment(result: dict) -> None:
    color = {"DEPLOYED": "green", "UNCHANGED": "green", "REJECTED": "red"}.get(result["status"], "yellow")
    console.print(f"[{color}]{result['status']}[/]: {result['message']}")
    for gate in result.get("gates") or []:
        mark = "[green]pass[/]" if gate["passed"] else "[red]fail[/]"
        console.print(f"  {mark} {gate['gate']}: {gate['value']!r} (threshold {gate['threshold']!r})")
    if result.get("smoke_test"):
        console.print(f"  smoke test: {result['smoke_test']}")


# -- processes ---------------------------------------------------------------------------------
@app.command()
def worker(
    queue: Annotated[
        str,
        typer.Option(
            help=f"task queue: {TRAINING_QUEUE} (PMLS_TASK_QUEUE) or {TRIALS_QUEUE} (PMLS_TRIALS_TASK_QUEUE)"
        ),
    ] = TRAINING_QUEUE,
    slots: Annotated[
        int | None,
        typer.Option(min=1, help="pmls-trials: trials this process runs at once (default: PMLS_TRIAL_SLOTS)"),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(min=1, help="pmls-trials: threads per trial (default: cores / PMLS_TRIAL_SLOTS)"),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = True,
) -> None:
    """Run a worker for one task queue (add more processes to scale out).

    `pmls up` starts one pmls-trials process per trial slot (PMLS_TRIAL_PROCESSES to change that): trials in
    separate processes do not contend for Python's interpreter lock between boosting rounds or batches.
    """
    from workers.main import run_worker

    _logging(verbose)
    asyncio.run(run_worker(queue, slots=slots, threads=threads))


@app.command()
def api(host: str | None = None, port: int | None = None) -> None:
    """Run the REST API (OpenAPI docs at /docs)."""
    import uvicorn

    from api.app import create_app

    settings = Settings()
    uvicorn.run(
        create_app(settings),
        host=host or settings.api.api_host,
        port=port or settings.api.api_port,
        log_level="warning",
    )


@app.command()
def serve(host: str | None = None, port: int | None = None) -> None:
    """Serve the versions deployed with target `local` over HTTP (`pmls up` runs it): POST
    /v1/models/NAME/predict with {"rows": [...]}."""
    import uvicorn

    from api.serving import create_serving_app

    settings = Settings()
    uvicorn.run(
        create_serving_app(settings),
        host=host or settings.serving.serving_host,
        port=port or settings.serving.serving_port,
        log_level="warning",
    )


token_app = typer.Typer(
    help="API tokens. The API keeps only their hashes (PMLS_API_TOKENS); `pmls up` makes a local admin one.",
    no_args_is_help=True,
)
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option(help="who holds it: shown as the job's started_by and in MLflow")],
    scopes: Annotated[str, typer.Option(help="comma-separated: read, train, deploy, admin")] = "read",
) -> None:
    """Make a token: print it once (give it to its holder) and the entry to append to PMLS_API_TOKENS."""
    import re

    from pmls.auth import new_token, parse_scopes, token_entry

    if not re.fullmatch(r"[A-Za-z0-9_.@\-]{1,64}", name):
        console.print("[red]--name[/]: 1-64 letters, digits, '_', '.', '@' or '-'")
        raise typer.Exit(2)
    try:
        granted = parse_scopes(scopes, "--scopes")
    except ValueError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    token = new_token()
    typer.echo(f"token (shown once): {token}")
    typer.echo(f"PMLS_API_TOKENS entry (comma-separate several): {token_entry(name, granted, token)}")


@app.command()
def migrate() -> None:
    """Create the databases if needed, run the migrations, register the Temporal search attributes."""
    from pmls.storage.migrate import migrate_all

    _logging(True)
    migrate_all(Settings())
    console.print("migrations applied")


def main() -> None:
    app()


if __name__ == "__main__":
    sys.exit(main())
