"""The admin in a real browser (Playwright driving Debian's chromium): log in, open an order, follow it to its
saga's timeline, open the outbox. `-m browser` selects it; it is skipped, saying why, where no browser is."""

from __future__ import annotations

import shutil

import pytest

from orders.flows import place_order
from orders.sagas import ORDER_SAGA
from orders.services import PlaceOrder
from sagas.engine import saga_start
from shop.testing import ADDRESS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip: requirements.txt)")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(shutil.which("chromium") is None,
                       reason="no chromium on this machine: `apt-get install -y chromium` (CI installs it)"),
]


@pytest.fixture
def order_with_saga(make_product, make_customer, settings):  # type: ignore[no-untyped-def]
    settings.ORDER_FLOW = "atomic"
    make_product(sku="SKU-A", stock=5)
    order = place_order(PlaceOrder(customer_id=make_customer().pk, lines=[("SKU-A", 1)], payment_token="tok_ok",
                                   shipping_address=ADDRESS))
    saga = saga_start(definition=ORDER_SAGA, data={"order_id": order.pk})
    return order, saga


def test_log_in_open_an_order_its_saga_timeline_and_the_outbox(live_server, admin_user, order_with_saga):
    order, saga = order_with_saga
    # Everything the database needs is written above: Playwright's sync API runs an event loop in this thread,
    # inside which Django refuses ORM calls.
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(f"{live_server.url}/admin/")
            page.fill("#id_username", "admin")
            page.fill("#id_password", "password")
            page.click("input[type=submit]")
            page.wait_for_selector("#site-name")
            assert "Site administration" in page.content()

            page.goto(f"{live_server.url}/admin/orders/order/")
            page.click(f"th.field-id a:text-is('{order.pk}')")
            page.wait_for_selector("text=Inventory reservation")
            assert "CHARGED" in page.content()
            assert page.locator("input[name=_save]").count() == 0  # read-only

            page.click(f"a:text-is('{saga.pk}')")
            page.wait_for_selector("text=Timeline")
            assert page.locator(f"a[href='/admin/orders/order/{order.pk}/change/']").count() == 1

            page.goto(f"{live_server.url}/admin/sagas/outboxmessage/")
            page.wait_for_selector("text=Pending in every outbox")
            assert page.locator("#result_list tbody tr").count() >= 1
            assert page.locator(".object-tools a.addlink").count() == 0  # no "Add outbox message"
        finally:
            browser.close()
