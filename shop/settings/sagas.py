from shop import env

# How long a step may go unanswered before the sweeper re-sends its command (safe: consumers deduplicate).
# Longer than the queueing delay of a loaded broker, or the re-sends add to the very load that delays them.
SAGA_STEP_TIMEOUT_SECONDS = env.get_float("SAGA_STEP_TIMEOUT_SECONDS", 30.0, minimum=0.1)
# Re-sends of one step before an action counts as failed (compensate) or a compensation parks the saga.
SAGA_MAX_RESENDS = env.get_int("SAGA_MAX_RESENDS", 5, minimum=1)
# A compensation that failed this many times parks its saga as needing attention (admin: retry).
SAGA_COMPENSATION_ATTEMPTS = env.get_int("SAGA_COMPENSATION_ATTEMPTS", 10, minimum=1)
# Every saga should be final by then (audit I3).
SAGA_DEADLINE_SECONDS = env.get_float("SAGA_DEADLINE_SECONDS", 300.0, minimum=1.0)
SAGA_SWEEP_INTERVAL_SECONDS = env.get_float("SAGA_SWEEP_INTERVAL_SECONDS", 1.0, minimum=0.05)

# The relay wakes on NOTIFY at commit; this poll is only the safety net.
OUTBOX_POLL_SECONDS = env.get_float("OUTBOX_POLL_SECONDS", 1.0, minimum=0.01)
OUTBOX_BATCH_SIZE = env.get_int("OUTBOX_BATCH_SIZE", 200, minimum=1, maximum=10_000)
OUTBOX_RETENTION_HOURS = env.get_float("OUTBOX_RETENTION_HOURS", 24.0, minimum=0.0)

# Fault injection for the relay, used by the crash tests and available to anyone who wants to watch the
# system recover: crash-after-claim, crash-after-publish (the process exits before committing), or
# publish-twice (every message is delivered two times).
OUTBOX_RELAY_FAULT = env.get_choice("OUTBOX_RELAY_FAULT", "", ("", "crash-after-claim", "crash-after-publish",
                                                                 "publish-twice"))
