"""The inventory service: products and stock reservations. Stock moves only by conditional `UPDATE`
(never below zero), rows locked in SKU order. Its steps of the order flow (reserve, release) are declared
with the others in orders/steps.py."""
