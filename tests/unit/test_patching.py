"""The SEARCH/REPLACE engine and `jr-checkpoint patch`, on copies of the host stand-in (no server).

`root` is the host as the seed found it (tests/host_copy.seed_era); `today` is the stand-in as
it is, with the seed's loop and the queue client's own checkpoint methods already there.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from jr_checkpoint import cli, patching
from jr_checkpoint.errors import PatchConflict, PatchError, PatchFormatError, UnsafePatchPath
from tests.host_copy import CHECKPOINT_METHODS, CLIENT, EXECUTOR, copy_host, remove_methods, seed_era
from tests.seed_text import seed_edits

REPO = Path(__file__).parents[2]
P01 = "01_task_executor_step_checkpoints.patch"
P02 = "02_jr_queue_client_checkpoint_methods.patch"
P03 = "03_task_executor_decorator.patch"
P04 = "04_task_executor_task_id.patch"
P05 = "05_task_executor_logging_import.patch"
SIGNATURE = "    def execute_steps(self, steps: List[Dict]) -> List[Dict[str, Any]]:\n"


@pytest.fixture
def root(tmp_path) -> Path:
    """A private copy of the host stand-in as the seed found it, to patch."""
    return seed_era(tmp_path / "host")


@pytest.fixture
def today(tmp_path) -> Path:
    """A private copy of the host stand-in as it is today."""
    return copy_host(tmp_path / "today")


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (names included, so a stray temporary file shows)."""
    return {str(path.relative_to(directory)): path.read_bytes()
            for path in sorted(directory.rglob("*")) if path.is_file()}


def seed_patches() -> list[patching.Patch]:
    return patching.load_patches([P01, P02])


def write_patch(directory: Path, text: str, name: str = "test.patch") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def block_text(path: str, search: str, replace: str) -> str:
    return f"path: {path}\n<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n"


# -- the patch files -------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "step"), [(P01, 0), (P02, 1)])
def test_patch_files_hold_the_seed_edits_byte_for_byte(name, step):
    edit = seed_edits()[step]
    data = (resources.files("jr_checkpoint") / "patches" / name).read_bytes().decode("utf-8")
    assert f"\npath: {edit.path}\n" in data
    assert edit.raw in data  # markers, SEARCH and REPLACE exactly as the seed prints them
    (block,) = patching.load_patches([name])[0].blocks
    assert (block.path, block.search_text, block.replace_text) == (edit.path, edit.search, edit.replace)


def test_the_seed_has_exactly_two_edits_with_the_paths_the_issue_names():
    assert [edit.path for edit in seed_edits()] == [EXECUTOR, CLIENT]


def test_bundled_patches_are_found_through_importlib_resources():
    folder = resources.files("jr_checkpoint") / "patches"
    assert [entry.name for entry in patching.bundled()] == [P01, P02, P03, P04, P05]
    assert (folder / "README.md").is_file()


def test_top_level_patches_is_the_package_directory_not_a_second_copy():
    assert (REPO / "patches").is_symlink()
    assert (REPO / "patches").resolve() == (REPO / "jr_checkpoint" / "patches").resolve()


def test_default_set_is_every_bundled_patch_not_marked_optional():
    assert [patch.name for patch in patching.load_patches()] == [P01, P02, P04, P05]
    decorator = patching.load_patches(["03"])[0]
    assert decorator.name == P03 and decorator.optional
    assert [patch.name for patch in patching.load_patches([P03[:-6], P01])] == [P03, P01]


def test_decorator_patch_adds_the_import_and_the_decorator(root):
    patching.write(patching.plan(root, patching.load_patches(["03"])))
    source = (root / EXECUTOR).read_text()
    assert "from jr_checkpoint import checkpointed_steps\n\n\nclass TaskExecutor:\n" in source
    assert f"    @checkpointed_steps\n{SIGNATURE}" in source
    compile(source, EXECUTOR, "exec")


def test_the_stand_in_has_the_real_execute_steps_signature(today):
    """The real b23a2c5 and ab76068 files have this line; patch 03 must match it."""
    assert (today / EXECUTOR).read_text().count(SIGNATURE) == 1


def test_an_unknown_patch_name_is_an_error():
    with pytest.raises(PatchError, match="no such patch: 09"):
        patching.load_patches(["09"])


# -- today's host: the seed's loop and the client's methods are already there --------------


def count(path: Path, text: str) -> int:
    return path.read_text().count(text)


def test_on_todays_host_check_says_01_applied_02_present_04_05_apply(capsys, today):
    before = snapshot(today)
    code, out, err = run(capsys, "check", "--root", str(today))
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"{P01} block 1 ({EXECUTOR}): already applied",
        f"{P02} block 1 ({CLIENT}): already present (JrQueueClient defines save_checkpoint, "
        "get_last_checkpoint, cleanup_checkpoints)",
        f"{P04} block 1 ({EXECUTOR}): applies cleanly",
        f"{P05} block 1 ({EXECUTOR}): applies cleanly",
    ]
    assert snapshot(today) == before


def test_on_todays_host_apply_writes_only_04_05_and_never_a_method_twice(capsys, today):
    before = snapshot(today)
    code, out, _ = run(capsys, "apply", "--root", str(today))
    assert code == 0 and out.splitlines()[-1] == f"Patched 1 file(s) under {today.resolve()}"
    after = snapshot(today)
    assert {name for name in after if after[name] != before.get(name)} == {EXECUTOR}
    expected = before[EXECUTOR]
    for name in ("04", "05"):
        (block,) = patching.load_patches([name])[0].blocks
        expected = expected.replace(block.search_text.encode(), block.replace_text.encode(), 1)
    assert after[EXECUTOR] == expected
    compile(after[EXECUTOR], EXECUTOR, "exec")
    for method in CHECKPOINT_METHODS:
        assert count(today / CLIENT, f"    def {method}(") == 1
    assert count(today / EXECUTOR, "    def process_queue_task(") == 1
    assert count(today / EXECUTOR, "    def _process_queue_task(") == 1
    code, out, _ = run(capsys, "apply", "--root", str(today))
    assert code == 0 and out.splitlines()[-1] == f"Nothing to change under {today.resolve()}"
    assert run(capsys, "revert", "--root", str(today), "04", "05")[0] == 0
    assert snapshot(today) == before


def test_revert_leaves_the_hosts_own_methods_alone_and_says_so(capsys, today):
    before = snapshot(today)
    code, out, _ = run(capsys, "revert", "--root", str(today), "02")
    assert code == 0 and out.splitlines() == [
        f"{P02} block 1 ({CLIENT}): not this patch's text, left alone (JrQueueClient defines "
        "save_checkpoint, get_last_checkpoint, cleanup_checkpoints itself)",
        f"Nothing to change under {today.resolve()}"]
    assert snapshot(today) == before


def test_a_client_with_only_some_of_the_methods_is_a_one_line_conflict(capsys, today):
    remove_methods(today / CLIENT, "JrQueueClient", ("cleanup_checkpoints",))
    before = snapshot(today)
    code, out, err = run(capsys, "apply", "--root", str(today))
    assert code == 1 and snapshot(today) == before  # 04, which was clean, not written either
    (line,) = [line for line in out.splitlines() if line.startswith(P02)]
    assert line == (f"{P02} block 1 ({CLIENT}): conflict: JrQueueClient.save_checkpoint, "
                    f"JrQueueClient.get_last_checkpoint already defined in {CLIENT} but not "
                    "JrQueueClient.cleanup_checkpoints: a method is never defined twice; add the "
                    "others by hand")
    assert "no file under" in err


def test_a_method_defined_by_assignment_counts_as_defined(tmp_path):
    (tmp_path / "a.py").write_text("class C:\n    x = 1\n    def m(self):\n        pass\n")
    text = ("path: a.py\nadds-methods: C.m\n<<<<<<< SEARCH\n    x = 1\n=======\n    x = 1\n\n"
            "    def m(self):\n        return 2\n>>>>>>> REPLACE\n")
    plan = patching.plan(tmp_path, [patching.parse(text)])
    assert [(o.state, o.reason) for o in plan.outcomes] == [(patching.PRESENT, "C defines m")]
    (tmp_path / "a.py").write_text("class C:\n    x = 1\n    m = staticmethod(len)\n")
    assert patching.plan(tmp_path, [patching.parse(text)]).outcomes[0].state == patching.PRESENT


def test_a_block_that_would_define_a_method_twice_is_refused_without_the_header(today):
    """The guard that needs no header: 02 without its adds-methods line on today's client."""
    data = (patching.bundled()[1].read_bytes().decode()).replace("adds-methods:", "# adds-methods:")
    plan = patching.plan(today, [patching.parse(data, "no-header.patch")])
    assert plan.conflicts[0].reason == (
        "the result would define JrQueueClient.cleanup_checkpoints, JrQueueClient.get_last_checkpoint, "
        f"JrQueueClient.save_checkpoint twice in {CLIENT}")


def test_a_block_that_would_break_a_python_file_is_refused(tmp_path):
    (tmp_path / "a.py").write_text("def f():\n    return 1\n")
    plan = patching.plan(tmp_path, [patching.parse(block_text("a.py", "    return 1\n",
                                                              "  return (1\n"))])
    assert plan.conflicts and plan.conflicts[0].reason.startswith(
        "the result would not be valid Python (")
    (tmp_path / "a.txt").write_text("def f():\n    return 1\n")  # not Python: not checked
    plan = patching.plan(tmp_path, [patching.parse(block_text("a.txt", "    return 1\n",
                                                              "  return (1\n"))])
    assert not plan.conflicts


# Runs the patched process_queue_task with a stub body: which _current_task_id did it see?
TASK_ID_PROBE = r"""
import json, sys
from task_executor import TaskExecutor
executor = TaskExecutor()
seen = []
def body(task):
    seen.append(getattr(executor, '_current_task_id', None))
    if task.get('raise'):
        raise RuntimeError('boom')
    return {'success': True}
executor._process_queue_task = body
out = []
for task in json.loads(sys.argv[1]):
    try:
        executor.process_queue_task(task)
        outcome = 'returned'
    except RuntimeError:
        outcome = 'raised'
    out.append([seen[-1], outcome, getattr(executor, '_current_task_id', None)])
print(json.dumps(out))
"""


def test_patch_04_sets_the_integer_queue_id_for_the_call_only(today, tmp_path):
    patching.write(patching.plan(today, patching.load_patches(["04"])))
    tasks = [{"id": 4242, "task_id": "T-1"}, {"id": 7, "raise": True}, {"task_id": "T-2"},
             {"id": "7"}, {"id": True}]
    env = {**os.environ, "PYTHONPATH": str(today / "jr_executor"), "PYTHONDONTWRITEBYTECODE": "1",
           "GANUDA_ROOT": str(tmp_path), "CHEROKEE_DB_HOST": "unused", "CHEROKEE_DB_PORT": "1",
           "CHEROKEE_DB_NAME": "unused", "CHEROKEE_DB_USER": "unused"}
    done = subprocess.run([sys.executable, "-c", TASK_ID_PROBE, json.dumps(tasks)], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [[4242, "returned", None], [7, "raised", None],
                                       [None, "returned", None], [None, "returned", None],
                                       [None, "returned", None]]


# -- parsing ---------------------------------------------------------------------------------


def test_parse_reads_paths_blocks_and_comments_with_crlf_patch_files():
    text = ("# two files\npath: a.py\n\n<<<<<<< SEARCH\nold\n=======\nnew\n  two\n>>>>>>> REPLACE\n"
            "path: sub/b.py\n<<<<<<< SEARCH\nx\n\n=======\ny\n>>>>>>> REPLACE\n")
    for variant in (text, text.replace("\n", "\r\n")):
        patch = patching.parse(variant, "t.patch")
        assert [(b.number, b.line, b.path) for b in patch.blocks] == [(1, 4, "a.py"), (2, 11, "sub/b.py")]
        assert patch.blocks[0].replace == ("new", "  two") and patch.blocks[1].search == ("x", "")
        assert not patch.optional


MALFORMED = [
    ("<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\n", 1, "block without a path"),
    ("# c\npath: a.py\n<<<<<<< SEARCH\na\nb\n", 3, "no '=======' before the end"),
    ("path: a.py\n<<<<<<< SEARCH\na\n=======\nb\n", 2, "no '>>>>>>> REPLACE' before the end"),
    ("path: a.py\n<<<<<<< SEARCH\na\n>>>>>>> REPLACE\n", 4, "before '======='"),
    ("path: a.py\n\n=======\n", 3, "outside a block"),
    ("path: a.py\n<<<<<<< SEARCH\na\n=======\nb\n=======\n", 6, "second '======='"),
    ("path: a.py\n<<<<<<< SEARCH\na\n<<<<<<< SEARCH\n", 4, "inside the block opened at line 2"),
    ("path: a.py\nfrobnicate: yes\n", 2, "bad header"),
    ("path: a.py\noptional: maybe\n", 2, "bad header"),
    ("path:\n<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\n", 1, "bad header"),
    ("path: a.py\n    def stray(self):\n", 2, "unexpected line"),
    ("# only a comment\n", 1, "no '<<<<<<< SEARCH' block"),
    ("", 1, "no '<<<<<<< SEARCH' block"),
    ("path: a.py\n<<<<<<< SEARCH\n=======\nb\n>>>>>>> REPLACE\n", 2, "non-empty"),
    ("path: a.py\n<<<<<<< SEARCH\na\n=======\na\n>>>>>>> REPLACE\n", 2, "differ"),
    ("path: a.py\nadds-methods: m\n", 2, "expected 'Class.method' names"),
    ("path: a.py\nadds-methods: C.m, \n", 2, "expected 'Class.method' names"),
    ("path: a.py\nadds-methods:\n", 2, "expected 'Class.method' names"),
    ("path: a.py\nadds-methods: C.m\nadds-methods: C.n\n", 3, "once per block"),
    ("path: a.py\nadds-methods: C.m\n", 2, "without a '<<<<<<< SEARCH' block after it"),
    ("path: a.py\nadds-methods: C.m\n<<<<<<< SEARCH\na\n=======\n    def n(self):\n>>>>>>> REPLACE\n",
     2, "names C.m, but the block at line 3 does not add 'def m('"),
    ("path: a.py\nadds-methods: C.m\n<<<<<<< SEARCH\n    def m(self):\n=======\n    def m(self):\n"
     "        pass\n>>>>>>> REPLACE\n", 2, "does not add 'def m('"),
]


def test_adds_methods_belongs_to_the_next_block_only():
    text = ("path: a.py\nadds-methods: C.m, D.n\n<<<<<<< SEARCH\na\n=======\n    def m(self):\n"
            "    async def n(self):\n>>>>>>> REPLACE\n<<<<<<< SEARCH\nb\n=======\nc\n>>>>>>> REPLACE\n")
    first, second = patching.parse(text).blocks
    assert (first.adds, second.adds) == ((("C", "m"), ("D", "n")), ())
    (block,) = patching.load_patches(["02"])[0].blocks
    assert block.adds == tuple(("JrQueueClient", name) for name in CHECKPOINT_METHODS)


@pytest.mark.parametrize(("text", "line", "words"), MALFORMED)
def test_malformed_patch_is_refused_with_file_name_and_line(text, line, words):
    with pytest.raises(PatchFormatError) as caught:
        patching.parse(text, "bad.patch")
    assert str(caught.value).startswith(f"bad.patch:{line}: ")
    assert words in str(caught.value)
    assert caught.value.exit_code == 1


def test_a_patch_file_that_is_not_utf8_is_refused(tmp_path):
    path = tmp_path / "latin1.patch"
    path.write_bytes(block_text("a.py", "caf\xe9\n", "x\n").encode("latin-1"))
    with pytest.raises(PatchFormatError, match="latin1.patch: not UTF-8"):
        patching.load_patches([str(path)])


# -- check, apply, revert --------------------------------------------------------------------


def test_seed_patches_apply_cleanly_to_the_stand_in_and_change_only_the_blocks(root):
    before = snapshot(root)
    plan = patching.plan(root, seed_patches())
    assert [outcome.state for outcome in plan.outcomes] == [patching.PENDING, patching.PENDING]
    assert snapshot(root) == before  # planning writes nothing
    written = patching.write(plan)
    assert sorted(written) == sorted([(root / EXECUTOR).resolve(), (root / CLIENT).resolve()])
    for edit in seed_edits():
        expected = before[edit.path].decode().replace(edit.search, edit.replace, 1)
        assert (root / edit.path).read_text() == expected


def test_second_apply_is_a_no_op(root):
    patching.write(patching.plan(root, seed_patches()))
    once = snapshot(root)
    plan = patching.plan(root, seed_patches())
    assert [outcome.state for outcome in plan.outcomes] == [patching.DONE, patching.DONE]
    assert patching.write(plan) == []
    assert snapshot(root) == once


def test_revert_restores_the_exact_original_bytes(root):
    original = snapshot(root)
    patching.write(patching.plan(root, patching.load_patches([P01, P02, P03])))
    assert snapshot(root) != original
    plan = patching.plan(root, patching.load_patches([P01, P02, P03]), reverse=True)
    assert {outcome.state for outcome in plan.outcomes} == {patching.PENDING}
    patching.write(plan)
    assert snapshot(root) == original


def test_revert_of_a_never_patched_tree_is_a_no_op(root):
    original = snapshot(root)
    plan = patching.plan(root, seed_patches(), reverse=True)
    assert [outcome.state for outcome in plan.outcomes] == [patching.DONE, patching.DONE]
    assert patching.write(plan) == []
    assert snapshot(root) == original


def test_a_drifted_line_refuses_the_apply_and_leaves_every_file_untouched(root):
    client = root / CLIENT
    client.write_text(client.read_text().replace('"""Close database connection."""',
                                                 '"""Close the database connection."""'))
    before = snapshot(root)
    plan = patching.plan(root, seed_patches())
    assert [outcome.state for outcome in plan.outcomes] == [patching.PENDING, patching.CONFLICT]
    conflict = plan.conflicts[0]
    assert conflict.reason == f"SEARCH text not found in {CLIENT}"
    assert '-        """Close database connection."""' in conflict.context
    assert '+        """Close the database connection."""' in conflict.context
    with pytest.raises(PatchConflict, match="no file was changed"):
        patching.write(plan)
    assert snapshot(root) == before  # task_executor.py, whose block was clean, included


def test_a_drifted_hand_made_change_is_shown_against_replace(today):
    """Today's host has 01's REPLACE text by hand; an edit to it is shown against REPLACE."""
    executor = today / EXECUTOR
    executor.write_text(executor.read_text().replace("            results.append(result)\n",
                                                     "            results.append(dict(result))\n"))
    (conflict,) = patching.plan(today, patching.load_patches(["01"])).conflicts
    assert conflict.reason == (f"SEARCH text not found in {EXECUTOR}, nor REPLACE text; "
                               "closest to REPLACE:")
    assert conflict.context[0] == "--- REPLACE of block 1"
    assert "-            results.append(result)" in conflict.context
    assert "+            results.append(dict(result))" in conflict.context


def test_search_found_twice_is_a_refusal_naming_the_lines(root):
    client = root / CLIENT
    close = seed_edits()[1].search
    client.write_text(client.read_text() + "\n\nclass Other:\n" + close)
    before = snapshot(root)
    plan = patching.plan(root, seed_patches())
    assert plan.conflicts[0].block.label() == f"{P02} block 1 ({CLIENT})"
    assert "SEARCH text found 2 times" in plan.conflicts[0].reason
    assert "must match exactly once" in plan.conflicts[0].reason
    with pytest.raises(PatchConflict):
        patching.write(plan)
    assert snapshot(root) == before


def test_search_inside_a_longer_line_does_not_count(tmp_path):
    (tmp_path / "a.py").write_text("    x = 1\n        x = 1\n")
    patch = patching.parse(block_text("a.py", "    x = 1\n", "    x = 2\n"))
    patching.write(patching.plan(tmp_path, [patch]))
    assert (tmp_path / "a.py").read_text() == "    x = 2\n        x = 1\n"


def test_both_search_and_replace_present_is_a_conflict(tmp_path):
    (tmp_path / "a.py").write_text("old\nnew\n")
    plan = patching.plan(tmp_path, [patching.parse(block_text("a.py", "old\n", "new\n"))])
    assert plan.conflicts and "both SEARCH (line 1) and REPLACE (line 2)" in plan.conflicts[0].reason


def test_blocks_on_one_file_apply_in_order_and_revert_in_reverse(tmp_path):
    (tmp_path / "a.py").write_text("one\n")
    text = block_text("a.py", "one\n", "two\n") + "<<<<<<< SEARCH\ntwo\n=======\nthree\n>>>>>>> REPLACE\n"
    patch = patching.parse(text)
    patching.write(patching.plan(tmp_path, [patch]))
    assert (tmp_path / "a.py").read_text() == "three\n"
    patching.write(patching.plan(tmp_path, [patch], reverse=True))
    assert (tmp_path / "a.py").read_text() == "one\n"


def test_crlf_file_is_patched_and_keeps_crlf_and_revert_restores_it(root):
    executor = root / EXECUTOR
    executor.write_bytes(executor.read_bytes().replace(b"\n", b"\r\n"))
    original = executor.read_bytes()
    patching.write(patching.plan(root, seed_patches()))
    patched = executor.read_bytes()
    assert seed_edits()[0].replace.replace("\n", "\r\n").encode() in patched
    assert patched.count(b"\n") == patched.count(b"\r\n")  # no bare LF slipped in
    patching.write(patching.plan(root, seed_patches(), reverse=True))
    assert executor.read_bytes() == original


def test_last_line_without_newline_stays_without(tmp_path):
    (tmp_path / "a.py").write_bytes(b"keep\r\nold")
    patch = patching.parse(block_text("a.py", "old\n", "new\nnewer\n"))
    patching.write(patching.plan(tmp_path, [patch]))
    assert (tmp_path / "a.py").read_bytes() == b"keep\r\nnew\r\nnewer"
    patching.write(patching.plan(tmp_path, [patch], reverse=True))
    assert (tmp_path / "a.py").read_bytes() == b"keep\r\nold"


def test_file_mode_is_kept(root):
    (root / EXECUTOR).chmod(0o751)
    (root / CLIENT).chmod(0o600)
    patching.write(patching.plan(root, seed_patches()))
    assert stat.S_IMODE((root / EXECUTOR).stat().st_mode) == 0o751
    assert stat.S_IMODE((root / CLIENT).stat().st_mode) == 0o600


def test_a_symlink_inside_the_root_is_followed_and_kept(root):
    real = root / "jr_executor" / "real_client.py"
    (root / CLIENT).rename(real)
    (root / CLIENT).symlink_to("real_client.py")
    patching.write(patching.plan(root, seed_patches()))
    assert (root / CLIENT).is_symlink()
    assert "def save_checkpoint(" in real.read_text()


def test_a_file_changed_after_planning_is_not_overwritten(root):
    plan = patching.plan(root, seed_patches())
    (root / CLIENT).write_text((root / CLIENT).read_text() + "# edited meanwhile\n")
    before = snapshot(root)
    with pytest.raises(PatchConflict, match="changed while it was being patched"):
        patching.write(plan)
    assert snapshot(root) == before


def test_a_failure_while_staging_changes_nothing(root, monkeypatch):
    before = snapshot(root)
    real_mkstemp, calls = patching.tempfile.mkstemp, []

    def mkstemp(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(patching.tempfile, "mkstemp", mkstemp)
    with pytest.raises(PatchError, match="No space left on device; no file was changed"):
        patching.write(patching.plan(root, seed_patches()))
    assert snapshot(root) == before


def test_a_failure_while_replacing_puts_the_earlier_files_back(root, monkeypatch):
    before = snapshot(root)
    real_replace, failed = os.replace, []

    def replace(source, destination):
        if Path(destination).name == "jr_queue_client.py" and not failed:
            failed.append(destination)
            raise OSError(5, "Input/output error")
        return real_replace(source, destination)

    monkeypatch.setattr(patching.os, "replace", replace)
    with pytest.raises(PatchError, match="files already replaced were restored"):
        patching.write(patching.plan(root, seed_patches()))
    assert failed and snapshot(root) == before


# -- where a patch may write -----------------------------------------------------------------


@pytest.mark.parametrize("target", ["/etc/hosts", "../outside.py", "jr_executor/../../outside.py",
                                    "C:\\outside.py", "..\\outside.py"])
def test_targets_that_leave_the_root_are_refused(tmp_path, root, target):
    outside = tmp_path / "outside.py"
    outside.write_text("old\n")
    patch = patching.parse(block_text(target, "old\n", "new\n"))
    with pytest.raises(UnsafePatchPath, match="refused") as caught:
        patching.plan(root, [patch])
    assert caught.value.exit_code == 1
    assert outside.read_text() == "old\n"


@pytest.mark.parametrize("link", ["jr_executor/escape.py", "linked_dir/outside.py"])
def test_a_symlink_pointing_outside_the_root_is_refused(tmp_path, root, link):
    outside = tmp_path / "outside.py"
    outside.write_text("old\n")
    (root / "jr_executor" / "escape.py").symlink_to(outside)
    (root / "linked_dir").symlink_to(tmp_path, target_is_directory=True)
    patch = patching.parse(block_text(link, "old\n", "new\n"))
    with pytest.raises(UnsafePatchPath, match="outside the root"):
        patching.plan(root, [patch])
    assert outside.read_text() == "old\n"


def test_an_unsafe_block_refuses_the_whole_patch_set_before_any_write(tmp_path, root):
    before = snapshot(root)
    unsafe = patching.parse(block_text("../x.py", "a\n", "b\n"), "unsafe.patch")
    with pytest.raises(UnsafePatchPath, match="unsafe.patch block 1"):
        patching.plan(root, [*seed_patches(), unsafe])
    assert snapshot(root) == before


def test_missing_root_and_missing_target_are_errors(tmp_path, root):
    with pytest.raises(PatchError, match="is not a directory"):
        patching.plan(tmp_path / "nowhere", seed_patches())
    (root / CLIENT).unlink()
    with pytest.raises(PatchError, match=f"target file {CLIENT} not found") as caught:
        patching.plan(root, seed_patches())
    assert caught.value.exit_code == 2


# -- the command line ------------------------------------------------------------------------


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["patch", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_check_apply_again_and_revert(capsys, root):
    original = snapshot(root)
    line1, line2, line4, line5 = (f"{P01} block 1 ({EXECUTOR})", f"{P02} block 1 ({CLIENT})",
                                  f"{P04} block 1 ({EXECUTOR})", f"{P05} block 1 ({EXECUTOR})")
    assert run(capsys, "check", "--root", str(root)) == (
        0, f"{line1}: applies cleanly\n{line2}: applies cleanly\n{line4}: applies cleanly\n"
        f"{line5}: applies cleanly\n", "")
    assert snapshot(root) == original
    code, out, _ = run(capsys, "apply", "--root", str(root))
    assert code == 0 and out.splitlines()[:4] == [f"{line1}: applied", f"{line2}: applied",
                                                  f"{line4}: applied", f"{line5}: applied"]
    assert out.splitlines()[4] == f"Patched 2 file(s) under {root.resolve()}"
    code, out, _ = run(capsys, "apply", "--root", str(root))
    assert code == 0 and (f"{line1}: already applied\n{line2}: already applied\n"
                          f"{line4}: already applied\n{line5}: already applied\nNothing to change") in out
    assert run(capsys, "check", "--root", str(root))[0] == 0
    code, out, _ = run(capsys, "revert", "--root", str(root))
    assert code == 0 and f"{line2}: reverted" in out
    assert snapshot(root) == original
    code, out, _ = run(capsys, "revert", "--root", str(root))
    assert code == 0 and f"{line1}: not applied" in out


def test_cli_conflict_check_exits_1_and_apply_refuses_with_1(capsys, root):
    executor = root / EXECUTOR
    executor.write_text(executor.read_text().replace("            results.append(result)\n",
                                                     "            results.append(dict(result))\n"))
    before = snapshot(root)
    code, out, err = run(capsys, "check", "--root", str(root), "01", "02")
    assert code == 1 and err == ""
    assert f"{P01} block 1 ({EXECUTOR}): conflict: SEARCH text not found in {EXECUTOR}\n" in out
    assert "    -            results.append(result)\n" in out
    assert "    +            results.append(dict(result))\n" in out
    assert f"{P02} block 1 ({CLIENT}): applies cleanly\n" in out
    code, out, err = run(capsys, "apply", "--root", str(root))
    assert code == 1 and "conflict: SEARCH text not found" in out
    assert err == (f"jr-checkpoint: error: refused: 1 of 4 blocks conflict; "
                   f"no file under {root.resolve()} was changed\n")
    assert snapshot(root) == before


def test_cli_one_line_errors(capsys, tmp_path, root):
    code, out, err = run(capsys, "check", "--root", str(tmp_path / "nowhere"))
    assert (code, out) == (2, "")
    assert err == f"jr-checkpoint: error: root {tmp_path / 'nowhere'} is not a directory\n"
    (root / CLIENT).unlink()
    code, _, err = run(capsys, "apply", "--root", str(root))
    assert code == 2 and err.count("\n") == 1 and f"target file {CLIENT} not found" in err
    bad = write_patch(tmp_path, "path: a.py\n<<<<<<< SEARCH\nx\n")
    code, _, err = run(capsys, "check", "--root", str(root), str(bad))
    assert code == 1 and err == (f"jr-checkpoint: error: {bad}:2: the block opened here has no "
                                 "'=======' before the end\n")
    code, _, err = run(capsys, "apply", "--root", str(root), "no-such-patch")
    assert code == 2 and err.startswith("jr-checkpoint: error: no such patch: no-such-patch")
    unsafe = write_patch(tmp_path, block_text("../outside.py", "a\n", "b\n"), "unsafe.patch")
    code, _, err = run(capsys, "apply", "--root", str(root), str(unsafe))
    assert code == 1 and "uses '..'" in err and err.count("\n") == 1


def test_cli_requires_root(capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["patch", "check"])
    assert caught.value.code == 2
    assert "--root" in capsys.readouterr().err
