"""Creating and dropping databases on a PostgreSQL server named by a URL (embedded or external)."""

from __future__ import annotations

from urllib.parse import urlsplit


def database_url(server_url: str, name: str) -> str:
    """`server_url` pointing at database `name` instead."""
    return urlsplit(server_url)._replace(path=f"/{name}").geturl()


def _admin_connection(server_url: str):  # type: ignore[no-untyped-def]
    import dj_database_url
    import psycopg

    config = dj_database_url.parse(server_url)
    return psycopg.connect(host=config["HOST"] or None, port=config["PORT"] or None, user=config["USER"] or None,
                           password=config["PASSWORD"] or None, dbname="postgres", autocommit=True)


def create_database(server_url: str, name: str, *, fresh: bool = False) -> str:
    """Database `name` on the server of `server_url` (emptied first when `fresh`); returns its URL."""
    from psycopg import sql

    with _admin_connection(server_url) as conn:
        if fresh:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return database_url(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    from psycopg import sql

    with _admin_connection(server_url) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
