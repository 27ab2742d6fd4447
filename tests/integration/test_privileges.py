"""Least privilege: the grants in docs/operations.md are enough, and `migrate --check` names a gap.

The roles are real PostgreSQL roles, created with the very statements the documentation shows
(read from docs/operations.md); the embedded server trusts local connections, so a DSN with
``user=<role>`` connects as that role.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import psycopg2.extensions
import pytest

from jr_checkpoint import CheckpointStore, cli
from jr_checkpoint.errors import StoreError
from tests.conftest import query

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def documented_grants(section: str, names: dict[str, str]) -> str:
    """The ```sql block after ``<!-- grants: section -->``, roles and database renamed."""
    match = re.search(rf"<!-- grants: {re.escape(section)} -->\n```sql\n(.*?)```",
                      OPERATIONS.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert match, f"no '{section}' grants in {OPERATIONS}"
    return re.sub(r"\b(worker|migrator|ganuda)\b", lambda m: f'"{names[m[1]]}"', match[1])


def as_role(dsn: str, role: str) -> str:
    return psycopg2.extensions.make_dsn(dsn, user=role)


@pytest.fixture
def roles(empty_dsn, pg_admin_dsn):
    """A worker and a migrator set up exactly as documented; the tables created by the migrator.

    Roles belong to the whole server, so their names are unique to the test, and they go
    afterwards (DROP OWNED BY revokes their grants in the test's database).
    """
    suffix = uuid.uuid4().hex[:8]
    names = {"worker": f"jr_worker_{suffix}", "migrator": f"jr_migrator_{suffix}",
             "ganuda": psycopg2.extensions.parse_dsn(empty_dsn)["dbname"]}
    try:
        query(empty_dsn, documented_grants("migrator", names))
        query(empty_dsn, documented_grants("worker", names))
        migrator = as_role(empty_dsn, names["migrator"])
        assert cli.main(["migrate", "--dsn", migrator]) == 0
        query(migrator, documented_grants("worker-tables", names))
        yield {**names, "worker_dsn": as_role(empty_dsn, names["worker"])}
    finally:
        for role in (names["worker"], names["migrator"]):
            if query(empty_dsn, "SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)):
                query(empty_dsn, f'DROP OWNED BY "{role}"')
                query(pg_admin_dsn, f'DROP ROLE "{role}"')


def check(capsys, dsn: str) -> tuple[int, list[str]]:
    code = cli.main(["migrate", "--check", "--dsn", dsn])
    out, err = capsys.readouterr()
    return code, (out + err).splitlines() if code == 0 else err.splitlines()


def record_one_step(dsn: str, task_id: int = 7) -> None:
    """What a worker does for a task's first step: take it, record, give it back unfinished."""
    store = CheckpointStore(dsn)
    try:
        state = store.begin_task(task_id, 2)
        assert state is not None
        try:
            store.record_step(task_id, 0, owner=state.owner, execution_result="success",
                              step_type="write", target_file="a.txt", last_completed_step=0,
                              total_steps=2)
        finally:
            store.release_task(task_id, state.owner, completed=False)
    finally:
        store.close()


def test_the_documented_grants_are_enough_to_check_and_record(roles, capsys, empty_dsn):
    code, lines = check(capsys, roles["worker_dsn"])
    assert code == 0, lines
    assert lines[-1].startswith("[Checkpoint Migration] Schema OK: ")
    assert query(empty_dsn, "SELECT tableowner FROM pg_tables WHERE tablename = 'jr_step_rewards'") == [
        (roles["migrator"],)]  # the worker owns nothing: its rights come from the grants alone
    record_one_step(roles["worker_dsn"])
    assert query(empty_dsn, "SELECT task_id, step_number, execution_result FROM jr_step_rewards") == [
        (7, 0, "success")]
    assert query(empty_dsn, "SELECT last_completed_step FROM jr_task_checkpoints") == [(0,)]


def test_without_usage_on_a_sequence_the_check_names_it_and_exits_1(roles, capsys, empty_dsn):
    query(empty_dsn, f'REVOKE USAGE ON SEQUENCE jr_step_rewards_id_seq FROM "{roles["worker"]}"')
    assert check(capsys, roles["worker_dsn"]) == (1, [
        f"[Checkpoint Migration] role {roles['worker']} lacks: USAGE on sequence jr_step_rewards_id_seq"])
    # What the check is about: such a worker really cannot record a step.
    with pytest.raises(StoreError, match="permission denied for sequence jr_step_rewards_id_seq"):
        record_one_step(roles["worker_dsn"])


def test_without_insert_on_a_table_the_check_names_it_and_exits_1(roles, capsys, empty_dsn):
    query(empty_dsn, f'REVOKE INSERT ON jr_task_checkpoints FROM "{roles["worker"]}"')
    assert check(capsys, roles["worker_dsn"]) == (1, [
        f"[Checkpoint Migration] role {roles['worker']} lacks: INSERT on jr_task_checkpoints"])
    with pytest.raises(StoreError, match="permission denied for table jr_task_checkpoints"):
        record_one_step(roles["worker_dsn"])


def test_every_gap_is_named_in_one_line(roles, capsys, empty_dsn):
    worker = roles["worker"]
    query(empty_dsn, f'REVOKE ALL ON jr_step_rewards, jr_task_checkpoints FROM "{worker}"; '
                     f'REVOKE USAGE ON SEQUENCE jr_step_rewards_id_seq, jr_task_checkpoints_id_seq '
                     f'FROM "{worker}"')
    tables = ", ".join(f"{p} on {t}" for t in ("jr_step_rewards", "jr_task_checkpoints")
                       for p in ("SELECT", "INSERT", "UPDATE", "DELETE"))
    assert check(capsys, roles["worker_dsn"]) == (1, [
        f"[Checkpoint Migration] role {worker} lacks: {tables}, "
        "USAGE on sequence jr_step_rewards_id_seq, USAGE on sequence jr_task_checkpoints_id_seq"])


def test_the_documented_grants_are_enough_where_public_cannot_execute(roles, capsys, empty_dsn):
    # A hardened database: PUBLIC's default EXECUTE on new functions revoked.
    from jr_checkpoint.schema import WORKER_FUNCTIONS

    query(empty_dsn, "".join(f"REVOKE EXECUTE ON FUNCTION {f} FROM PUBLIC; " for f in WORKER_FUNCTIONS))
    assert check(capsys, roles["worker_dsn"])[0] == 0
    record_one_step(roles["worker_dsn"])
    assert query(empty_dsn, "SELECT task_id, step_number FROM jr_step_rewards") == [(7, 0)]
    # Without the documented GRANT EXECUTE such a worker could not take a task at all.
    query(empty_dsn, "".join(f'REVOKE EXECUTE ON FUNCTION {f} FROM "{roles["worker"]}"; '
                             for f in WORKER_FUNCTIONS))
    assert check(capsys, roles["worker_dsn"]) == (1, [
        f"[Checkpoint Migration] role {roles['worker']} lacks: "
        + ", ".join(f"EXECUTE on function {f}" for f in WORKER_FUNCTIONS)])
    with pytest.raises(StoreError, match="permission denied for function jr_checkpoint_begin"):
        record_one_step(roles["worker_dsn"], task_id=8)


def test_the_owner_lacks_nothing(roles, capsys):
    migrator = as_role(roles["worker_dsn"], roles["migrator"])
    assert check(capsys, migrator)[0] == 0


def test_the_functions_a_worker_calls_are_checked_too(roles, capsys, empty_dsn, monkeypatch):
    from jr_checkpoint import schema

    signature = "jr_checkpoint_test_fn(integer)"
    monkeypatch.setattr(schema, "WORKER_FUNCTIONS", (signature,))
    assert check(capsys, roles["worker_dsn"]) == (1, [
        f"[Checkpoint Migration] function {signature} is missing"])
    query(empty_dsn, f"CREATE FUNCTION {signature.replace('integer', 'n integer')} RETURNS integer "
                     "LANGUAGE sql AS 'SELECT n'; "
                     f"REVOKE EXECUTE ON FUNCTION {signature} FROM PUBLIC")
    assert check(capsys, roles["worker_dsn"]) == (1, [
        f"[Checkpoint Migration] role {roles['worker']} lacks: EXECUTE on function {signature}"])
    query(empty_dsn, f'GRANT EXECUTE ON FUNCTION {signature} TO "{roles["worker"]}"')
    assert check(capsys, roles["worker_dsn"])[0] == 0


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_the_check_works_for_a_worker_behind_pgbouncer(roles, capsys, empty_dsn, pgbouncer, mode):
    # The check is one transaction, so transaction pooling cannot split it; any server role
    # logs in through the fixture's PgBouncer.
    via = pgbouncer(mode)(roles["worker_dsn"])
    assert check(capsys, via)[0] == 0
    query(empty_dsn, f'REVOKE USAGE ON SEQUENCE jr_task_checkpoints_id_seq FROM "{roles["worker"]}"')
    assert check(capsys, via) == (1, [
        f"[Checkpoint Migration] role {roles['worker']} lacks: USAGE on sequence jr_task_checkpoints_id_seq"])
