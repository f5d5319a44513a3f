"""The shipping service: shipments (country `XX` is undeliverable); `tasks` are its saga commands (schedule,
cancel)."""
