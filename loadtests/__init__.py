"""Measuring the modes side by side; nothing here runs in the shop itself.

`compare` (`make compare`: Locust scenarios of `locustfile`, `mix`, one report by `report`), `bench`
(`make bench`: cost per order against the bare endpoint), `saga_bench` (`make bench-saga`: saga latency and
relay drain), `chaos/` (`make chaos`: the fault matrix), `collect` (numbers read from a mode's database).
"""
