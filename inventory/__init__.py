"""The inventory service: products and stock reservations. Stock moves only by conditional `UPDATE`
(never below zero), rows locked in SKU order; `tasks` are its saga commands (reserve, release)."""
