"""The step-reward dashboard: a Flask blueprint the host mounts in one line.

    from jr_checkpoint.web import create_blueprint
    app.register_blueprint(create_blueprint(auth=require_api_key), url_prefix="/checkpoints")

Needs the ``web`` extra (Flask). ``jr-checkpoint serve`` serves the same pages on their own.
"""

from __future__ import annotations

import os

from flask import Blueprint

from .. import dsn as dsn_module
from ..store import CheckpointStore
from .views import ViewDecorator, Views, register


def create_blueprint(
    *,
    dsn: dsn_module.Dsn = None,
    store: CheckpointStore | None = None,
    auth: ViewDecorator | None = None,
    name: str = "jr_checkpoint",
    connect_timeout: float = dsn_module.DEFAULT_CONNECT_TIMEOUT,
    host_root: str | os.PathLike[str] | None = None,
) -> Blueprint:
    """A new blueprint with the dashboard's pages and their JSON twins (read-only).

    ``dsn``: where the ledger is, resolved as everywhere in the package (argument,
    ``JR_CHECKPOINT_DSN``, the host's ``lib.secrets_loader``, ``PG*``), at each request, so
    an application factory may configure the environment after creating the blueprint.
    ``store``: use this store's database instead. ``auth``: a view decorator applied to
    every route, pages and JSON alike (the dashboard has no authentication of its own).
    ``name``: give each mount its own when mounting more than one in an application.
    """
    if dsn is not None and store is not None:
        raise TypeError("create_blueprint() takes dsn= or store=, not both")
    if auth is not None and not callable(auth):
        raise TypeError(f"auth must be a view decorator, not {auth!r}")

    def target() -> dsn_module.Target:
        if store is not None:
            return store.target
        return dsn_module.resolve(dsn, host_root=host_root)

    blueprint = Blueprint(name, __name__, template_folder="templates")
    register(blueprint, Views(target, connect_timeout), auth)
    return blueprint


__all__ = ["create_blueprint"]
