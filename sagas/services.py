"""Writes of the saga engine that people trigger (the admin's actions), beside the engine's own moves."""

from __future__ import annotations

import uuid

from django.db import transaction
from django.utils import timezone

from sagas.models import DeadLetter
from sagas.outbox import outbox_send


def dead_letter_redrive(*, letter_id: int, using: str) -> bool:
    """Send a dead-lettered message to its queue again, through the outbox of its own database.

    Returns False when there is nothing to re-drive (already re-driven, or a payload that is not a
    message any task could take)."""
    with transaction.atomic(using=using):
        letter = DeadLetter.objects.using(using).select_for_update().filter(pk=letter_id).first()
        if letter is None or letter.redriven_at is not None or not letter.queue:
            return False
        outbox_send(using=using, queue=letter.queue, task=letter.task, payload=letter.payload,
                    message_id=_message_id(letter.message_id))
        letter.redriven_at = timezone.now()
        letter.save(using=using, update_fields=["redriven_at"])
    return True


def _message_id(value: str) -> uuid.UUID:
    """The message's own id, so its consumer's inbox still recognises it; a fresh one if it had none."""
    try:
        return uuid.UUID(value)
    except ValueError:
        return uuid.uuid4()
