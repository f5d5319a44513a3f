"""/metrics: request figures, the shop's gauges and counters from the databases and Redis, who may scrape."""

from __future__ import annotations

import ipaddress
import re
import subprocess
import sys
import threading
import urllib.request
import uuid

import pytest
from django.conf import settings as django_settings
from django.utils import timezone

from sagas.models import DeadLetter, OutboxMessage
from sagas.processes import web_command
from sagas.tests.test_order_saga import place, wait_final
from shop.testing import order_body, wait_until


def value(text: str, name: str, **labels: str) -> float:
    """The sample `name{labels}` of a Prometheus text page (labels in any order); 0 when absent."""
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if match:
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
            if found == labels:
                return float(match.group(2))
    return 0.0


def published(text: str) -> float:
    """Messages published by the relays of every database."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("shop_relay_published_total{"))


def scrape(client) -> str:  # type: ignore[no-untyped-def]
    response = client.get("/metrics")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=")  # the Prometheus text format
    return response.content.decode()


@pytest.mark.django_db
def test_requests_are_counted_by_view_method_and_status(client):
    before = value(scrape(client), "shop_http_request_duration_seconds_count", method="GET", status="401",
                   view="wallet")

    for _ in range(3):
        client.get("/api/v1/wallet")
    text = scrape(client)

    assert value(text, "shop_http_request_duration_seconds_count", method="GET", status="401",
                 view="wallet") == before + 3
    assert value(text, "shop_http_request_duration_seconds_bucket", le="+Inf", method="GET", status="401",
                 view="wallet") == before + 3


@pytest.mark.django_db
def test_orders_outbox_dead_letters_and_idempotency_replays(client, make_product, make_customer, client_for):
    make_product(sku="SKU-M", stock=10)
    buyer = client_for(make_customer())
    before = value(scrape(client), "shop_idempotency_replays_total")
    key = uuid.uuid4().hex
    for _ in range(2):
        response = buyer.post("/api/v1/orders", order_body([("SKU-M", 1)]), format="json",
                              HTTP_IDEMPOTENCY_KEY=key)
        assert response.status_code == 201, response.content
    OutboxMessage.objects.create(message_id=uuid.uuid4(), queue="inventory", task="inventory.reserve_stock",
                                 payload={}, available_at=timezone.now())
    DeadLetter.objects.create(consumer="payments", task="payments.charge", error="poison: test")

    text = scrape(client)

    assert value(text, "shop_orders", flow="atomic", status="CONFIRMED") == 1
    assert value(text, "shop_idempotency_replays_total") == before + 1
    assert value(text, "shop_outbox_pending", database="default") == 1
    assert value(text, "shop_outbox_oldest_pending_age_seconds", database="default") >= 0
    assert "shop_outbox_oldest_pending_age_seconds{database=\"default\"}" in text
    assert value(text, "shop_dead_letters", database="default") == 1
    assert value(text, "shop_saga_backlog") == 0


@pytest.mark.saga
@pytest.mark.django_db(transaction=True, databases="__all__")
def test_saga_figures_steps_relay_and_duplicates(saga, client, make_product, make_customer, client_for):
    make_product(sku="SKU-S", stock=10)
    buyer = client_for(make_customer())
    before = scrape(client)

    order = place(buyer, [("SKU-S", 1)])
    assert wait_final(buyer, order["id"], saga)["status"] == "CONFIRMED"
    # The relays (one per database) add to their counts at most once a second; a saga of three remote steps
    # publishes at least three commands and three replies.
    assert wait_until(lambda: published(scrape(client)) >= published(before) + 6, timeout=30)
    text = scrape(client)

    assert value(text, "shop_orders", flow="saga", status="CONFIRMED") == 1
    for step in ("reserve_stock", "charge_payment", "schedule_shipment"):
        assert value(text, "shop_saga_step_duration_seconds_count", direction="action", step=step) == 1, text
    assert value(text, "shop_saga_backlog") == 0


def test_inbox_duplicates_are_counted_in_redis_for_the_scrape(db, client):
    from monitoring.metrics import count

    consumer = f"test-{uuid.uuid4().hex[:6]}"
    count("inbox_duplicates", consumer=consumer)
    count("inbox_duplicates", 2, consumer=consumer)

    assert value(scrape(client), "shop_inbox_duplicates_total", consumer=consumer) == 3


@pytest.mark.django_db
def test_a_token_or_an_allowed_address_is_needed_when_configured(client, settings):
    settings.METRICS_TOKEN = "s3cret-token"
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token").status_code == 200

    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_IPS = [ipaddress.ip_network("10.0.0.0/8")]
    assert client.get("/metrics").status_code == 403  # the test client comes from 127.0.0.1
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200


@pytest.mark.saga
@pytest.mark.django_db(transaction=True, databases="__all__")
def test_gunicorn_workers_figures_are_added_up(no_processes, tmp_path):
    """Two gunicorn workers answer; /metrics, from either, counts every request of both."""
    from sagas.tests.test_processes import free_port

    port = free_port()
    log = open(tmp_path / "web.log", "wb")  # noqa: SIM115 (closed below)
    web = subprocess.Popen(web_command(sys.executable, "127.0.0.1", port, 2), cwd=django_settings.BASE_DIR,
                           env=no_processes.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def get(path: str) -> str:
        with urllib.request.urlopen(base + path, timeout=30) as response:
            return response.read().decode()

    def up() -> bool:
        try:
            return get("/health/live") is not None
        except OSError:
            return False

    try:
        assert wait_until(up, timeout=60, interval=0.2), (tmp_path / "web.log").read_text()
        start = value(get("/metrics"), "shop_http_request_duration_seconds_count", method="GET", status="200",
                      view="health-live")
        threads = [threading.Thread(target=lambda: [get("/health/live") for _ in range(10)]) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        counts = {value(get("/metrics"), "shop_http_request_duration_seconds_count", method="GET", status="200",
                        view="health-live") for _ in range(6)}
    finally:
        web.terminate()
        web.wait(20)
        log.close()

    assert counts == {start + 40}, counts


def test_production_without_a_token_or_addresses_answers_loopback_only(monkeypatch):
    """The settings module itself, read as SHOP_ENV=production with neither variable set."""
    import importlib

    import shop.settings.monitoring as monitoring_settings

    monkeypatch.setenv("SHOP_ENV", "production")
    monkeypatch.delenv("METRICS_TOKEN", raising=False)
    monkeypatch.delenv("METRICS_ALLOWED_IPS", raising=False)
    try:
        production = importlib.reload(monitoring_settings)
        assert production.METRICS_TOKEN == ""
        assert [str(n) for n in production.METRICS_ALLOWED_IPS] == ["127.0.0.0/8", "::1/128"]
    finally:
        monkeypatch.undo()
        importlib.reload(monitoring_settings)
