"""The command line's small answers: --version, bad counts and durations, DSN errors, reset's help."""

from __future__ import annotations

import importlib.metadata

import pytest

from jr_checkpoint import cli
from jr_checkpoint.dsn import resolve
from jr_checkpoint.errors import ConfigurationError


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"jr-checkpoint {importlib.metadata.version('jr-checkpoint')}\n"


@pytest.mark.parametrize("top", ["-1", "many"])
def test_stats_top_must_be_a_count_and_is_refused_before_any_connection(top, capsys, mocker):
    connect = mocker.patch("jr_checkpoint.db.connect")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["stats", "--top", top, "--dsn", "host=/nonexistent dbname=x"])
    assert exit_info.value.code == 2
    assert f"argument --top: must be a whole number, 0 or more: '{top}'" in capsys.readouterr().err
    connect.assert_not_called()


@pytest.mark.parametrize("argv", [["prune", "--older-than", "99999999999d"],
                                  ["stats", "--since", "365251d"]])
def test_a_duration_beyond_postgresqls_range_is_refused_before_any_connection(argv, capsys, mocker):
    connect = mocker.patch("jr_checkpoint.db.connect")
    assert cli.main([*argv, "--dsn", "host=/nonexistent dbname=x"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"jr-checkpoint: error: duration too long: {argv[2]!r} "
                   "(at most 365250d, a thousand years)\n")
    connect.assert_not_called()


@pytest.mark.parametrize(("dsn", "shown"), [
    ("host=db1 bogus=1", 'invalid connection option "bogus"'),
    ("postgresql://db1/ledger?bogus=1", 'invalid URI query parameter: "bogus"'),
])
def test_a_dsn_without_a_password_names_the_wrong_option(dsn, shown):
    with pytest.raises(ConfigurationError) as info:
        resolve(dsn)
    assert str(info.value) == f"invalid DSN from argument: invalid dsn: {shown}"


def test_resets_help_gives_its_exit_statuses(capsys):
    with pytest.raises(SystemExit):
        cli.main(["reset", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "1 nothing reset (unknown task, or the answer was no)" in help_text
