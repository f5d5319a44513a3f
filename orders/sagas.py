"""The order flow as an orchestrated saga (ORDER_FLOW=saga). Same steps as the atomic flow."""

from sagas.definitions import Retry, SagaDefinition, Step, register
from shop.errors import GatewayTimeout, PaymentUnavailable

ORDER_SAGA = register(
    SagaDefinition(
        name="order",
        service="orders",
        steps=(
            # Done in the API's transaction, together with starting the saga.
            Step("create_order", "orders", action=None, compensation="orders.reject_order"),
            Step("reserve_stock", "inventory", action="inventory.reserve_stock",
                 compensation="inventory.release_stock"),
            Step("charge_payment", "payments", action="payments.charge", compensation="payments.refund",
                 retry=Retry(attempts=4, backoff_seconds=0.05, on=(GatewayTimeout,),
                             exhausted=PaymentUnavailable.code)),
            Step("schedule_shipment", "shipping", action="shipping.schedule", compensation="shipping.cancel"),
            # The point of no return: nothing after it can fail.
            Step("confirm_order", "orders", action="orders.confirm_order"),
        ),
    )
)
