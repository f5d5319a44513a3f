from celery import shared_task
from django.db import DatabaseError

from sagas import engine


@shared_task(name=engine.REPLY_TASK, acks_late=True, autoretry_for=(DatabaseError,), retry_backoff=True,
             retry_backoff_max=10, max_retries=10)
def saga_reply(reply: dict) -> str:
    """The orchestrator's entry point: one participant's answer."""
    return engine.handle_reply(reply)
