"""Stand-in of the host's secrets loader: the database comes from JR_HOST_DB_DSN."""

import os

import psycopg2.extensions


def get_db_config():
    dsn = os.environ.get("JR_HOST_DB_DSN")
    if not dsn:
        raise RuntimeError("JR_HOST_DB_DSN is not set")
    return psycopg2.extensions.parse_dsn(dsn)
