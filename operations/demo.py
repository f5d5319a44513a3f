"""The demo data of the API contract (DESIGN.md section 9): customers, funded wallets, a catalogue.

`manage.py seed` composes each service's own reset and seed functions (`services.py`); the customers are
Django's users, which no service owns, so they are made here.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import get_user_model

from idempotency.services import keys_reset
from inventory.services import inventory_reset, products_seed
from orders.services import orders_reset
from payments.services import payments_reset, wallets_seed
from sagas.housekeeping import messages_reset
from shipping.services import shipping_reset
from shop.auth import token_issue

# Apps that keep per-order state register their reset here. The saga engine's goes first: no saga, command or
# inbox row may outlive the orders it was about (its tables are emptied in every service database).
RESETS = [messages_reset, orders_reset, inventory_reset, payments_reset, shipping_reset, keys_reset]


@dataclass(frozen=True)
class DemoSpec:
    customers: int = 5
    products: int = 20
    stock: int = 100
    balance_cents: int = 1_000_000
    password: str = "password"


def customer_username(n: int) -> str:
    return f"customer{n}"


def product_sku(n: int) -> str:
    return f"SKU-{n:04d}"


def product_price_cents(n: int) -> int:
    # A spread of prices from 5.00 to 54.00, stable for a given SKU.
    return 500 + (n * 37 % 50) * 100


def seed(spec: DemoSpec) -> None:
    """Reset the demo data to exactly `spec`: running it twice gives the same state."""
    for reset in RESETS:
        reset()
    User = get_user_model()
    usernames = [customer_username(n) for n in range(1, spec.customers + 1)]
    User.objects.filter(username__regex=r"^customer[0-9]+$").exclude(username__in=usernames).delete()
    customer_ids = []
    for username in usernames:
        user, _ = User.objects.get_or_create(username=username)
        user.set_password(spec.password)
        user.save(update_fields=["password"])
        token_issue(user=user)
        customer_ids.append(user.pk)
    wallets_seed(customer_ids=customer_ids, balance_cents=spec.balance_cents)
    products_seed(catalogue=[(product_sku(n), f"Demo product {n}", product_price_cents(n))
                             for n in range(1, spec.products + 1)], stock=spec.stock)


def ensure_admin(*, username: str, password: str) -> str:
    """Create (or reset the password of) a superuser; return its API token."""
    User = get_user_model()
    user, _ = User.objects.get_or_create(username=username, defaults={"is_staff": True, "is_superuser": True})
    user.is_staff = user.is_superuser = True
    user.set_password(password)
    user.save()
    return token_issue(user=user).key
