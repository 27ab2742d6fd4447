"""The dashboard blueprint through Flask's test client, on a real PostgreSQL."""

from __future__ import annotations

import functools
import json
import shutil
import socket

import pytest

flask = pytest.importorskip("flask", reason="the dashboard needs the 'web' extra")  # in 'dev' too

from jr_checkpoint import cli  # noqa: E402
from jr_checkpoint.web import create_blueprint  # noqa: E402
from tests.conftest import query, start_embedded_server  # noqa: E402
from tests.web_ledger import HOSTILE, STATES, held_locks, populate  # noqa: E402

PAGES = ["/checkpoints/", "/checkpoints/tasks/12", "/checkpoints/analytics",
         "/checkpoints/analytics?since=all"]
APIS = ["/checkpoints/api/tasks", "/checkpoints/api/tasks/12", "/checkpoints/api/analytics",
        "/checkpoints/api/analytics?since=all"]


def make_app(**options):
    app = flask.Flask(__name__)
    app.register_blueprint(create_blueprint(**options), url_prefix="/checkpoints")
    return app


@pytest.fixture
def client(dsn):
    return make_app(dsn=dsn).test_client()


@pytest.fixture
def ledger(dsn):
    """The populated ledger, two of its tasks locked by a 'worker' for the test's length."""
    populate(dsn)
    with held_locks(dsn):
        yield dsn


def get_json(client, url, status=200):
    response = client.get(url)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    return json.loads(response.get_data(as_text=True))


def get_html(client, url, status=200):
    response = client.get(url)
    assert response.status_code == status, response.get_data(as_text=True)[:2000]
    assert response.mimetype == "text/html"
    return response.get_data(as_text=True)


def table(dsn):
    return (query(dsn, "SELECT * FROM jr_step_rewards ORDER BY id"),
            query(dsn, "SELECT * FROM jr_task_checkpoints ORDER BY id"))


# -- an empty ledger --------------------------------------------------------------------------

def test_an_empty_ledger_answers_every_page_and_endpoint(client):
    assert get_json(client, "/checkpoints/api/tasks") == {"state": None, "tasks": [], "next": None}
    assert 'id="empty"' in get_html(client, "/checkpoints/")
    report = get_json(client, "/checkpoints/api/analytics")
    assert report["total"] is None and report["by_type"] == [] and report["attempts"] == []
    assert sum(s["success"] + s["failed"] + s["error"] for s in report["outcomes"]["slices"]) == 0
    assert "No steps recorded in this window" in get_html(client, "/checkpoints/analytics")
    assert get_json(client, "/checkpoints/api/tasks/5", 404)["error"].startswith("task 5: nothing recorded")
    assert "task 5: nothing recorded" in get_html(client, "/checkpoints/tasks/5", 404)


# -- a ledger with a task in every state ------------------------------------------------------

def test_the_task_list_shows_every_state_newest_first(ledger, client):
    data = get_json(client, "/checkpoints/api/tasks")
    assert {t["task_id"]: t["state"] for t in data["tasks"]} == STATES
    activity = [t["last_activity"] for t in data["tasks"]]
    assert activity == sorted(activity, reverse=True)
    by_id = {t["task_id"]: t for t in data["tasks"]}
    assert (by_id[11]["attempts"], by_id[11]["steps_done"], by_id[11]["total_steps"],
            by_id[11]["resume_at"]) == (1, 2, 4, 2)
    assert (by_id[10]["attempts"], by_id[10]["steps_done"], by_id[10]["total_steps"],
            by_id[10]["resume_at"]) == (None, 3, 3, None)  # finished: its checkpoint row is gone
    assert by_id[13]["attempts"] == 4 and by_id[12]["steps_failing"] == 1
    html = get_html(client, "/checkpoints/")
    for task_id, state in STATES.items():
        assert f'<tr data-task="{task_id}" data-state="{state}">' in html


def test_a_released_lock_is_no_longer_running(dsn, client):
    populate(dsn)
    with held_locks(dsn, [14]):
        assert get_json(client, "/checkpoints/api/tasks/14")["state"] == "running"
    assert get_json(client, "/checkpoints/api/tasks/14")["state"] == "unfinished"


@pytest.mark.parametrize("state", ["running", "dead", "unfinished", "finished", "exhausted"])
def test_filter_by_state(ledger, client, state):
    data = get_json(client, f"/checkpoints/api/tasks?state={state}")
    assert sorted(t["task_id"] for t in data["tasks"]) == sorted(i for i, s in STATES.items() if s == state)
    html = get_html(client, f"/checkpoints/?state={state}")
    assert html.count("<tr data-task=") == len(data["tasks"])


def test_pages_of_two_cover_every_task_once_in_order(ledger, client):
    everything = [t["task_id"] for t in get_json(client, "/checkpoints/api/tasks")["tasks"]]
    seen, url = [], "/checkpoints/api/tasks?limit=2"
    while url:
        page = get_json(client, url)
        assert len(page["tasks"]) <= 2
        seen += [t["task_id"] for t in page["tasks"]]
        url = page["next"] and f"/checkpoints/api/tasks?limit=2&before={page['next']}"
    assert seen == everything
    html = get_html(client, "/checkpoints/?limit=2")
    assert 'id="older"' in html and html.count("<tr data-task=") == 2


def test_a_task_is_what_status_json_prints_plus_its_state(ledger, client, capsys):
    assert cli.main(["status", "11", "--json", "--dsn", ledger]) == 0
    printed = json.loads(capsys.readouterr().out)
    served = get_json(client, "/checkpoints/api/tasks/11")
    assert served == printed and served["state"] == "unfinished" and served["attempts"] == []


def test_a_tasks_page_shows_its_timeline_and_checkpoint(ledger, client):
    html = get_html(client, "/checkpoints/tasks/12")
    assert 'id="task-state">unfinished<' in html
    assert '<tr data-step="0" data-result="success">' in html
    assert '<tr data-step="1" data-result="failed">' in html
    assert 'style="width: 100.0%"' in html  # the longest step fills its bar
    assert "&#34;resume_at&#34;: 1" in html  # the checkpoint row's data, as indented JSON
    finished = get_html(client, "/checkpoints/tasks/10")
    assert "the task finished" in finished and "none recorded: attempt unknown" in finished
    assert "http-equiv=\"refresh\"" in get_html(client, "/checkpoints/tasks/15")  # running: reloads
    assert "http-equiv=\"refresh\"" not in finished


def test_analytics_is_what_stats_json_prints_plus_attempts_and_outcomes(ledger, client, capsys):
    assert cli.main(["stats", "--json", "--since", "7d", "--top", "3", "--dsn", ledger]) == 0
    printed = json.loads(capsys.readouterr().out)
    served = get_json(client, "/checkpoints/api/analytics?since=7d&top=3")
    assert {k: served[k] for k in printed} == {**printed}
    assert served["attempts"] == [{"attempts": 1, "tasks": 7}, {"attempts": 2, "tasks": 1},
                                  {"attempts": 4, "tasks": 1}]
    outcomes = {k: sum(s[k] for s in served["outcomes"]["slices"]) for k in ("success", "failed", "error")}
    assert outcomes == {"success": 12, "failed": 1, "error": 1}
    html = get_html(client, "/checkpoints/analytics?since=7d")
    for label in ("success rate by step type", "p95 duration by step type (ms)",
                  "target files that fail most", "attempts per unfinished task",
                  "step outcomes over time"):
        assert f'<svg class="chart" role="img" aria-label="{label}"' in html
    assert ">search_replace</text>" in html and ">4 attempt(s)</text>" in html


def test_the_dashboard_changes_nothing(ledger, client):
    before = table(ledger)
    for url in PAGES + APIS + ["/checkpoints/api/tasks?state=running", "/checkpoints/tasks/13"]:
        assert client.get(url).status_code == 200, url
    assert table(ledger) == before
    for url in APIS:
        assert client.post(url).status_code == 405


# -- safe by construction -----------------------------------------------------------------------

def test_hostile_text_is_shown_as_text_everywhere(ledger, client):
    for url in PAGES + ["/checkpoints/?state=unfinished"]:
        html = get_html(client, url)
        assert "<script" not in html, url
    task = get_html(client, "/checkpoints/tasks/12")
    escaped = "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt; &amp; &#39; &#34;"
    assert task.count(escaped) >= 4  # type, two targets, error, checkpoint data
    assert escaped in get_html(client, "/checkpoints/analytics")  # table and SVG labels
    assert get_json(client, "/checkpoints/api/tasks/12")["steps"][1]["error_detail"].startswith(HOSTILE)


@pytest.mark.parametrize("url, message", [
    ("/checkpoints/?state=crashed",
     "bad state 'crashed': use one of running, dead, unfinished, finished, exhausted"),
    ("/checkpoints/?limit=0", "bad limit '0': use a whole number from 1 to 500"),
    ("/checkpoints/?limit=ten", "bad limit 'ten'"),
    ("/checkpoints/?before=yesterday", "bad 'before' cursor 'yesterday'"),
    ("/checkpoints/?before=2026-13-01T00:00:00~4", "bad 'before' cursor"),
    ("/checkpoints/?before=2026-11-01T00:00:00~99999999999", "bad 'before' cursor"),
    ("/checkpoints/tasks/abc", "bad task id 'abc'"),
    ("/checkpoints/tasks/99999999999", "bad task id '99999999999'"),
    ("/checkpoints/analytics?since=2w", "bad since '2w': use one of 1h, 24h, 7d, all"),
    ("/checkpoints/analytics?top=-1", "bad top '-1'"),
])
def test_a_bad_parameter_is_a_400_with_one_line(client, url, message):
    html = get_html(client, url, 400)
    assert message.replace("'", "&#39;") in html and "Traceback" not in html
    api = url.replace("/checkpoints/", "/checkpoints/api/", 1).replace("api/?", "api/tasks?")
    error = get_json(client, api, 400)["error"]
    assert error.startswith(message) and "\n" not in error


# -- the database down, then back ---------------------------------------------------------------

def test_a_closed_port_is_a_503_page_that_retries():
    client = make_app(dsn="host=127.0.0.1 port=1 dbname=x", connect_timeout=1).test_client()
    html = get_html(client, "/checkpoints/", 503)
    assert "cannot reach the ledger&#39;s PostgreSQL" in html and "127.0.0.1" not in html
    assert 'http-equiv="refresh"' in html and "Traceback" not in html
    error = get_json(client, "/checkpoints/api/analytics", 503)["error"]
    assert error.startswith("cannot reach the ledger's PostgreSQL") and "\n" not in error


def test_missing_tables_say_to_migrate(empty_dsn):
    client = make_app(dsn=empty_dsn).test_client()
    assert "run `jr-checkpoint migrate`" in get_json(client, "/checkpoints/api/tasks", 503)["error"]


@pytest.fixture
def private_server():
    """A server of this test's own, so stopping it disturbs nobody."""
    server = start_embedded_server()
    yield server
    server.ensure_postgres_running()
    server.cleanup()
    shutil.rmtree(server.pgdata.parent, ignore_errors=True)


def test_the_page_recovers_when_the_server_returns(private_server):
    from jr_checkpoint import dsn as dsn_module
    from jr_checkpoint import schema

    uri = private_server.get_uri()
    schema.create_tables(dsn_module.resolve(uri))
    populate(uri)
    client = make_app(dsn=uri, connect_timeout=1).test_client()
    assert get_json(client, "/checkpoints/api/tasks/11")["state"] == "unfinished"
    private_server.stop()
    assert "cannot reach the ledger" in get_html(client, "/checkpoints/tasks/11", 503)
    private_server.ensure_postgres_running()
    assert 'id="task-state">unfinished<' in get_html(client, "/checkpoints/tasks/11")


# -- mounted in the host's application ----------------------------------------------------------

API_KEY = "k-123"


def require_api_key(view):
    """As SAG's own decorator does: refuse a request without the key."""
    @functools.wraps(view)
    def guarded(*args, **kwargs):
        if flask.request.headers.get("X-API-Key") != API_KEY:
            return flask.jsonify({"error": "refused by require_api_key"}), 401
        return view(*args, **kwargs)
    return guarded


def create_app(dsn_a, dsn_b):
    """The host's application factory, with two mounts on two ledgers."""
    app = flask.Flask("sag")
    app.register_blueprint(create_blueprint(dsn=dsn_a, auth=require_api_key), url_prefix="/checkpoints")
    app.register_blueprint(create_blueprint(dsn=dsn_b, auth=require_api_key, name="staging"),
                           url_prefix="/staging/checkpoints")
    return app


def test_the_hosts_auth_guards_every_route_of_every_mount(ledger, empty_dsn):
    from jr_checkpoint import dsn as dsn_module
    from jr_checkpoint import schema

    schema.create_tables(dsn_module.resolve(empty_dsn))
    client = create_app(ledger, empty_dsn).test_client()
    urls = PAGES + APIS + [u.replace("/checkpoints/", "/staging/checkpoints/") for u in APIS[:1]]
    for url in urls:
        refused = client.get(url)
        assert refused.status_code == 401, url
        assert refused.get_json() == {"error": "refused by require_api_key"}
        assert client.get(url, headers={"X-API-Key": API_KEY}).status_code == 200, url
    key = {"X-API-Key": API_KEY}
    assert len(client.get("/checkpoints/api/tasks", headers=key).get_json()["tasks"]) == len(STATES)
    assert client.get("/staging/checkpoints/api/tasks", headers=key).get_json()["tasks"] == []
    staging = client.get("/staging/checkpoints/", headers=key).get_data(as_text=True)
    assert 'href="/staging/checkpoints/analytics"' in staging  # links stay inside their mount


def test_pages_under_a_hosts_api_prefix_still_answer_errors_in_html():
    app = flask.Flask(__name__)
    app.register_blueprint(create_blueprint(dsn="host=127.0.0.1 port=1", connect_timeout=1),
                           url_prefix="/api/v2/checkpoints")
    client = app.test_client()
    assert "bad limit &#39;x&#39;" in get_html(client, "/api/v2/checkpoints/?limit=x", 400)
    assert get_json(client, "/api/v2/checkpoints/api/tasks?limit=x", 400)["error"].startswith("bad limit")


def test_a_store_passed_in_is_used(ledger):
    from jr_checkpoint import CheckpointStore

    store = CheckpointStore(ledger)
    client = make_app(store=store).test_client()
    assert len(get_json(client, "/checkpoints/api/tasks")["tasks"]) == len(STATES)
    with pytest.raises(TypeError, match="dsn= or store="):
        create_blueprint(dsn=ledger, store=store)


def test_serve_refuses_a_bad_port_in_one_line(capsys):
    assert cli.main(["serve", "--port", "70000", "--dsn", "host=127.0.0.1 port=1"]) == 2
    assert capsys.readouterr().err == "jr-checkpoint: error: --port must be from 0 to 65535, not 70000\n"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli.main(["serve", "--port", str(port), "--dsn", "host=127.0.0.1 port=1"]) == 2
    assert capsys.readouterr().err == (
        f"jr-checkpoint: error: cannot listen on 127.0.0.1:{port}: Address already in use\n")
