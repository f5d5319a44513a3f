from shop import env

# Which coordination runs the order flow; see orders/flows/.
ORDER_FLOW = env.get_choice("ORDER_FLOW", "atomic", env.ORDER_FLOWS)

ORDER_MAX_LINES = 50
ORDER_MAX_QUANTITY = 100

# The simulated payment gateway, shared by every mode. Tokens (tok_ok, tok_decline, ...) force an outcome;
# these rates add random ones on top.
PAYMENT_DECLINE_RATE = env.get_float("PAYMENT_DECLINE_RATE", 0.0, minimum=0.0, maximum=1.0)
PAYMENT_FAULT_RATE = env.get_float("PAYMENT_FAULT_RATE", 0.0, minimum=0.0, maximum=1.0)
PAYMENT_LATENCY_MS = env.get_int("PAYMENT_LATENCY_MS", 0, minimum=0, maximum=60_000)
PAYMENT_TIMEOUT_MS = env.get_int("PAYMENT_TIMEOUT_MS", 50, minimum=0, maximum=60_000)
# Within one atomic placement, how many times a transient gateway fault is retried.
PAYMENT_ATTEMPTS = env.get_int("PAYMENT_ATTEMPTS", 3, minimum=1, maximum=20)

# Backpressure in saga mode: while this many orders are accepted and not final (PENDING), POST /api/v1/orders
# answers 503 `overloaded` with Retry-After instead of accepting work the workers cannot finish soon. 0: no
# bound. See the README ("Backpressure") for how the default was chosen.
SAGA_MAX_BACKLOG = env.get_int("SAGA_MAX_BACKLOG", 200, minimum=0)
# How long a web process trusts its last count of the backlog (adding the orders it accepted since), so the
# check is one indexed count per process per interval rather than per POST. 0: count on every POST.
SAGA_BACKLOG_CHECK_MS = env.get_int("SAGA_BACKLOG_CHECK_MS", 100, minimum=0, maximum=10_000)
