"""Send each service's models to that service's database, in the modes that allow it.

Atomic mode keeps everything on `default`: two aliases are two connections, and two connections are two
transactions. In saga mode a service whose `<SERVICE>_DATABASE_URL` is set gets its own alias; the others
stay on `default`.
"""

from __future__ import annotations

from django.conf import settings

from shop.env import SERVICES


def service_alias(app_label: str) -> str:
    if app_label in SERVICES and settings.ORDER_FLOW != "atomic" and app_label in settings.DATABASES:
        return app_label
    return "default"


# Saga instances and their step log belong to the orchestrator, which lives in the orders service. The
# outbox and inbox tables exist in every service's database; their callers always name the alias.
ORCHESTRATOR_MODELS = {("sagas", "sagainstance"), ("sagas", "sagasteplog")}
# The two-phase commit coordinator's log lives with the orders service too (ORDER_FLOW=2pc).
ORDERS_DATABASE_APPS = {"twopc"}


def model_alias(model) -> str:  # type: ignore[no-untyped-def]
    if (model._meta.app_label, model._meta.model_name) in ORCHESTRATOR_MODELS or \
            model._meta.app_label in ORDERS_DATABASE_APPS:
        return service_alias("orders")
    return service_alias(model._meta.app_label)


class ServiceRouter:
    def db_for_read(self, model, **hints):  # type: ignore[no-untyped-def]
        return model_alias(model)

    def db_for_write(self, model, **hints):  # type: ignore[no-untyped-def]
        return model_alias(model)

    def allow_relation(self, obj1, obj2, **hints):  # type: ignore[no-untyped-def]
        return model_alias(obj1) == model_alias(obj2)

    def allow_migrate(self, db, app_label, model_name=None, **hints):  # type: ignore[no-untyped-def]
        # A service's own database holds only that service's tables (and its outbox/inbox, which the saga
        # engine migrates per alias); `default` holds everything, so one command migrates every layout.
        if db == "default":
            return True
        if db in SERVICES:
            return app_label == db or app_label == "sagas" or (db == "orders" and app_label in ORDERS_DATABASE_APPS)
        return None
