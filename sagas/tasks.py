from celery import shared_task

from monitoring import metrics
from sagas import engine
from sagas.choreography import all_choreographies
from sagas.definitions import all_definitions
from sagas.participants import consume

# The participants' tasks are generated from the saga definitions as they register: importing every app's
# `sagas` module here is how a worker (whose Celery app imports each app's `tasks`) comes to know them all.
all_definitions()
# The same for the choreographies' reaction tasks (`<service>.choreography`), from every app's `choreography`.
all_choreographies()


@shared_task(name=engine.REPLY_TASK, acks_late=True)
def saga_reply(reply: dict) -> str | None:
    """The orchestrator's entry point: one participant's answer."""
    outcome = consume(consumer=engine.ORCHESTRATOR, task=engine.REPLY_TASK, queue=engine.REPLY_QUEUE,
                      message=reply, run=engine.handle_reply)
    if outcome == "duplicate":
        metrics.count("inbox_duplicates", consumer=engine.ORCHESTRATOR)
    return outcome
