"""Saga participants: a Celery task per command, with an inbox that makes every delivery idempotent.

    @participant_task(service="inventory", name="inventory.reserve_stock")
    def reserve_stock(*, data: dict, key: str, failure: dict | None) -> dict | None:
        ...

In one transaction of the service's own database the task records the message in its inbox, runs the
handler (inside a savepoint, so a failure undoes the effect but keeps the inbox row), stores the reply
and writes it to the outbox. A duplicate delivery finds the inbox row and re-sends the stored reply,
changing nothing. Business errors and transient errors become replies; anything else (the database went
away) rolls everything back and the task is retried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import shared_task
from django.db import DatabaseError, transaction

from sagas.engine import REPLY_TASK, build_reply, inbox_claim
from sagas.models import InboxMessage
from sagas.outbox import outbox_send
from shop.errors import BusinessError, TransientError
from shop.routers import service_alias

logger = logging.getLogger(__name__)

Handler = Callable[..., dict | None]


def handle_command(*, service: str, message: dict, handler: Handler) -> dict:
    alias = service_alias(service)
    with transaction.atomic(using=alias, durable=True):
        claimed, stored = inbox_claim(using=alias, consumer=service, message_id=message["id"])
        if not claimed:
            if stored is not None:
                outbox_send(using=alias, queue=message["reply_queue"], task=REPLY_TASK, payload=stored,
                            message_id=stored["id"])
            return stored or {}
        try:
            with transaction.atomic(using=alias):
                result = handler(data=message["data"], key=message["key"], failure=message.get("failure"))
            reply = build_reply(message, "ok", result=result)
        except BusinessError as exc:
            reply = build_reply(message, "business", error=exc)
        except TransientError as exc:
            reply = build_reply(message, "transient", error=exc)
        InboxMessage.objects.using(alias).filter(consumer=service, message_id=message["id"]).update(reply=reply)
        outbox_send(using=alias, queue=message["reply_queue"], task=REPLY_TASK, payload=reply, message_id=reply["id"])
    return reply


def participant_task(*, service: str, name: str) -> Callable[[Handler], object]:
    def decorator(handler: Handler) -> object:
        @shared_task(name=name, acks_late=True, autoretry_for=(DatabaseError,), retry_backoff=True,
                     retry_backoff_max=10, max_retries=10)
        def task(message: dict) -> None:
            handle_command(service=service, message=message, handler=handler)

        task.handler = handler  # type: ignore[attr-defined]
        return task

    return decorator
