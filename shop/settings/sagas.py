from shop import env

# How long a step may go unanswered before the sweeper re-sends its command (safe: consumers deduplicate).
# Longer than the queueing delay of a loaded broker, or the re-sends add to the very load that delays them.
SAGA_STEP_TIMEOUT_SECONDS = env.get_float("SAGA_STEP_TIMEOUT_SECONDS", 30.0, minimum=0.1)
# Re-sends of an action before its outcome counts as unknown and the saga compensates it (a compensation
# is re-sent for as long as it takes: silence never parks a saga).
SAGA_MAX_RESENDS = env.get_int("SAGA_MAX_RESENDS", 5, minimum=1)
# A compensation that failed this many times parks its saga as needing attention (admin: retry).
SAGA_COMPENSATION_ATTEMPTS = env.get_int("SAGA_COMPENSATION_ATTEMPTS", 10, minimum=1)
# Every saga should be final by then (audit I3).
SAGA_DEADLINE_SECONDS = env.get_float("SAGA_DEADLINE_SECONDS", 300.0, minimum=1.0)
# Each re-send of an unanswered command waits twice as long for its answer as the one before, up to this.
SAGA_RESEND_MAX_SECONDS = env.get_float("SAGA_RESEND_MAX_SECONDS", 60.0, minimum=0.1)
# A message whose handler raises something unexpected is tried this many times, then dead-lettered.
SAGA_MESSAGE_ATTEMPTS = env.get_int("SAGA_MESSAGE_ATTEMPTS", 3, minimum=1)
# While its database is away a consumer waits (capped backoff) this long, then gives the message back to
# the broker; less than the task's soft time limit.
SAGA_DB_WAIT_SECONDS = env.get_float("SAGA_DB_WAIT_SECONDS", 30.0, minimum=0.0)
SAGA_SWEEP_INTERVAL_SECONDS = env.get_float("SAGA_SWEEP_INTERVAL_SECONDS", 1.0, minimum=0.05)

# The relay wakes on NOTIFY at commit; this poll is only the safety net.
OUTBOX_POLL_SECONDS = env.get_float("OUTBOX_POLL_SECONDS", 1.0, minimum=0.01)
OUTBOX_BATCH_SIZE = env.get_int("OUTBOX_BATCH_SIZE", 200, minimum=1, maximum=10_000)
OUTBOX_RETENTION_HOURS = env.get_float("OUTBOX_RETENTION_HOURS", 24.0, minimum=0.0)
# Inbox rows (and step guards, and re-driven dead letters) are what makes a duplicate harmless, so they are kept
# far longer than a duplicate could still arrive: a message can wait in a queue for as long as its consumer is
# down, then comes the broker's visibility timeout and the sweeper's re-sends. `manage.py purge_messages`
# refuses a value shorter than that horizon.
INBOX_RETENTION_HOURS = env.get_float("INBOX_RETENTION_HOURS", 168.0, minimum=1.0)

# Fault injection for the relay, used by the crash tests and available to anyone who wants to watch the
# system recover: crash-after-claim, crash-after-publish (the process exits before committing), or
# publish-twice (every message is delivered two times).
OUTBOX_RELAY_FAULT = env.get_choice("OUTBOX_RELAY_FAULT", "", ("", "crash-after-claim", "crash-after-publish",
                                                                 "publish-twice"))

# ORDER_FLOW=choreography: a pending order with no event for this long is failed and compensated by events
# (manage.py choreography_sweeper, every CHOREOGRAPHY_SWEEP_INTERVAL_SECONDS).
CHOREOGRAPHY_DEADLINE_SECONDS = env.get_float("CHOREOGRAPHY_DEADLINE_SECONDS", 60.0, minimum=0.5)
CHOREOGRAPHY_SWEEP_INTERVAL_SECONDS = env.get_float("CHOREOGRAPHY_SWEEP_INTERVAL_SECONDS", 1.0, minimum=0.05)
