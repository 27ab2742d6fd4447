"""Stand-in of the host's lib/secrets_loader.py (see tests/host/README.md).

Like the host's: `get_db_config()` returns a dict (host, dbname, user, password, port), read
from `<root>/config/secrets.env` when that file exists, else from the `CHEROKEE_DB_*`
environment variables. The root is `$GANUDA_ROOT` (the host's is fixed at /ganuda).
"""

import os

_KEYS = ("HOST", "PORT", "NAME", "USER", "PASS")


def _secrets_file(prefix):
    path = os.path.join(os.environ.get("GANUDA_ROOT", "/ganuda"), "config", "secrets.env")
    values = {}
    if os.path.exists(path):
        with open(path) as handle:
            for line in handle:
                key, sep, value = line.strip().partition("=")
                if sep and not key.startswith("#") and key.startswith(prefix):
                    values[key.strip()] = value.strip()
    return values


def get_secret(key, prefix="CHEROKEE"):
    value = _secrets_file(prefix).get(key) or os.environ.get(key)
    if not value:
        raise RuntimeError(f"secret {key} is not set (secrets.env or environment)")
    return value


def get_db_config(prefix="CHEROKEE"):
    """The host database's connection settings, as keyword arguments for psycopg2.connect."""
    return {
        "host": get_secret(f"{prefix}_DB_HOST"),
        "dbname": get_secret(f"{prefix}_DB_NAME"),
        "user": get_secret(f"{prefix}_DB_USER"),
        "password": os.environ.get(f"{prefix}_DB_PASS") or _secrets_file(prefix).get(f"{prefix}_DB_PASS", ""),
        "port": int(get_secret(f"{prefix}_DB_PORT")),
    }
