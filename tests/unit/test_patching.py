"""The SEARCH/REPLACE engine and `jr-checkpoint patch`, on copies of the host stand-in (no server)."""

from __future__ import annotations

import os
import shutil
import stat
from importlib import resources
from pathlib import Path

import pytest

from jr_checkpoint import cli, patching
from jr_checkpoint.errors import PatchConflict, PatchError, PatchFormatError, UnsafePatchPath
from tests.seed_text import seed_edits

HOST = Path(__file__).parents[1] / "host"
REPO = Path(__file__).parents[2]
EXECUTOR = "jr_executor/task_executor.py"
CLIENT = "jr_executor/jr_queue_client.py"
P01 = "01_task_executor_step_checkpoints.patch"
P02 = "02_jr_queue_client_checkpoint_methods.patch"
P03 = "03_task_executor_decorator.patch"


@pytest.fixture
def root(tmp_path) -> Path:
    """A private copy of the host stand-in to patch."""
    copy = tmp_path / "host"
    shutil.copytree(HOST, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


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
    assert [entry.name for entry in patching.bundled()] == [P01, P02, P03]
    assert (folder / "README.md").is_file()


def test_top_level_patches_is_the_package_directory_not_a_second_copy():
    assert (REPO / "patches").is_symlink()
    assert (REPO / "patches").resolve() == (REPO / "jr_checkpoint" / "patches").resolve()


def test_default_set_is_every_bundled_patch_not_marked_optional():
    assert [patch.name for patch in patching.load_patches()] == [P01, P02]
    decorator = patching.load_patches(["03"])[0]
    assert decorator.name == P03 and decorator.optional
    assert [patch.name for patch in patching.load_patches([P03[:-6], P01])] == [P03, P01]


def test_decorator_patch_adds_the_import_and_the_decorator(root):
    patching.write(patching.plan(root, patching.load_patches(["03"])))
    source = (root / EXECUTOR).read_text()
    assert "from jr_checkpoint import checkpointed_steps\n\n\nclass TaskExecutor:\n" in source
    assert "    @checkpointed_steps\n    def execute_steps(self, steps, saga_tx=None):\n" in source
    compile(source, EXECUTOR, "exec")


def test_an_unknown_patch_name_is_an_error():
    with pytest.raises(PatchError, match="no such patch: 04"):
        patching.load_patches(["04"])


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
]


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
    line1, line2 = f"{P01} block 1 ({EXECUTOR})", f"{P02} block 1 ({CLIENT})"
    assert run(capsys, "check", "--root", str(root)) == (
        0, f"{line1}: applies cleanly\n{line2}: applies cleanly\n", "")
    assert snapshot(root) == original
    code, out, _ = run(capsys, "apply", "--root", str(root))
    assert code == 0 and out.splitlines()[:2] == [f"{line1}: applied", f"{line2}: applied"]
    assert out.splitlines()[2] == f"Patched 2 file(s) under {root.resolve()}"
    code, out, _ = run(capsys, "apply", "--root", str(root))
    assert code == 0 and f"{line1}: already applied\n{line2}: already applied\nNothing to change" in out
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
    assert err == (f"jr-checkpoint: error: refused: 1 of 2 blocks conflict; "
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
