"""The orders service: orders and their lines, the status transition table, and the order flow's coordinators.

`api` is the HTTP entry point (`POST /api/v1/orders`), `steps` declares the order's steps once (every
service's action and compensation), `flows/` picks the coordinator named by ORDER_FLOW (one module per mode,
each running those steps), `sagas` derives the order saga from them for the engine in `sagas/`,
`backpressure` refuses new orders while too many are still pending.
"""
