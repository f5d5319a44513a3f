"""The payments service: wallets, payments and the simulated card gateway (`gateway`, its memory in Redis).
Wallets move only by conditional `UPDATE`. Its steps of the order flow (charge, refund; authorize, record,
capture, void for a coordinator that holds the card around its transaction) are declared in orders/steps.py."""
