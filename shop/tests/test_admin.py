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


ENGINE_AND_LEDGER = ["orders.order", "payments.payment", "payments.wallet", "inventory.reservation",
                     "shipping.shipment", "sagas.sagainstance", "sagas.outboxmessage", "sagas.inboxmessage",
                     "sagas.stepguard", "sagas.deadletter", "idempotency.idempotencykey"]


@pytest.mark.parametrize("label", ENGINE_AND_LEDGER)
def test_engine_and_ledger_rows_cannot_be_added_edited_or_deleted(admin_client, order, label):
    from django.apps import apps

    model = apps.get_model(label)
    name = f"admin:{model._meta.app_label}_{model._meta.model_name}"
    assert admin_client.get(reverse(f"{name}_add")).status_code == 403
    assert admin_client.post(reverse(f"{name}_add"), {}).status_code == 403
    changelist = admin_client.get(reverse(f"{name}_changelist")).content.decode()
    assert "delete_selected" not in changelist
    row = model.objects.first()
    if row is not None:
        page = admin_client.get(reverse(f"{name}_change", args=[row.pk]))
        assert page.status_code == 200
        assert 'name="_save"' not in page.content.decode()
        assert admin_client.post(reverse(f"{name}_change", args=[row.pk]), {}).status_code == 403
        assert admin_client.post(reverse(f"{name}_delete", args=[row.pk]), {"post": "yes"}).status_code == 403
        assert model.objects.filter(pk=row.pk).exists()


def test_order_links_to_its_saga_and_back_and_the_saga_list_names_the_step(admin_client, order):
    saga = saga_start(definition=ORDER_SAGA, data={"order_id": order.pk})
    order_page = admin_client.get(reverse("admin:orders_order_change", args=[order.pk])).content.decode()
    assert reverse("admin:sagas_sagainstance_change", args=[saga.pk]) in order_page
    saga_page = admin_client.get(reverse("admin:sagas_sagainstance_change", args=[saga.pk])).content.decode()
    assert reverse("admin:orders_order_change", args=[order.pk]) in saga_page
    listing = admin_client.get(reverse("admin:sagas_sagainstance_changelist")).content.decode()
    current = ORDER_SAGA.step(SagaInstance.objects.get(pk=saga.pk).current_step).name
    assert f"{SagaInstance.objects.get(pk=saga.pk).current_step} {current}" in listing
