"""Settings, split by concern. Every value that comes from the environment is read in `shop.env`."""

from .base import *  # noqa: F403
from .celery import *  # noqa: F403
from .databases import *  # noqa: F403
from .idempotency import *  # noqa: F403
from .monitoring import *  # noqa: F403
from .orderflow import *  # noqa: F403
from .sagas import *  # noqa: F403
from .security import *  # noqa: F403
