"""ORDER_FLOW=2pc: the two-phase commit coordinator (orders/flows/twopc.py) and its recovery (twopc/)."""

from django.core.exceptions import ImproperlyConfigured

from shop import env

from .databases import DATABASES
from .orderflow import ORDER_FLOW

# How long any statement of a 2pc order waits for a row lock (a stock row, a wallet) before the order is
# answered 503 `concurrency-conflict` with Retry-After. A prepared branch keeps its locks until phase two, or
# until recovery resolves it when the coordinator died: this bound is what turns 2PC's blocking into an answer.
TWOPC_LOCK_TIMEOUT_MS = env.get_int("TWOPC_LOCK_TIMEOUT_MS", 2000, minimum=1, maximum=600_000)
# A prepared branch with no decision in the coordinator log is rolled back (presumed abort) once it is this
# old: younger ones may belong to a coordinator that is still between its prepares and its decision.
TWOPC_RECOVERY_GRACE_SECONDS = env.get_float("TWOPC_RECOVERY_GRACE_SECONDS", 10.0, minimum=0.0)
# How often the recovery process (manage.py recover_2pc) looks for in-doubt branches.
TWOPC_RECOVERY_INTERVAL_SECONDS = env.get_float("TWOPC_RECOVERY_INTERVAL_SECONDS", 2.0, minimum=0.05)
# How long the coordinator log keeps a decision whose branches are all finished (recovery purges older ones);
# at least an hour, far longer than any coordinator takes from its decision to its last COMMIT PREPARED.
TWOPC_LOG_RETENTION_HOURS = env.get_float("TWOPC_LOG_RETENTION_HOURS", 24.0, minimum=1.0)
# Audit I7: a prepared transaction older than this means recovery is not running or cannot resolve it.
TWOPC_MAX_PREPARED_AGE_SECONDS = env.get_float("TWOPC_MAX_PREPARED_AGE_SECONDS", 60.0, minimum=1.0)
# Fault injection (tests, chaos): `crash-after-prepare` (the coordinator dies with every branch prepared and no
# decision: recovery rolls back), `crash-after-decision` (dies with the commit decision logged and no branch
# committed: recovery commits), `fail-prepare:<service>` (that service's PREPARE TRANSACTION fails for real),
# `lose-branch:<service>` (that branch's connection closes after the decision, before its COMMIT PREPARED).
TWOPC_FAULT = env.get_str("TWOPC_FAULT")
_FAULTS = ("crash-after-prepare", "crash-after-decision", *(f"fail-prepare:{s}" for s in env.SERVICES),
           *(f"lose-branch:{s}" for s in env.SERVICES))
if TWOPC_FAULT and TWOPC_FAULT not in _FAULTS:
    raise ImproperlyConfigured(f"TWOPC_FAULT={TWOPC_FAULT!r} is not one of {', '.join(_FAULTS)}")

if ORDER_FLOW == "2pc":
    _missing = [service for service in env.SERVICES if service not in DATABASES]
    if _missing:
        raise ImproperlyConfigured(
            "ORDER_FLOW=2pc needs a database per service: set SHOP_DB_PER_SERVICE=1 (the launcher creates them) or "
            + ", ".join(f"{service.upper()}_DATABASE_URL" for service in _missing))
    for _config in DATABASES.values():
        # A libpq start-up parameter: every connection gets it with no round trip of its own.
        _options = _config.setdefault("OPTIONS", {})
        _options["options"] = f"{_options.get('options', '')} -c lock_timeout={TWOPC_LOCK_TIMEOUT_MS}".strip()
