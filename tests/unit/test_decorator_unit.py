"""The interception itself, with an in-memory ledger: numbering, skipping, fail-open, threads."""

from __future__ import annotations

import logging
import threading

import pytest

from jr_checkpoint import TaskExhaustedError, TaskLockedError, checkpointed_steps
from jr_checkpoint.decorator import unhook_execute
from jr_checkpoint.errors import DatabaseUnavailable, StoreError
from jr_checkpoint.steps import digest as content_hash
from tests.fakes import Executor, FakeStore


@pytest.fixture
def store():
    return FakeStore()


@pytest.fixture(autouse=True)
def _unhook():
    """Every test's classes get their own ``execute`` back afterwards."""
    yield
    unhook_execute()


@pytest.fixture
def make(store):
    """Executor subclasses decorated with the fake store."""
    def factory(**options):
        class Decorated(Executor):
            execute_steps = checkpointed_steps(Executor.execute_steps, store=store, **options)
        return Decorated
    return factory


def test_bare_and_with_options_keep_signature_and_docs(store):
    import inspect

    bare = checkpointed_steps(Executor.execute_steps)
    configured = checkpointed_steps(store=store, task_id=lambda *a: 3)(Executor.execute_steps)
    for wrapped in (bare, configured):
        assert wrapped.__name__ == "execute_steps"
        assert wrapped.__doc__ == "Run the steps in order."
        assert str(inspect.signature(wrapped)) == "(self, steps, saga_tx=None)"


def test_records_each_step_and_cleans_up_a_finished_task(make, store):
    executor = make()()
    steps = [{"n": 0}, {"n": 1}, {"n": 2}]
    assert executor.execute_steps(steps) == [{"success": True}] * 3
    assert store.results(1) == {0: "success", 1: "success", 2: "success"}
    assert store.rows[(1, 2)]["content_hash"] == content_hash({"n": 2})
    assert 1 not in store.checkpoints  # every step a success: checkpoint row removed
    # the last record also ends the attempt and releases the task: no round trip of its own
    assert store.calls == ["begin", "hold", "record", "record", "record"]
    assert [end.outcome for end in store.ended[1]] == ["finished"]
    assert store.ended[1][0].ran == (0, 1, 2)


def test_retry_skips_what_succeeded_and_runs_the_rest(make, store, caplog):
    cls = make()
    steps = [{"n": 0}, {"n": 1}, {"n": 2, "fail": True}, {"n": 3}]
    first = cls()
    first.execute_steps(steps)
    assert store.results(1) == {0: "success", 1: "success", 2: "failed"}
    assert store.checkpoints[1]["last_completed_step"] == 1

    steps[2] = {"n": 2}
    second = cls()
    with caplog.at_level(logging.INFO, logger="jr_checkpoint"):
        results = second.execute_steps(steps)
    assert second.ran == [{"n": 2}, {"n": 3}]
    assert results[0] == {"success": True, "skipped": True, "checkpoint_hit": True, "step_number": 0}
    assert "[CHECKPOINT] Step 1 already succeeded, skipping" in caplog.messages
    assert store.calls.count("record") == 3 + 2  # none for the skipped steps


def test_a_changed_step_runs_again_in_a_row_of_its_own(make, store):
    cls = make()
    cls().execute_steps([{"n": 0}, {"n": 1, "fail": True}])
    again = cls()
    again.execute_steps([{"n": 0, "edited": True}, {"n": 1}])
    assert again.ran == [{"n": 0, "edited": True}, {"n": 1}]
    # The old step's success stays where it was; the edited step is recorded after it.
    assert store.rows[(1, 0)]["content_hash"] == content_hash({"n": 0})
    assert store.rows[(1, 2)]["content_hash"] == content_hash({"n": 0, "edited": True})
    assert store.results(1) == {0: "success", 1: "success", 2: "success"}


def test_same_object_twice_gets_two_numbers(make, store):
    step = {"n": "same"}
    executor = make()()
    executor.execute_steps([step, step, {"n": 2}])
    assert store.results(1) == {0: "success", 1: "success", 2: "success"}


def test_tuple_and_generator_steps_are_numbered_by_position(make, store):
    make()(task_id=1).execute_steps(({"t": 0}, {"t": 1}))
    assert store.results(1) == {0: "success", 1: "success"}

    produced = []

    def generate():
        for i in range(3):
            produced.append(i)
            yield {"g": i}

    executor = make()(task_id=2)
    executor.execute_steps(generate())
    assert store.results(2) == {0: "success", 1: "success", 2: "success"}
    assert produced == [0, 1, 2]
    assert 2 not in store.checkpoints  # the generator was exhausted: the task is complete
    # Again, every step skipped: still complete once the generator is exhausted.
    again = make()(task_id=2)
    assert [r.get("skipped") for r in again.execute_steps(generate())] == [True] * 3
    assert [end.outcome for end in store.ended[2]] == ["finished", "finished"]
    assert store.ended[2][1].skipped == (0, 1, 2) and store.ended[2][1].ran == ()


def test_steps_passed_by_keyword(make, store):
    make()().execute_steps(steps=[{"k": 0}, {"k": 1}])
    assert store.results(1) == {0: "success", 1: "success"}


def test_execute_on_something_else_passes_through_unrecorded(store):
    class Host(Executor):
        @checkpointed_steps(store=store)
        def execute_steps(self, steps, saga_tx=None):
            results = [self.execute({"preflight": True})]
            for step in steps:
                results.append(self.execute(step))
            return results

    executor = Host()
    executor.execute_steps([{"n": 0}, {"n": 1}])
    assert executor.ran[0] == {"preflight": True}
    assert store.results(1) == {0: "success", 1: "success"}
    assert content_hash({"preflight": True}) not in {r["content_hash"] for r in store.rows.values()}


def test_nested_call_for_the_same_task_is_recorded_once_by_the_outer_call(store):
    class Host(Executor):
        @checkpointed_steps(store=store)
        def execute_steps(self, steps, saga_tx=None):
            return [self.execute(step) for step in steps]

        def execute(self, step):
            if step.get("sub"):
                self.execute_steps(step["sub"])  # nested, same task
            return super().execute(step)

    executor = Host()
    executor.execute_steps([{"n": 0}, {"n": 1, "sub": [{"inner": 0}, {"inner": 1}]}, {"n": 2}])
    assert store.results(1) == {0: "success", 1: "success", 2: "success"}
    assert {"inner": 0} in executor.ran and {"inner": 1} in executor.ran
    assert store.calls.count("begin") == 1


def test_threads_running_different_tasks_do_not_mix(make, store):
    cls = make()
    errors = []

    def run(task_id):
        try:
            cls(task_id).execute_steps([{"task": task_id, "i": i} for i in range(20)])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for task_id in range(1, 9):
        assert store.results(task_id) == {i: "success" for i in range(20)}
        assert all(store.rows[(task_id, i)]["content_hash"] == content_hash({"task": task_id, "i": i})
                   for i in range(20))


def test_no_task_id_means_no_database_access(make, store):
    executor = make()(task_id=None)
    assert executor.execute_steps([{"n": 0}]) == [{"success": True}]
    assert store.calls == []


@pytest.mark.parametrize("bad", ["12", 1.5, True, 2**31, object()])
def test_a_task_id_that_is_not_an_integer_warns_and_runs_unchecked(make, store, caplog, bad):
    executor = make()(task_id=bad)
    assert executor.execute_steps([{"n": 0}]) == [{"success": True}]
    assert store.calls == []
    assert any("is not an integer" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_task_id_callable(store):
    class Host(Executor):
        execute_steps = checkpointed_steps(Executor.execute_steps, store=store,
                                           task_id=lambda instance, args, kwargs: 77)

    Host(task_id=None).execute_steps([{"n": 0}])
    assert store.results(77) == {0: "success"}


def test_a_raising_step_is_recorded_as_error_and_the_same_exception_propagates(make, store):
    executor = make()()
    boom = {"raise": "x" * 100}
    with pytest.raises(ValueError) as caught:
        executor.execute_steps([{"n": 0}, boom])
    assert str(caught.value) == "x" * 100
    assert store.results(1) == {0: "success", 1: "error"}
    assert store.rows[(1, 1)]["error_detail"] == "ValueError: " + "x" * 100
    assert store.calls[-1] == "release" and 1 in store.checkpoints


def test_step_and_result_oddities_are_recorded_not_fatal(make, store):
    class Host(Executor):
        def execute_steps(self, steps, saga_tx=None):
            return [self.execute(step) for step in steps]

    decorated = type("D", (Host,), {"execute_steps": checkpointed_steps(Host.execute_steps, store=store)})
    odd_result = {"result": {"success": True, "when": object(), "blob": b"\x00"}}
    steps = ["not a dict", {"result": "not a dict"}, odd_result, {"result": {"success": False}}]
    results = decorated().execute_steps(steps)
    assert results[1] == "not a dict" and results[3] == {"success": False}
    assert store.results(1) == {0: "success", 1: "failed", 2: "success", 3: "failed"}
    assert store.rows[(1, 0)]["step_type"] == "unknown"
    assert store.rows[(1, 1)]["error_detail"] == "step returned str, not a dict"


def test_database_down_at_start_runs_unchecked_with_one_attempt(make, store, mocker, caplog):
    lock = mocker.patch.object(store, "begin_task", side_effect=DatabaseUnavailable("down"))
    record = mocker.spy(store, "record_step")
    executor = make()()
    undecorated = Executor().execute_steps([{"n": 0}, {"n": 1, "fail": True}])
    assert executor.execute_steps([{"n": 0}, {"n": 1, "fail": True}]) == undecorated
    assert lock.call_count == 1 and record.call_count == 0
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "running the rest unchecked" in warnings[0].getMessage()


def test_a_failed_record_never_fails_the_step_and_stops_further_queries(make, store, mocker):
    mocker.patch.object(store, "record_step", side_effect=StoreError("permission denied"))
    release = mocker.spy(store, "release_task")
    executor = make()()
    assert executor.execute_steps([{"n": 0}, {"n": 1}, {"n": 2}]) == [{"success": True}] * 3
    assert store.record_step.call_count == 1  # degraded after the first failure
    assert release.call_count == 1 and release.call_args.kwargs["completed"] is False


def test_a_query_error_still_releases_the_lock(make, store, mocker):
    mocker.patch.object(store, "record_step", side_effect=StoreError("bad value"))
    make()().execute_steps([{"n": 0}])
    assert store.calls[-1] == "release" and 1 not in store.held
    assert 1 in store.checkpoints  # not marked complete: nothing was recorded


def test_locked_task_raises_before_any_step(make, store):
    store.held.add(1)
    executor = make()()
    with pytest.raises(TaskLockedError):
        executor.execute_steps([{"n": 0}])
    assert executor.ran == []


def test_max_attempts_calls_on_exhausted_then_raises(make, store):
    seen = []
    cls = make(max_attempts=2, on_exhausted=lambda task_id, cp: seen.append((task_id, cp)))
    for _ in range(2):
        cls().execute_steps([{"n": 0, "fail": True}])
    executor = cls()
    with pytest.raises(TaskExhaustedError):
        executor.execute_steps([{"n": 0, "fail": True}])
    assert executor.ran == [] and seen[0][0] == 1
    assert seen[0][1]["checkpoint_data"]["attempts"] == 3
    assert 1 not in store.held


def test_enabled_false_is_the_original(make, store):
    executor = make(enabled=False)()
    executor.execute_steps([{"n": 0}])
    assert store.calls == []


def test_the_host_gets_its_own_steps_object_unless_it_is_an_iterator(store):
    seen = []

    class Host(Executor):
        @checkpointed_steps(store=store)
        def execute_steps(self, steps, saga_tx=None):
            seen.append(steps)
            return [self.execute(steps[i]) for i in range(len(steps))]

    steps = ({"i": 0}, {"i": 1})
    Host().execute_steps(steps)
    assert seen[0] is steps
    assert store.results(1) == {0: "success", 1: "success"}


def test_a_step_retried_in_place_by_the_host_keeps_its_number(store):
    class Host(Executor):
        @checkpointed_steps(store=store)
        def execute_steps(self, steps, saga_tx=None):
            results = []
            for step in steps:
                result = self.execute(step)
                if not result["success"]:
                    step.pop("fail")
                    result = self.execute(step)  # the host's own retry
                results.append(result)
            return results

    Host().execute_steps([{"i": 0}, {"i": 1, "fail": True}, {"i": 2}])
    assert store.results(1) == {0: "success", 1: "success", 2: "success"}
    assert 1 not in store.checkpoints  # complete: the retried step ended a success


def test_last_completed_step_is_the_end_of_the_unbroken_run_of_successes(store):
    class Host(Executor):
        @checkpointed_steps(store=store)
        def execute_steps(self, steps, saga_tx=None):
            return [self.execute(step) for step in steps]  # runs on past a failure

    marks = []
    original = store.record_step

    def spy(task_id, step_number, **fields):
        marks.append((step_number, fields["last_completed_step"], fields["last_completed_step"] + 1))
        original(task_id, step_number, **fields)

    store.record_step = spy
    Host().execute_steps([{"i": 0}, {"i": 1, "fail": True}, {"i": 2}])
    assert marks == [(0, 0, 1), (1, 0, 1), (2, 0, 1)]
    marks.clear()
    Host().execute_steps([{"i": 0}, {"i": 1}, {"i": 2}])  # step 1 fixed; 0 and 2 skipped
    assert marks == [(1, 2, 3)]


def test_a_changed_step_the_host_never_reached_keeps_the_task_unfinished(store):
    class Host(Executor):
        @checkpointed_steps(store=store)
        def execute_steps(self, steps, saga_tx=None):
            return [self.execute(step) for step in steps if not step.get("later")]

    Host().execute_steps([{"i": 0, "fail": True}, {"i": 1}])
    assert 1 in store.checkpoints
    Host().execute_steps([{"i": 0}, {"i": 1, "later": True}])  # step 1 edited, not run
    assert 1 in store.checkpoints  # not complete: step 1's recorded success is for other content
    Host().execute_steps([{"i": 0}, {"i": 1}])  # step 1 as recorded, skipped
    assert 1 not in store.checkpoints


# -- ownership, outages and hostile input ------------------------------------------------------

def test_a_worker_that_lost_the_task_stops_before_its_next_step(make, store):
    from jr_checkpoint import TaskLockedError, TaskOwnershipLost

    class Host(Executor):
        def execute(self, step):
            if step.get("n") == 1:
                store.taken_over.add(1)  # another worker takes the task during step 1
            return super().execute(step)

    decorated = type("D", (Host,), {"execute_steps": checkpointed_steps(Host.execute_steps, store=store)})
    executor = decorated()
    with pytest.raises(TaskOwnershipLost) as caught:
        executor.execute_steps([{"n": 0}, {"n": 1}, {"n": 2}])
    assert isinstance(caught.value, TaskLockedError)  # a host that catches TaskLockedError sees it
    assert executor.ran == [{"n": 0}, {"n": 1}]  # step 2 never ran
    assert store.results(1) == {0: "success"}  # step 1's record was refused


def test_a_renewal_that_found_the_task_taken_stops_the_worker_before_the_next_step(make, store, mocker):
    from jr_checkpoint import TaskOwnershipLost

    executor = make()()
    mocker.patch.object(store, "lost", side_effect=lambda task_id, owner: len(executor.ran) >= 1)
    with pytest.raises(TaskOwnershipLost, match="stopping before step 1"):
        executor.execute_steps([{"n": 0}, {"n": 1}])
    assert executor.ran == [{"n": 0}]


def test_an_unreachable_ledger_still_skips_what_it_loaded_and_keeps_the_records(make, store, mocker,
                                                                                 caplog):
    cls = make()
    cls().execute_steps([{"n": 0}, {"n": 1, "fail": True}, {"n": 2}])
    down = mocker.patch.object(store, "record_step", side_effect=DatabaseUnavailable("restarting"))
    again = cls()
    again.execute_steps([{"n": 0}, {"n": 1}, {"n": 2}])
    assert again.ran == [{"n": 1}, {"n": 2}]  # step 0 is known to have succeeded
    assert down.call_count >= 1
    assert sum("running the rest unchecked" in m for m in caplog.messages) == 1
    assert any("could not be written" in m for m in caplog.messages)


def test_records_kept_during_an_outage_are_written_when_the_ledger_answers(make, store, mocker):
    cls = make()
    real = store.record_step
    answers = iter([DatabaseUnavailable("restarting")])

    def flaky(*args, **kwargs):
        error = next(answers, None)
        if error:
            raise error
        return real(*args, **kwargs)

    mocker.patch.object(store, "record_step", side_effect=flaky)
    from jr_checkpoint.task_run import TaskRun

    mocker.patch.object(TaskRun, "FLUSH_EVERY", 0.0)
    cls().execute_steps([{"n": 0}, {"n": 1}, {"n": 2}])
    assert store.results(1) == {0: "success", 1: "success", 2: "success"}


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("no str for you")


@pytest.mark.parametrize("kind", ["cycle", "deep", "str"])
def test_a_step_whose_identity_cannot_be_computed_runs_unchecked_with_one_warning(make, store, caplog, kind):
    if kind == "cycle":
        step = {"n": 9}
        step["self"] = step
    elif kind == "deep":
        step = {"n": 9}
        for _ in range(5000):
            step = {"inner": step}
    else:
        class Bad:
            def __str__(self):
                raise RuntimeError("no")
        step = {"when": Bad()}
    executor = make()()
    results = executor.execute_steps([{"n": 0}, step, step, {"n": 2}])
    assert results == [{"success": True}] * 4
    assert len(executor.ran) == 4
    assert store.results(1) == {0: "success", 3: "success"}  # the hostile steps are not recorded
    assert sum("cannot be identified" in m for m in caplog.messages) == 1


def test_an_exception_whose_str_raises_reaches_the_host_unchanged(make, store):
    class Host(Executor):
        def execute(self, step):
            if step.get("boom"):
                raise Unprintable()
            return super().execute(step)

    decorated = type("D", (Host,), {"execute_steps": checkpointed_steps(Host.execute_steps, store=store)})
    with pytest.raises(Unprintable):
        decorated().execute_steps([{"n": 0}, {"boom": True}])
    assert store.results(1) == {0: "success", 1: "error"}
    assert "Unprintable" in store.rows[(1, 1)]["error_detail"]


def test_a_dsn_option_opens_one_store_per_decorated_function(mocker):
    from jr_checkpoint import decorator

    opened = []

    def fake_store(dsn):
        opened.append(FakeStore())
        return opened[-1]

    mocker.patch.object(decorator, "CheckpointStore", side_effect=fake_store)

    class Host(Executor):
        execute_steps = checkpointed_steps(Executor.execute_steps, dsn="dbname=two")

    for _ in range(3):
        Host().execute_steps([{"n": 0}])
    assert len(opened) == 1  # not one per call
    assert opened[0].calls.count("begin") == 3


def test_uninstall_closes_the_shared_default_store(mocker):
    import jr_checkpoint
    from jr_checkpoint import decorator

    shared = FakeStore()
    shared.close = mocker.Mock()
    mocker.patch.object(decorator, "CheckpointStore", return_value=shared)

    class Host(Executor):
        execute_steps = checkpointed_steps(Executor.execute_steps)  # no store, no dsn: the shared one

    jr_checkpoint.install(store=FakeStore(), target="tests.fakes:FileExecutor.execute_steps")
    Host().execute_steps([{"n": 0}])
    assert shared.calls.count("begin") == 1
    jr_checkpoint.uninstall()
    assert shared.close.call_count == 1


def test_the_task_id_of_process_queue_task_stays_with_its_call_thread_and_instance():
    import jr_checkpoint
    from tests.fakes import QueueExecutor

    store = FakeStore()
    both_inside = threading.Barrier(2, timeout=10)

    class Meeting(QueueExecutor):
        def execute(self, step):
            if step.get("meet"):
                both_inside.wait()  # both threads are inside their own task at once
            return super().execute(step)

    jr_checkpoint.install(store=store, target="tests.fakes:QueueExecutor.execute_steps")
    try:
        def work(task_id):
            Meeting().process_queue_task({"id": task_id, "steps": [{"n": task_id, "meet": True}]})

        threads = [threading.Thread(target=work, args=(task_id,)) for task_id in (21, 22)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert store.results(21) == {0: "success"} and store.results(22) == {0: "success"}
        assert store.rows[(21, 0)]["content_hash"] == content_hash({"n": 21, "meet": True})
        calls = len(store.calls)
        executor = QueueExecutor()
        executor.process_queue_task({"id": 23, "steps": []})
        executor.execute_steps([{"n": 1}])  # outside any process_queue_task: no task, unchecked
        other = QueueExecutor()
        other.process_queue_task({"id": "not-an-int", "steps": [{"n": 2}]})
        assert store.calls[calls:] == ["begin", "hold", "release"]  # task 23's empty list only
    finally:
        jr_checkpoint.uninstall()
