from pathlib import Path

from shop import env

BASE_DIR = Path(__file__).resolve().parent.parent.parent


INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "shop",
    "orders",
    "inventory",
    "payments",
    "shipping",
    "sagas",
    "idempotency",
    "benchmarks",
    "operations",
    "monitoring",
]

MIDDLEWARE = [
    # First, so it times what every other middleware costs too.
    "monitoring.metrics.RequestMetricsMiddleware",
    "shop.logs.RequestContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "shop.urls"
# The bare one-INSERT endpoint of `make bench` (/api/bench/insert): unauthenticated, so off unless asked for.
BENCH_ENDPOINT = env.get_bool("BENCH_ENDPOINT", False)
WSGI_APPLICATION = "shop.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# The admin and the Swagger UI assets are served by the app itself, straight from the installed packages.
WHITENOISE_USE_FINDERS = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Requests larger than this are answered 413 before any work is done.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.get_int("MAX_REQUEST_BYTES", 64 * 1024, minimum=1024)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "shop.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["shop.parsers.ShopJSONParser"],
    "EXCEPTION_HANDLER": "shop.problems.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "shop.schema.ShopAutoSchema",
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.UserRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"user": env.get_str("API_THROTTLE_RATE") or None},
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # How many proxies in front of the shop append to X-Forwarded-For: throttles count the address the nearest
    # trusted proxy saw. 0: the socket's own address, which a client cannot forge (DRF would otherwise trust
    # any X-Forwarded-For a client sends).
    "NUM_PROXIES": env.get_int("NUM_PROXIES", 0, minimum=0, maximum=10),
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Shop API",
    "DESCRIPTION": "One order flow, run as one ACID transaction or as an orchestrated saga.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}


