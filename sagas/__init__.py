"""The generic saga engine: it runs any saga definition and imports no service app.

`definitions` (a saga is a name and a tuple of shop.steps.Step; each step's functions become Celery tasks),
`engine` (the orchestrator: the transition table and the one `apply`), `participants` (the wrapper that makes a
service's command idempotent: inbox, step guards, replies), `outbox` (the transactional outbox and its relay),
`models` (instances, step log, outbox, inbox, guards, dead letters), `processes` (the commands of workers, relays
and sweeper), `housekeeping` (reset and purge of its tables), `selectors`, `admin`, and the relay, sweeper and
purge management commands.
"""
