# The saga tests' real processes (Celery workers, relays, sweeper), for the checks that watch them.
from sagas.tests.conftest import no_processes, saga, saga_stack  # noqa: F401
