"""The dashboard's routes: three pages, each with a JSON twin under ``api/``.

Read-only: every route runs SELECTs (``web/ledger.py``), nothing else. A bad parameter is a
400 with one line, an unreachable database a 503 page that retries by itself, and every
value from the ledger is escaped by Jinja (or by ``charts.py`` for the SVG).
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Callable
from typing import Any, overload

from flask import Blueprint, Response, render_template, request
from flask.typing import ResponseReturnValue

from .. import history
from ..dsn import Target
from ..errors import CheckpointError, ConfigurationError, DatabaseUnavailable, SchemaMissing
from ..steps import parse_task_id
from . import charts, ledger

logger = logging.getLogger(__name__)

RETRY_SECONDS = 5  # the 503 page, and a page showing a running task, reload this often
MAX_PAGE = 500


#: The host's ``auth`` decorator, applied to each view.
ViewDecorator = Callable[[Callable[..., Any]], Callable[..., Any]]


class BadParameter(ValueError):
    """A query parameter the dashboard cannot use: a 400 with this one line."""


@overload
def _choice(name: str, allowed: Any, default: str) -> str: ...
@overload
def _choice(name: str, allowed: Any, default: None) -> str | None: ...
def _choice(name: str, allowed: Any, default: str | None) -> str | None:
    value = request.args.get(name, default)
    if value in (None, "") and default is None:
        return None
    if value not in allowed:
        raise BadParameter(f"bad {name} {value!r}: use one of {', '.join(allowed)}")
    return value


def _integer(name: str, default: int, low: int, high: int) -> int:
    text = request.args.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise BadParameter(f"bad {name} {text!r}: use a whole number from {low} to {high}")
    return value


def _task_id(text: str) -> int:
    value = parse_task_id(text)
    if value is None:
        raise BadParameter(f"bad task id {text!r}: use an INTEGER (-2147483648..2147483647)")
    return value


def _json(data: Any, status: int = 200) -> Response:
    """As the command line prints it: ``json.dumps(..., default=str)``."""
    return Response(json.dumps(data, default=str), status=status, mimetype="application/json")


class Views:
    """The routes of one mount, bound to where its database is."""

    def __init__(self, target: Callable[[], Target], connect_timeout: float | None):
        self._target = target
        self._timeout = connect_timeout

    # -- pages and their JSON twins ---------------------------------------------------------

    def _tasks_data(self) -> dict[str, Any]:
        state = _choice("state", ledger.STATES, None)
        before_text = request.args.get("before")
        try:
            before = ledger.Cursor.parse(before_text) if before_text else None
        except ConfigurationError as exc:
            raise BadParameter(str(exc)) from None
        limit = _integer("limit", ledger.PAGE_SIZE, 1, MAX_PAGE)
        return ledger.tasks(self._target(), state=state, before=before, limit=limit,
                            connect_timeout=self._timeout)

    def tasks_page(self) -> str:
        data = self._tasks_data()
        running = any(t["state"] == "running" for t in data["tasks"])
        return render_template("jr_checkpoint/tasks.html", data=data, states=ledger.STATES,
                               refresh=RETRY_SECONDS if running else None, page="tasks")

    def tasks_api(self) -> Response:
        return _json(self._tasks_data())

    def _task_data(self, task_id: str) -> tuple[dict[str, Any] | None, int]:
        number = _task_id(task_id)
        return ledger.task(self._target(), number, connect_timeout=self._timeout), number

    def task_page(self, task_id: str) -> tuple[str, int] | str:
        data, number = self._task_data(task_id)
        if data is None:  # no host, port or database name on a page: the reader may be anyone
            return render_template("jr_checkpoint/error.html", status=404, page="tasks",
                                   message=f"task {number}: nothing recorded"), 404
        longest = max((s["execution_time_ms"] or 0 for s in data["steps"]), default=0)
        return render_template("jr_checkpoint/task.html", task=data, longest=longest, page="tasks",
                               timeline=history.timeline(data), outcome=history.shown_outcome,
                               stopped_at=history.stopped_at, ranges=history.ranges,
                               refresh=RETRY_SECONDS if data["state"] == "running" else None)

    def task_api(self, task_id: str) -> Response:
        data, number = self._task_data(task_id)
        if data is None:
            return _json({"error": f"task {number}: nothing recorded"}, 404)
        return _json(data)

    def _analytics_data(self) -> dict[str, Any]:
        since = _choice("since", tuple(ledger.WINDOWS), "24h")
        top = _integer("top", 10, 1, 100)
        return ledger.analytics(self._target(), since, top=top, connect_timeout=self._timeout)

    def analytics_page(self) -> str:
        report = self._analytics_data()
        return render_template("jr_checkpoint/analytics.html", report=report, page="analytics",
                               windows=tuple(ledger.WINDOWS), figures=_figures(report), refresh=None)

    def analytics_api(self) -> Response:
        return _json(self._analytics_data())

    # -- errors ------------------------------------------------------------------------------

    @staticmethod
    def _error(status: int, message: str) -> ResponseReturnValue:
        if (request.endpoint or "").rpartition(".")[2].startswith("api_"):  # not the path: the
            # host may well mount the dashboard under an /api/ prefix of its own
            return _json({"error": message}, status)
        return render_template("jr_checkpoint/error.html", status=status, message=message,
                               page=None, refresh=RETRY_SECONDS if status == 503 else None), status

    def bad_parameter(self, exc: BadParameter) -> ResponseReturnValue:
        return self._error(400, str(exc))

    def ledger_error(self, exc: CheckpointError) -> ResponseReturnValue:
        """The full message goes to the log; the page names no host, port or database."""
        logger.warning("dashboard query failed: %s", exc, extra={"action": "dashboard_error"})
        if isinstance(exc, SchemaMissing):
            return self._error(503, "the checkpoint tables do not exist: run `jr-checkpoint migrate`")
        if isinstance(exc, DatabaseUnavailable):
            return self._error(503, "cannot reach the ledger's PostgreSQL (the server's log says why)")
        if isinstance(exc, ConfigurationError):
            return self._error(503, "the ledger's database is not configured correctly "
                                    "(the server's log says why)")
        return self._error(500, "a query of the ledger failed (the server's log says why)")


def _figures(report: dict[str, Any]) -> dict[str, Any]:
    """The analytics page's four charts, as inline SVG."""
    types = report["by_type"]
    slices = report["outcomes"]["slices"]
    return {
        "success": charts.hbars(
            "success rate by step type",
            [(t["step_type"], t["success_pct"] or 0, f"{t['success_pct'] or 0:.1f}% of {t['steps']:,}")
             for t in types], css="bar-success", maximum=100),
        "p95": charts.hbars(
            "p95 duration by step type (ms)",
            [(t["step_type"], t["p95_ms"] or 0,
              f"p50 {t['p50_ms'] or 0:,.0f} · p95 {t['p95_ms'] or 0:,.0f} ms") for t in types],
            css="bar-duration"),
        "failing": charts.hbars(
            "target files that fail most",
            [(f"{r['target_file'] or '(no file)'} · {r['step_type']}", r["troubled"],
              f"{r['failing']} failing, {r['rerun']} re-run") for r in report["failing"]],
            css="bar-failed"),
        "attempts": charts.hbars(
            "attempts per unfinished task",
            [(f"{a['attempts']} attempt(s)" if a["attempts"] is not None else "not counted",
              a["tasks"], f"{a['tasks']:,} task(s)") for a in report["attempts"]], css="bar-attempts"),
        "outcomes": charts.columns(
            "step outcomes over time",
            [(s["start"][:16], {k: s[k] for k in ledger.OUTCOMES}) for s in slices], ledger.OUTCOMES,
            first_label=report["outcomes"]["from"][:16], last_label=report["outcomes"]["to"][:16]),
    }


def _pretty_json(value: Any) -> str:
    """Indented JSON as text; Jinja escapes it like any other value (``tojson`` would show
    ``<`` as ``\\u003c``)."""
    return json.dumps(value, indent=2, default=str)


def _times(data: Any) -> Any:
    """checkpoint_data as shown: its lease (epoch seconds) as a time, never a float."""
    lease = data.get("lease_until") if isinstance(data, dict) else None
    if isinstance(lease, (int, float)) and not isinstance(lease, bool) and 0 <= lease <= 1e11:
        shown = datetime.datetime.fromtimestamp(lease).isoformat(sep=" ", timespec="seconds")
        return {**data, "lease_until": f"{shown} (this server's local time)"}
    return data


def register(blueprint: Blueprint, views: Views, auth: ViewDecorator | None) -> None:
    """Every route, each wrapped in the host's ``auth`` decorator when there is one."""
    guard: ViewDecorator = auth if auth is not None else (lambda view: view)
    routes: list[tuple[str, str, Callable[..., Any]]] = [
        ("/", "tasks", views.tasks_page),
        ("/api/tasks", "api_tasks", views.tasks_api),
        ("/tasks/<task_id>", "task", views.task_page),
        ("/api/tasks/<task_id>", "api_task", views.task_api),
        ("/analytics", "analytics", views.analytics_page),
        ("/api/analytics", "api_analytics", views.analytics_api),
    ]
    for rule, endpoint, view in routes:
        blueprint.add_url_rule(rule, endpoint, guard(view), methods=["GET"])
    blueprint.add_app_template_filter(_pretty_json, "jr_checkpoint_json")
    blueprint.add_app_template_filter(_times, "jr_checkpoint_times")
    blueprint.register_error_handler(BadParameter, views.bad_parameter)
    blueprint.register_error_handler(CheckpointError, views.ledger_error)
