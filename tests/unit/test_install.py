"""install() / uninstall() on the host stand-in: hooks, idempotence, exact restoration."""

from __future__ import annotations

import importlib
import sys

import pytest

import jr_checkpoint
from jr_checkpoint.decorator import is_checkpointed
from jr_checkpoint.install import QUEUE_METHODS
from jr_checkpoint.store import CheckpointStore


@pytest.fixture
def clean_install(host_path):
    yield host_path
    jr_checkpoint.uninstall()


def test_install_after_import_wraps_at_once(clean_install):
    from jr_executor.task_executor import TaskExecutor

    original = TaskExecutor.__dict__["execute_steps"]
    jr_checkpoint.install("dbname=unused")
    assert is_checkpointed(TaskExecutor.__dict__["execute_steps"])
    assert TaskExecutor.__dict__["execute_steps"].__wrapped__ is original


def test_install_before_import_wraps_when_the_module_is_imported(clean_install):
    assert "jr_executor.task_executor" not in sys.modules
    jr_checkpoint.install("dbname=unused")
    module = importlib.import_module("jr_executor.task_executor")
    assert is_checkpointed(module.TaskExecutor.__dict__["execute_steps"])


def test_install_twice_wraps_once_and_returns_the_same_store(clean_install):
    from jr_executor.task_executor import TaskExecutor

    first = jr_checkpoint.install("dbname=unused")
    second = jr_checkpoint.install("dbname=other")
    assert first is second and isinstance(first, CheckpointStore)
    wrapper = TaskExecutor.__dict__["execute_steps"]
    assert is_checkpointed(wrapper) and not is_checkpointed(wrapper.__wrapped__)


def test_uninstall_restores_exactly_and_twice_is_harmless(clean_install):
    from jr_executor.jr_queue_client import JrQueueClient
    from jr_executor.task_executor import TaskExecutor

    before = dict(TaskExecutor.__dict__), dict(JrQueueClient.__dict__)
    jr_checkpoint.install("dbname=unused")
    assert set(QUEUE_METHODS) <= set(JrQueueClient.__dict__)
    jr_checkpoint.uninstall()
    jr_checkpoint.uninstall()
    assert dict(TaskExecutor.__dict__) == before[0]
    assert dict(JrQueueClient.__dict__) == before[1]
    assert not jr_checkpoint.installed()


def test_uninstall_before_the_host_is_imported_leaves_it_untouched(clean_install):
    jr_checkpoint.install("dbname=unused")
    jr_checkpoint.uninstall()
    module = importlib.import_module("jr_executor.task_executor")
    assert not is_checkpointed(module.TaskExecutor.__dict__["execute_steps"])


def test_existing_queue_methods_are_kept(clean_install):
    from jr_executor.jr_queue_client import JrQueueClient

    def save_checkpoint(self, *args):  # the host already has one
        return "host's own"

    JrQueueClient.save_checkpoint = save_checkpoint
    jr_checkpoint.install("dbname=unused")
    assert JrQueueClient.__dict__["save_checkpoint"] is save_checkpoint
    assert "get_last_checkpoint" in JrQueueClient.__dict__


def test_a_wrong_target_is_a_clear_error_not_a_broken_import(clean_install, caplog):
    with pytest.raises(ValueError, match="module:Class.attribute"):
        jr_checkpoint.install(target="no_colon_here")
    jr_checkpoint.install("dbname=unused", target="jr_executor.task_executor:TaskExecutor.nope")
    module = importlib.import_module("jr_executor.task_executor")  # the import still works
    assert hasattr(module, "TaskExecutor")
    assert any("no attribute nope" in m for m in caplog.messages)


def test_queue_methods_use_the_clients_own_execute(clean_install, mocker):
    from jr_executor.jr_queue_client import JrQueueClient

    jr_checkpoint.install("dbname=unused")
    client = JrQueueClient("test")
    execute = mocker.patch.object(client, "_execute", return_value=[
        {"last_completed_step": 2, "total_steps": 5, "checkpoint_data": None}])
    assert client.save_checkpoint(9, 2, 5, {"a": 1}) is True
    assert client.get_last_checkpoint(9) == {"last_completed_step": 2, "total_steps": 5,
                                             "checkpoint_data": None}
    assert client.cleanup_checkpoints(9) is True
    assert execute.call_args_list[0].kwargs == {"fetch": False}
    assert execute.call_args_list[0].args[1]["checkpoint_data"] == '{"a": 1}'

    execute.side_effect = RuntimeError("db down")
    assert client.save_checkpoint(9, 2) is False
    assert client.get_last_checkpoint(9) is None
    assert client.cleanup_checkpoints(9) is False
