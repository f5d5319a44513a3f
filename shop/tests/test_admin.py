"""Every admin page a person would open renders, with the cross-service details of an order."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from orders.flows import place_order
from orders.sagas import ORDER_SAGA
from orders.services import PlaceOrder
from sagas.engine import saga_start
from sagas.models import OutboxMessage, SagaInstance
from shop.testing import ADDRESS

pytestmark = pytest.mark.django_db


@pytest.fixture
def order(make_product, make_customer, settings):  # type: ignore[no-untyped-def]
    settings.ORDER_FLOW = "atomic"
    make_product(sku="SKU-A", stock=5)
    customer = make_customer()
    return place_order(PlaceOrder(customer_id=customer.pk, lines=[("SKU-A", 1)], payment_token="tok_ok",
                                  shipping_address=ADDRESS))


def test_every_changelist_renders(admin_client, order):
    for model in admin.site._registry:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        assert admin_client.get(url).status_code == 200, url


def test_order_page_shows_reservation_payment_and_shipment(admin_client, order):
    page = admin_client.get(reverse("admin:orders_order_change", args=[order.pk])).content.decode()
    assert "Inventory reservation" in page and "HELD" in page
    assert "CHARGED" in page
    assert "SCHEDULED" in page


def test_saga_timeline_and_admin_actions_are_logged(admin_client, order):
    saga = saga_start(definition=ORDER_SAGA, data={"order_id": order.pk})
    SagaInstance.objects.filter(pk=saga.pk).update(state=SagaInstance.State.PARKED)
    page = admin_client.get(reverse("admin:sagas_sagainstance_change", args=[saga.pk]))
    assert page.status_code == 200
    assert b"Timeline" in page.content

    admin_client.post(reverse("admin:sagas_sagainstance_changelist"),
                      {"action": "retry_parked", "_selected_action": [str(saga.pk)]})
    assert SagaInstance.objects.get(pk=saga.pk).state == SagaInstance.State.COMPENSATING

    OutboxMessage.objects.update(published_at="2026-01-01T00:00:00Z")
    message = OutboxMessage.objects.first()
    admin_client.post(reverse("admin:sagas_outboxmessage_changelist"),
                      {"action": "republish", "_selected_action": [str(message.pk)]})
    assert OutboxMessage.objects.get(pk=message.pk).published_at is None
    assert LogEntry.objects.count() == 2
