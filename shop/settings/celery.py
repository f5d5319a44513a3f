from shop import env

REDIS_URL = env.redis_url()

CELERY_BROKER_URL = env.get_str("CELERY_BROKER_URL") or REDIS_URL
# Redis brokers go through kombu's Redis transport with one fix (shop/broker.py): a worker that loses Redis
# while it holds messages reconnects instead of stopping.
if CELERY_BROKER_URL.startswith("redis://"):
    CELERY_BROKER_TRANSPORT = "shop.broker:Transport"
# Workers reconnect to a broker that is back within two seconds (kombu's waits grow to 30 s).
CELERY_WORKER_CONSUMER = "shop.broker:Consumer"
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
# At-least-once: a message is acknowledged only after its task ran, and is redelivered if the worker dies.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env.get_int("CELERY_TASK_TIME_LIMIT", 60, minimum=1)
CELERY_TASK_SOFT_TIME_LIMIT = max(1, CELERY_TASK_TIME_LIMIT - 5)
CELERY_BROKER_IS_AMQP = CELERY_BROKER_URL.startswith(("amqp://", "amqps://", "pyamqp://"))
if CELERY_BROKER_IS_AMQP:
    # RabbitMQ: every publish waits for the broker's confirm, so the relay marks a row published only once the
    # broker has taken it. A message a worker took and did not acknowledge goes back to its queue as soon as
    # that worker's connection closes (no visibility timeout). Celery's queues are durable and its messages
    # persistent by default: both survive a broker restart.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"confirm_publish": True}
else:
    # Redis: longer than any task may run, so an unacknowledged message is redelivered only when its worker is
    # gone. (As low as 5 s is allowed so a test can watch a killed worker's message come back.)
    # A connect to a Redis that went away gives up after seconds rather than hanging, and kombu reconnects.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env.get_int("CELERY_VISIBILITY_TIMEOUT", 300, minimum=5),
        "socket_connect_timeout": 5, "socket_keepalive": True}
# A worker outlives its broker: on start-up and after losing the connection (Redis or RabbitMQ restarting) it
# retries forever with backoff instead of exiting, so nobody has to restart it when the broker is back.
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_CONNECTION_RETRY = True
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
CELERY_BROKER_CONNECTION_TIMEOUT = 4
# A task that is running when the connection drops finishes its own transaction; its ack may be lost, so the
# message comes again and the consumer's inbox drops the duplicate. Cancelling it would only redo the work.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_TASK_DEFAULT_QUEUE = "sagas"

# Redis also serves Django's cache (throttling counters) and the simulated gateway's memory.
# Short socket timeouts: a request whose Redis is unreachable is answered 503 in seconds instead of hanging.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                      "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2}}}
# Celery's Django fixup closes every database connection before and after each task unless this is set;
# reconnecting cost more than the task itself. Connections still honour DB_CONN_MAX_AGE and health checks.
CELERY_DB_REUSE_MAX = env.get_int("CELERY_DB_REUSE_MAX", 1000, minimum=0)
