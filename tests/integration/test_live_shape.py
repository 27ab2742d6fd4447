"""Live tables of another shape than the seed's: the host's Jan-31 jr_step_rewards and a Feb-03
per-step jr_task_checkpoints, created from those instructions' own DDL (tests/data)."""

from __future__ import annotations

from pathlib import Path

import psycopg2
import pytest

from jr_checkpoint import cli
from tests.conftest import query
from tests.integration.test_migration import run_cli

DATA = Path(__file__).resolve().parents[1] / "data"
JAN31 = (DATA / "jan31_jr_step_rewards.sql").read_text(encoding="utf-8")
FEB03 = (DATA / "feb03_jr_task_checkpoints.sql").read_text(encoding="utf-8")
P = "[Checkpoint Migration]"

JAN31_NOTES = [
    "column jr_step_rewards.step_type is character varying(30), the seed's character varying(50):"
    " a longer value is cut to 30 characters, ending '...[cut]'",
    "column jr_step_rewards.step_type is NOT NULL, the seed's is not: a step without one is"
    " recorded with 'unknown'",
    "column jr_step_rewards.target_file is character varying(500), the seed's text: a longer value"
    " is cut to 500 characters, ending '...[cut]'",
    "column jr_step_rewards.execution_result allows NULL, the seed's is NOT NULL: harmless",
    "table jr_step_rewards has columns the seed has not (implicit_reward, verified_outcome,"
    " retry_decision): harmless, the ledger leaves them empty",
]
PER_STEP = ("table jr_task_checkpoints is per step (UNIQUE (task_id, step_number); no"
            " last_completed_step, total_steps, checkpoint_data, created_at, updated_at), not the"
            " seed's one row per task: incompatible, nothing is written into it and workers run"
            " unchecked")



def columns(dsn: str, table: str) -> list[tuple]:
    return query(dsn, "SELECT column_name, data_type, character_maximum_length, is_nullable,"
                      " column_default FROM information_schema.columns WHERE table_name = %s"
                      " ORDER BY ordinal_position", (table,))


def lines(prefix: str, texts: list[str], suffix: str = "") -> list[str]:
    return [f"{prefix} {text}{suffix}" for text in texts]


# -- migrate and migrate --check ------------------------------------------------------------------


def test_migrate_leaves_the_jan31_table_as_it_is_and_says_what_it_found(empty_dsn, capsys):
    query(empty_dsn, JAN31)
    before = columns(empty_dsn, "jr_step_rewards")
    code, out, err = run_cli(capsys, "--dsn", empty_dsn)
    assert (code, err) == (0, [])
    assert out[:2] == [f"{P} Tables created: jr_task_checkpoints, jr_task_attempts",
                       f"{P} Tables already present: jr_step_rewards"]
    assert out[5:] == lines(P, JAN31_NOTES, " (left as it is)") + [
        f"{P} Done — For Seven Generations"]
    assert columns(empty_dsn, "jr_step_rewards") == before  # not one column altered


def test_check_on_the_jan31_table_says_each_difference_and_passes(empty_dsn, capsys):
    query(empty_dsn, JAN31)
    assert run_cli(capsys, "--dsn", empty_dsn)[0] == 0
    code, out, err = run_cli(capsys, "--check", "--dsn", empty_dsn)
    assert (code, err) == (0, [])
    assert out[:-1] == lines(P, JAN31_NOTES)
    assert out[-1].startswith(f"{P} Schema OK: ")


def test_a_per_step_checkpoints_table_is_incompatible_and_left_as_it_is(empty_dsn, capsys):
    query(empty_dsn, FEB03)
    before = columns(empty_dsn, "jr_task_checkpoints")
    code, out, err = run_cli(capsys, "--dsn", empty_dsn)
    assert code == 1
    assert out[:2] == [f"{P} Tables created: jr_step_rewards, jr_task_attempts",
                       f"{P} Tables already present: jr_task_checkpoints"]
    assert err == [f"{P} {PER_STEP} (left as it is)"]
    assert "Done" not in out[-1]
    assert columns(empty_dsn, "jr_task_checkpoints") == before
    assert run_cli(capsys, "--check", "--dsn", empty_dsn) == (1, [], [f"{P} {PER_STEP}"])


def test_both_host_tables_at_once(empty_dsn, capsys):
    query(empty_dsn, JAN31 + FEB03)
    code, out, err = run_cli(capsys, "--check", "--dsn", empty_dsn)
    assert code == 1
    assert out == lines(P, JAN31_NOTES)
    assert err == [f"{P} {PER_STEP}", f"{P} table jr_task_attempts is missing"]


def test_check_names_a_missing_unique_constraint_and_a_required_extra_column(dsn, capsys):
    query(dsn, "ALTER TABLE jr_step_rewards DROP CONSTRAINT jr_step_rewards_task_id_step_number_key;"
               " ALTER TABLE jr_task_checkpoints ADD COLUMN owner_name TEXT NOT NULL,"
               " ADD COLUMN note TEXT")
    code, out, err = run_cli(capsys, "--check", "--dsn", dsn)
    assert code == 1
    assert out == [f"{P} table jr_task_checkpoints has columns the seed has not (note): harmless,"
                   " the ledger leaves them empty"]
    assert err == [
        f"{P} table jr_step_rewards has no unique constraint on (task_id, step_number), which the"
        " ledger's ON CONFLICT needs: every write fails",
        f"{P} table jr_task_checkpoints has NOT NULL columns the ledger does not write (owner_name):"
        " every write fails",
    ]


# -- the ledger's functions on those tables, without the store's adaptation -------------------------


def call(dsn: str, sql: str, params=()):
    try:
        return query(dsn, sql, params)
    except psycopg2.Error as exc:
        return f"{type(exc).__name__}: {exc.pgerror.splitlines()[0]}"


RECORD = "SELECT jr_checkpoint_record_step_v2(7, %s, 0, %s, %s, 'h', 'success', 1, NULL, %s, 9, 30)"


def test_the_functions_on_the_jan31_table_refuse_what_does_not_fit(empty_dsn, capsys):
    """What the store's fit() and placeholder avoid: the server refuses the whole record."""
    query(empty_dsn, JAN31)
    assert run_cli(capsys, "--dsn", empty_dsn)[0] == 0
    (answer,), = query(empty_dsn, "SELECT jr_checkpoint_begin_v2(7, 1, 'me', 30, '{}', 'me')")
    assert answer["taken"] is True
    assert call(empty_dsn, RECORD, ("me", "t" * 30, "p" * 500, 0)) == [(True,)]
    assert call(empty_dsn, RECORD, ("me", "t" * 31, "p", 1)) == (
        "StringDataRightTruncation: ERROR:  value too long for type character varying(30)")
    assert call(empty_dsn, RECORD, ("me", "t", "p" * 501, 1)) == (
        "StringDataRightTruncation: ERROR:  value too long for type character varying(500)")
    assert call(empty_dsn, RECORD, ("me", None, "p", 1)).startswith(
        'NotNullViolation: ERROR:  null value in column "step_type" of relation "jr_step_rewards"')
    # Each refusal took the statement back whole: the checkpoint did not move either.
    assert query(empty_dsn, "SELECT step_type, length(target_file) FROM jr_step_rewards") == [
        ("t" * 30, 500)]
    assert query(empty_dsn, "SELECT last_completed_step FROM jr_task_checkpoints") == [(0,)]


def test_the_functions_on_a_per_step_checkpoints_table_fail_and_write_nothing(empty_dsn, capsys):
    query(empty_dsn, FEB03)
    assert run_cli(capsys, "--dsn", empty_dsn)[0] == 1  # the functions are created all the same
    assert call(empty_dsn, "SELECT jr_checkpoint_begin_v2(7, 1, 'me', 30, '{}', 'me')") == (
        'UndefinedColumn: ERROR:  column "checkpoint_data" does not exist')
    assert call(empty_dsn, RECORD, ("me", "t", "p", 0)) == (
        'UndefinedColumn: ERROR:  column "checkpoint_data" does not exist')
    assert query(empty_dsn, "SELECT count(*) FROM jr_task_checkpoints") == [(0,)]
    assert query(empty_dsn, "SELECT count(*) FROM jr_step_rewards") == [(0,)]


@pytest.mark.parametrize("ddl", [JAN31, FEB03], ids=["jan31", "feb03"])
def test_migrating_twice_changes_nothing_more(empty_dsn, capsys, ddl):
    query(empty_dsn, ddl)
    first = run_cli(capsys, "--dsn", empty_dsn)
    second = run_cli(capsys, "--dsn", empty_dsn)
    assert second[0] == first[0]
    assert second[1][0].startswith(f"{P} Tables already present: ")
    assert second[1][4:] == first[1][5:] and second[2] == first[2]


# -- writes go on: through the real decorator, on tables created from the host's DDL ---------------


class AnyStepExecutor:
    """Runs every step successfully, whatever its type: the store's adaptation is what is tested."""

    def __init__(self, task_id):
        self._current_task_id = task_id
        self.executed = []

    def execute(self, step):
        self.executed.append(step)
        return {"success": True}

    def execute_steps(self, steps):
        return [self.execute(step) for step in steps]


@pytest.fixture
def decorated(empty_dsn, capsys):
    """Install on AnyStepExecutor once the test made its tables; yields (executor class, store)."""
    import jr_checkpoint

    def install(ddl: str):
        query(empty_dsn, ddl)
        cli.main(["migrate", "--dsn", empty_dsn])
        capsys.readouterr()
        store = jr_checkpoint.install(empty_dsn, target=f"{__name__}:AnyStepExecutor.execute_steps")
        return AnyStepExecutor, store

    yield install
    jr_checkpoint.uninstall()


LONG_TYPE, LONG_PATH = "t" * 40, "/ganuda/" + "p" * 592


def test_a_long_type_a_long_path_and_no_type_are_recorded_on_the_jan31_table(decorated, empty_dsn):
    executor_class, store = decorated(JAN31)
    steps = [{"type": LONG_TYPE, "path": "a.py"}, {"type": "write", "path": LONG_PATH},
             {"type": None, "path": "c.py"}, {"type": "bash", "command": "true"}]
    first = executor_class(301)
    assert first.execute_steps(steps) == [{"success": True}] * 4
    rows = query(empty_dsn, "SELECT step_number, step_type, target_file, execution_result"
                            " FROM jr_step_rewards WHERE task_id = 301 ORDER BY step_number")
    assert rows == [
        (0, "t" * 22 + "...[cut]", "a.py", "success"),
        (1, "write", LONG_PATH[:492] + "...[cut]", "success"),
        (2, "unknown", "c.py", "success"),
        (3, "bash", "", "success"),
    ]
    # The cut values still identify their steps: a retry skips all four.
    again = executor_class(301)
    assert [result.get("skipped") for result in again.execute_steps(steps)] == [True] * 4
    assert again.executed == []


def test_the_shape_is_read_once_per_store_not_per_task_or_step(decorated):
    executor_class, store = decorated(JAN31)
    executor_class(401).execute_steps([{"type": "bash"}])
    before = store.round_trips
    executor_class(402).execute_steps([{"type": "bash"}, {"type": "bash", "n": 2}])
    assert store.round_trips - before == 3  # begin, two records (the last one releases): no shape query


def test_nothing_is_written_into_a_per_step_checkpoints_table(decorated, empty_dsn, caplog):
    executor_class, store = decorated(FEB03)
    query(empty_dsn, "INSERT INTO jr_task_checkpoints (task_id, step_number, step_type)"
                     " VALUES (501, 0, 'bash')")
    caplog.set_level("WARNING", logger="jr_checkpoint")
    steps = [{"type": "bash", "command": "true"}, {"type": "write", "path": "x"}]
    for _ in range(3):  # three tasks, one warning
        executor = executor_class(501)
        assert executor.execute_steps(steps) == [{"success": True}] * 2
        assert executor.executed == steps  # ran, unchecked
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    assert warnings == [
        f"[CHECKPOINT] jr_task_checkpoints not of the seed's shape ({PER_STEP}); nothing is"
        " written to the checkpoint tables: see `jr-checkpoint migrate --check`; every task"
        " runs unchecked"]
    assert store.save_checkpoint(501, 1) is False and store.cleanup_checkpoints(501) is False
    assert query(empty_dsn, "SELECT task_id, step_number, step_type FROM jr_task_checkpoints") == [
        (501, 0, "bash")]
    assert query(empty_dsn, "SELECT count(*) FROM jr_step_rewards") == [(0,)]
    assert query(empty_dsn, "SELECT count(*) FROM jr_task_attempts") == [(0,)]
