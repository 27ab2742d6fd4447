"""install() / uninstall() on the host stand-in, under every name the host imports it by."""

from __future__ import annotations

import importlib
import sys

import pytest

import jr_checkpoint
from jr_checkpoint.decorator import is_checkpointed, is_queue_task_wrapper
from jr_checkpoint.install import QUEUE_METHODS
from jr_checkpoint.store import CheckpointStore
from tests.conftest import host_env

EXECUTORS = ["task_executor", "jr_executor.task_executor"]
CLIENTS = ["jr_queue_client", "jr_executor.jr_queue_client"]


@pytest.fixture
def clean_install(host_path, monkeypatch, tmp_path):
    """The stand-in importable; its secrets loader finds a database that is never contacted."""
    for name, value in host_env("host=/nonexistent dbname=unused user=nobody", tmp_path).items():
        monkeypatch.setenv(name, value)
    yield
    jr_checkpoint.uninstall()


@pytest.mark.parametrize("name", EXECUTORS)
def test_install_after_import_wraps_at_once(clean_install, name):
    cls = importlib.import_module(name).TaskExecutor
    original = cls.__dict__["execute_steps"]
    jr_checkpoint.install("dbname=unused")
    assert is_checkpointed(cls.__dict__["execute_steps"])
    assert cls.__dict__["execute_steps"].__wrapped__ is original
    assert is_queue_task_wrapper(cls.__dict__["process_queue_task"])


@pytest.mark.parametrize("name", EXECUTORS)
def test_install_before_import_wraps_when_the_module_is_imported(clean_install, name):
    assert name not in sys.modules
    jr_checkpoint.install("dbname=unused")
    module = importlib.import_module(name)
    assert is_checkpointed(module.TaskExecutor.__dict__["execute_steps"])
    assert is_queue_task_wrapper(module.TaskExecutor.__dict__["process_queue_task"])


def test_both_names_imported_are_each_wrapped_once(clean_install):
    jr_checkpoint.install("dbname=unused")
    top = importlib.import_module("task_executor").TaskExecutor
    package = importlib.import_module("jr_executor.task_executor").TaskExecutor
    assert top is not package  # two modules, two classes: the host really has both
    for cls in (top, package):
        wrapper = cls.__dict__["execute_steps"]
        assert is_checkpointed(wrapper) and not is_checkpointed(wrapper.__wrapped__)
        queue_task = cls.__dict__["process_queue_task"]
        assert not is_queue_task_wrapper(queue_task.__wrapped__)


def test_install_twice_wraps_once_and_returns_the_same_store(clean_install):
    from task_executor import TaskExecutor

    first = jr_checkpoint.install("dbname=unused")
    second = jr_checkpoint.install("dbname=other")
    assert first is second and isinstance(first, CheckpointStore)
    wrapper = TaskExecutor.__dict__["execute_steps"]
    assert is_checkpointed(wrapper) and not is_checkpointed(wrapper.__wrapped__)


@pytest.mark.parametrize("name", CLIENTS)
def test_the_host_client_keeps_its_own_checkpoint_methods(clean_install, name):
    cls = importlib.import_module(name).JrQueueClient
    before = {method: cls.__dict__[method] for method in QUEUE_METHODS}
    jr_checkpoint.install("dbname=unused")
    assert {method: cls.__dict__[method] for method in QUEUE_METHODS} == before


def test_a_client_without_them_gets_them_and_loses_them_at_uninstall(clean_install):
    import jr_queue_client

    cls = jr_queue_client.JrQueueClient
    saved = {method: cls.__dict__[method] for method in QUEUE_METHODS}
    for method in QUEUE_METHODS:
        delattr(cls, method)  # the client as the seed found it
    try:
        jr_checkpoint.install("dbname=unused")
        assert all(cls.__dict__[method] is QUEUE_METHODS[method] for method in QUEUE_METHODS)
        jr_checkpoint.uninstall()
        assert not any(method in cls.__dict__ for method in QUEUE_METHODS)
    finally:
        for method, function in saved.items():
            setattr(cls, method, function)


def test_uninstall_restores_exactly_and_twice_is_harmless(clean_install):
    from jr_executor.jr_queue_client import JrQueueClient
    from jr_executor.task_executor import TaskExecutor

    before = dict(TaskExecutor.__dict__), dict(JrQueueClient.__dict__)
    jr_checkpoint.install("dbname=unused")
    jr_checkpoint.uninstall()
    jr_checkpoint.uninstall()
    assert dict(TaskExecutor.__dict__) == before[0]
    assert dict(JrQueueClient.__dict__) == before[1]
    assert not jr_checkpoint.installed()


def test_uninstall_before_the_import_leaves_the_module_untouched(clean_install):
    jr_checkpoint.install("dbname=unused")
    jr_checkpoint.uninstall()
    from task_executor import TaskExecutor

    assert not is_checkpointed(TaskExecutor.__dict__["execute_steps"])


@pytest.mark.parametrize("options, message", [
    ({"max_attempt": 3}, "unknown option(s) 'max_attempt'"),
    ({"wiat": 1}, "unknown option(s) 'wiat'"),
])
def test_a_misspelled_option_fails_at_the_call(clean_install, options, message):
    with pytest.raises(TypeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        jr_checkpoint.install("dbname=unused", **options)
    assert not jr_checkpoint.installed()


@pytest.mark.parametrize("options", [{"wait": -1}, {"max_attempts": 0}, {"on_exhausted": "dead_letters"}])
def test_an_ill_typed_option_fails_at_the_call(clean_install, options):
    with pytest.raises((TypeError, ValueError)):
        jr_checkpoint.install("dbname=unused", **options)
    assert not jr_checkpoint.installed()


def test_a_bad_target_spec_fails_at_the_call(clean_install):
    with pytest.raises(ValueError, match="module:Class.attribute"):
        jr_checkpoint.install("dbname=unused", target="task_executor.TaskExecutor")
    assert not jr_checkpoint.installed()


def test_uninstall_closes_the_stores_it_opened(host_db):
    from task_executor import TaskExecutor

    store = jr_checkpoint.install(host_db)
    executor = TaskExecutor()
    executor.process_queue_task({"id": 5, "instruction_content": "```bash\ntrue\n```\n"})
    assert store.round_trips > 0 and store.connected
    jr_checkpoint.uninstall()
    assert not store.connected
    assert not jr_checkpoint.installed()
