"""What a step is: identity, digests, numbering, slots (no server)."""

from __future__ import annotations

import hashlib
import pathlib
from datetime import date

import pytest

from jr_checkpoint.steps import (
    SUCCESS,
    Row,
    SlotPlan,
    digest,
    host_hash,
    identity,
    is_task_id,
    legacy_hash,
    skipped_result,
    target_file,
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# -- legacy_hash (jr-checkpoint 0.1's digest, still read) ----------------------------------------


def test_legacy_hash_is_sha256_of_sorted_compact_json():
    step = {"type": "write", "path": "a.py", "lines": [1, 2], "opts": {"z": None, "a": True}}
    expected = '{"lines":[1,2],"opts":{"a":true,"z":null},"path":"a.py","type":"write"}'
    assert legacy_hash(step) == sha(expected)
    assert len(legacy_hash(step)) == 64


def test_legacy_hash_ignores_key_order_and_tuple_versus_list():
    a = {"b": (1, 2, {"y": 1, "x": 2}), "a": "s"}
    b = {"a": "s", "b": [1, 2, {"x": 2, "y": 1}]}
    assert legacy_hash(a) == legacy_hash(b)
    assert legacy_hash(a) != legacy_hash({"a": "s", "b": [2, 1, {"x": 2, "y": 1}]})


def test_legacy_hash_renders_non_json_values_with_str():
    step = {"path": pathlib.PurePosixPath("/ganuda/x.py"), "when": date(2026, 2, 1), 3: "int key"}
    expected = '{"3":"int key","path":"/ganuda/x.py","when":"2026-02-01"}'
    assert legacy_hash(step) == sha(expected)


def test_legacy_hash_of_a_changed_step_differs():
    assert legacy_hash({"path": "a.py"}) != legacy_hash({"path": "b.py"})
    assert legacy_hash({"n": 1}) != legacy_hash({"n": "1"})


# -- is_task_id --------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 1, 7, 2**31 - 1, -(2**31)])
def test_is_task_id_accepts_int4(value):
    assert is_task_id(value) is True


@pytest.mark.parametrize("value", [True, False, 2**31, -(2**31) - 1, "7", 7.0, None])
def test_is_task_id_rejects(value):
    assert is_task_id(value) is False


def test_digests_of_a_set_is_the_same_in_every_process():
    import subprocess
    import sys

    code = ("from jr_checkpoint.steps import legacy_hash, digest; "
            "step = {'files': {'a.py', 'b.py', 'c.py', 'd.py'}}; print(legacy_hash(step), digest(step))")
    hashes = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={"PYTHONHASHSEED": str(seed)}, check=True).stdout
              for seed in (1, 2, 3, 4)}
    assert len(hashes) == 1




# -- identity: what decides a step's effect ---------------------------------------------------

def write(path="/g/app.py", content="def f():\n    return 1"):
    return {"type": "file", "args": {"operation": "write", "path": path, "content": content}}


def partial(path="/g/app.py", content="    def f():\n        return 1", mode="append"):
    return {"type": "file", "args": {"operation": "partial_edit", "path": path, "content": content,
                                      "edit_info": {"mode": mode, "anchor": None, "verb": "add"}}}


def test_a_write_and_a_partial_edit_of_the_same_content_are_one_step():
    assert digest(write()) == digest(partial())
    assert digest(partial(mode="insert_after")) == digest(partial(mode="append"))


def test_file_content_beyond_whitespace_or_another_path_is_another_step():
    assert digest(write(content="def f():\n    return 2")) != digest(write())
    assert digest(write(path="/g/other.py")) != digest(write())


def test_search_replace_is_its_path_search_and_replace_exactly():
    def sr(search="a = 1", replace="a = 2", path="/g/x.py"):
        return {"type": "search_replace", "args": {"path": path, "search": search, "replace": replace}}

    assert digest(sr()) == digest({**sr(), "critical": True})
    assert len({digest(sr()), digest(sr(search="a = 1 ")), digest(sr(replace="a = 3")),
                digest(sr(path="/g/y.py"))}) == 4


def test_a_command_is_its_text_and_type():
    assert digest({"type": "bash", "command": "make test\n"}) == digest({"type": "bash",
                                                                     "command": "make test"})
    assert digest({"type": "bash", "command": "make"}) != digest({"type": "bash", "command": "make test"})
    assert digest({"type": "bash", "command": "x"}) != digest({"type": "sql", "command": "x"})


def test_other_steps_are_their_whole_canonical_json():
    assert identity({"type": "write", "path": "a", "content": "x"})[0] == "json"
    assert digest({"b": 1, "a": 2}) == digest({"a": 2, "b": 1})
    assert digest([1, 2]) != digest([2, 1])


def test_target_file_is_where_real_steps_keep_it():
    assert target_file(write(path="/g/a.py")) == "/g/a.py"
    assert target_file({"type": "write", "path": "b.py"}) == "b.py"
    assert target_file({"type": "write", "filepath": "c.py"}) == "c.py"
    assert target_file({"type": "bash", "command": "ls"}) == ""
    assert target_file("not a dict") == ""


@pytest.mark.parametrize("hostile", ["cycle", "deep", "str"])
def test_a_hostile_step_raises_from_identity_not_later(hostile):
    if hostile == "cycle":
        step = {"type": "x"}
        step["self"] = step
    elif hostile == "deep":
        step = {"type": "x"}
        for _ in range(5000):
            step = {"type": "x", "inner": step}
    else:
        class Bad:
            def __str__(self):
                raise RuntimeError("no")
        step = {"type": "bash", "command": Bad()}
    with pytest.raises((ValueError, RecursionError, RuntimeError)):
        digest(step)


# -- SlotPlan: which row each position uses ---------------------------------------------------

def plan(rows):
    return SlotPlan(7, {n: Row(*r) for n, r in rows.items()})


def test_a_fresh_task_numbers_slots_by_position():
    p = plan({})
    assert not p.match(0, "a", "da") and not p.match(1, "b", "db")
    assert [p.slot(0), p.slot(1)] == [0, 1]


def test_a_step_that_moved_keeps_its_row_and_a_success_row_is_never_given_away():
    p = plan({0: (SUCCESS, "da"), 1: (SUCCESS, "db"), 2: ("failed", "dc")})
    # The shorter list [c, new]: c finds its row at 2; "new" may not take row 1 (a success).
    assert p.match(0, "c", "dc") and not p.succeeded(0)
    assert not p.match(1, "new", "dn")
    assert p.slot(0) == 2 and p.slot(1) == 3


def test_a_failed_row_no_step_claims_is_reused_at_its_position():
    p = plan({0: (SUCCESS, "da"), 1: ("failed", "old")})
    assert p.match(0, "a", "da") and p.succeeded(0)
    assert not p.match(1, "edited", "new")
    assert p.slot(1) == 1


def test_each_occurrence_of_a_duplicated_step_has_its_own_row():
    p = plan({0: (SUCCESS, "dd")})
    assert p.match(0, "d", "dd") and p.succeeded(0)
    assert not p.match(3, "d", "dd")  # the second occurrence never succeeded
    assert p.slot(3) == 3
    p.record(3, SUCCESS, "dd")
    q = SlotPlan(7, p.rows)
    assert q.match(0, "d", "dd") and q.match(1, "d", "dd") and q.succeeded(1)


def test_successes_are_matched_before_failures_of_the_same_step():
    p = plan({0: ("failed", "dx"), 5: (SUCCESS, "dx")})
    assert p.match(0, "x", "dx") and p.succeeded(0) and p.slot(0) == 5


def test_a_row_the_host_helpers_wrote_matches_its_position_type_and_target():
    step = {"type": "file", "args": {"path": "/g/a.py", "content": "x"}}
    rows = {1: (SUCCESS, host_hash(7, 1, "file", ""), "file", "")}
    assert plan(rows).match(1, step, digest(step))
    assert not plan(rows).match(0, step, digest(step))
    assert not plan(rows).match(1, {"type": "bash", "command": "x"}, "d")


def test_a_row_written_by_jr_checkpoint_0_1_matches_its_own_step_at_its_position():
    step = {"type": "write", "path": "a", "content": "x"}
    rows = {2: (SUCCESS, legacy_hash(step))}
    assert plan(rows).match(2, step, digest(step))
    assert not plan(rows).match(2, {**step, "content": "y"}, "other")


def test_an_odd_operation_or_command_value_is_still_identified():
    assert digest({"type": "file", "args": {"operation": 3, "path": "a", "content": "x"}}) != \
        digest({"type": "file", "args": {"operation": "3x", "path": "a", "content": "x"}})
    assert digest({"type": "bash", "command": ["ls", "-l"]}) != digest({"type": "bash", "command": "ls"})


def test_parts_cannot_run_into_each_other():
    def sr(search, replace):
        return {"type": "search_replace", "args": {"path": "p", "search": search, "replace": replace}}

    assert digest(sr("ab", "c")) != digest(sr("a", "bc"))


def test_a_skipped_result_carries_what_the_hosts_gates_read():
    """type and path, as the host's own results have them; no error text; never a failure."""
    write = {"type": "file", "args": {"operation": "write", "path": "/ganuda/app/a.py", "content": "x"}}
    assert skipped_result(write, 3) == {"success": True, "skipped": True, "checkpoint_hit": True,
                                              "step_number": 3, "type": "file", "path": "/ganuda/app/a.py"}
    assert skipped_result({"type": "bash", "command": "true"}, 0) == {
        "success": True, "skipped": True, "checkpoint_hit": True, "step_number": 0, "type": "bash"}
    assert skipped_result({"command": "true"}, 1) == {
        "success": True, "skipped": True, "checkpoint_hit": True, "step_number": 1}
    assert skipped_result("not a step", 2)["success"] is True
