"""How the shop's processes are run on one machine, outside Django.

- `launcher`: `python -m runtime.launcher run | test | exec -- CMD`, the commands behind `make run`, `make test`
  and the other make targets: start what is needed (the embedded servers, a database per service), migrate,
  seed once, then run the processes of the chosen ORDER_FLOW under the supervisor.
- `supervisor`: restart a process that dies, with capped, growing backoff, until Ctrl-C / SIGTERM.
- `embedded`: the pip-installed PostgreSQL and Redis under `.data/`, used when DATABASE_URL / REDIS_URL are unset.
- `pgadmin`: create and drop databases on a server named by a URL.
- `gunicorn_config`: the web process's gunicorn settings (its own errors as problem+json, no control socket).

Nothing here is imported by a web request or a worker, except `embedded`'s lookup of a running server
(`shop.env`), so `manage.py` finds the servers `make run` started.
"""

from pathlib import Path

# The checkout: where the processes run and where `.data/` lives.
REPO_ROOT = Path(__file__).resolve().parent.parent
