"""The orders service: orders and their lines, the status transition table, and the order flow's coordinators.

`api` is the HTTP entry point (`POST /api/v1/orders`), `flows/` picks the coordinator named by ORDER_FLOW
(one module per mode), `sagas` declares the order saga for the engine in `sagas/`, `tasks` are the orders
service's saga commands, `backpressure` refuses new orders while too many are still pending.
"""
