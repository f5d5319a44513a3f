"""`make chaos`: a fault matrix against a running shop, one verdict line per scenario.

    python -m loadtests.chaos                 # every scenario, about 10-15 minutes on 2 cores
    python -m loadtests.chaos --short         # the same scenarios with less load (CI; also CHAOS_SHORT=1)
    python -m loadtests.chaos --only worker-sigkill,poison-message

Runs on its own embedded PostgreSQL and Redis in `.data/chaos/` (started, restarted and stopped here; never
the machine's services nor the shared `.data/` servers), with the shop's processes started and supervised
by the driver itself, so that "killed" and "restarted" are under its control. Prints `<scenario>: holds` or
`<scenario>: falls short: <why>` for each, and exits 1 if any falls short (2 if the run itself failed).
Logs of every process of every scenario are kept in `reports/chaos-<timestamp>/`.
"""
