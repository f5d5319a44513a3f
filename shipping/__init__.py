"""The shipping service: shipments (country `XX` is undeliverable). Its steps of the order flow (schedule,
cancel) are declared with the others in orders/steps.py."""
