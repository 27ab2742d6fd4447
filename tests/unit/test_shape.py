"""jr_checkpoint.shape without a server: fit() and the reading of live_shape's rows."""

from __future__ import annotations

import pytest

from jr_checkpoint.shape import CUT_MARK, SEED, fit, from_rows

# live_shape's rows for the seed's own tables: (table, [column, type, chars, not null, default], keys)
SEED_ROWS = [
    ("jr_step_rewards", [
        ["id", "integer", None, True, True], ["task_id", "integer", None, True, False],
        ["step_number", "integer", None, True, False],
        ["step_type", "character varying(50)", 50, False, False],
        ["target_file", "text", None, False, False],
        ["step_content_hash", "character varying(64)", 64, False, False],
        ["execution_result", "character varying(20)", 20, True, True],
        ["execution_time_ms", "integer", None, False, False], ["error_detail", "text", None, False, False],
        ["created_at", "timestamp without time zone", None, False, True],
        ["updated_at", "timestamp without time zone", None, False, True]],
     [["id"], ["task_id", "step_number"]]),
    ("jr_task_checkpoints", [
        ["id", "integer", None, True, True], ["task_id", "integer", None, True, False],
        ["last_completed_step", "integer", None, True, True], ["total_steps", "integer", None, False, False],
        ["checkpoint_data", "jsonb", None, False, False],
        ["created_at", "timestamp without time zone", None, False, True],
        ["updated_at", "timestamp without time zone", None, False, True]],
     [["id"], ["task_id"]]),
    ("jr_task_attempts", [
        ["task_id", "integer", None, True, False], ["attempt", "integer", None, True, False],
        ["owner", "text", None, False, False], ["host", "text", None, False, False],
        ["pid", "integer", None, False, False],
        ["started_at", "timestamp without time zone", None, False, True],
        ["ended_at", "timestamp without time zone", None, False, False],
        ["outcome", "character varying(20)", 20, True, True], ["resumed_at", "integer", None, False, False],
        ["ran", "integer[]", None, False, False], ["skipped", "integer[]", None, False, False],
        ["failed", "integer[]", None, False, False], ["lease_until", "double precision", None, False, False]],
     [["task_id", "attempt"]]),
]


def rows_with(table: str, column: str, **change) -> list:
    rows = [(name, [list(c) for c in columns], keys) for name, columns, keys in SEED_ROWS]
    for name, columns, _ in rows:
        for entry in columns:
            if name == table and entry[0] == column:
                for field, value in change.items():
                    entry[["type", "chars", "not_null", "default"].index(field) + 1] = value
    return rows


def test_fit_leaves_what_fits_alone():
    assert fit("bash", 30) == "bash"
    assert fit("x" * 30, 30) == "x" * 30
    assert fit(None, 30) is None
    assert fit("x" * 10_000, None) == "x" * 10_000  # unbounded: the store bounds it


def test_fit_cuts_and_marks_inside_the_width():
    cut = fit("t" * 40, 30)
    assert len(cut) == 30 and cut == "t" * (30 - len(CUT_MARK)) + CUT_MARK
    assert fit("/p" * 300, 500).endswith(CUT_MARK) and len(fit("/p" * 300, 500)) == 500
    assert fit("é" * 40, 30) == "é" * 22 + CUT_MARK  # characters, as VARCHAR counts them
    assert fit("abcdefghij", 5) == "abcde"  # too narrow for the mark


def test_fit_escapes_nul_before_it_measures_and_takes_any_value():
    assert fit("a\x00b", 30) == "a\\x00b"
    assert len(fit("\x00" * 30, 30)) == 30
    assert fit(12345, 3) == "123"

    class Hostile:
        def __str__(self):
            raise RuntimeError("no")

    assert fit(Hostile(), 30) == "<unprintable>"


def test_the_seeds_own_rows_are_the_seed_shape():
    assert from_rows(SEED_ROWS) == SEED
    assert SEED.writable and SEED.incompatibility() == ""


def test_a_narrower_not_null_step_type_is_adapted_not_a_problem():
    shape = from_rows(rows_with("jr_step_rewards", "step_type", type="character varying(30)",
                                chars=30, not_null=True))
    assert (shape.step_type_chars, shape.step_type_required, shape.writable) == (30, True, True)
    assert shape.problems == () and len(shape.notes) == 2


def test_a_narrower_hash_column_cannot_be_adapted():
    shape = from_rows(rows_with("jr_step_rewards", "step_content_hash",
                                type="character varying(32)", chars=32))
    assert not shape.steps_compatible and shape.checkpoints_compatible
    assert shape.problems == ("column jr_step_rewards.step_content_hash is character varying(32), "
                              "the seed's character varying(64): a longer value cannot be written",)
    assert shape.incompatibility().startswith("jr_step_rewards not of the seed's shape (column ")


def test_missing_seed_tables_are_not_found():
    shape = from_rows([])
    assert not shape.found and not shape.writable
    assert shape.problems == tuple(f"table {t} is missing" for t in
                                   ("jr_step_rewards", "jr_task_checkpoints", "jr_task_attempts"))
    assert "run `jr-checkpoint migrate`" in shape.incompatibility()


@pytest.mark.parametrize("keys", [[["id"], ["task_id", "step_number"]], [["id"]]])
def test_a_checkpoints_table_with_a_step_number_is_per_step(keys):
    per_step = [["id", "integer", None, True, True], ["task_id", "integer", None, True, False],
                ["step_number", "integer", None, True, False]]
    rows = [row for row in SEED_ROWS if row[0] != "jr_task_checkpoints"]
    rows.append(("jr_task_checkpoints", per_step, keys))
    shape = from_rows(rows)
    assert not shape.checkpoints_compatible and shape.steps_compatible and shape.found
    assert len(shape.problems) == 1 and "is per step" in shape.problems[0]


def test_fit_step_gives_placeholders_only_where_required():
    jan31 = from_rows(rows_with("jr_step_rewards", "step_type", type="character varying(30)",
                                chars=30, not_null=True))
    assert jan31.fit_step(None, None, None) == ("unknown", None, None)
    assert SEED.fit_step(None, None, None) == (None, None, None)
    assert jan31.fit_step("t" * 40, "p", "e" * 9000) == ("t" * 22 + CUT_MARK, "p", "e" * 9000)
