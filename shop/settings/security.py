"""The profile (SHOP_ENV) and everything it switches: secrets, hosts, HTTPS, passwords, the demo admin.

Development (the default) runs on a laptop with nothing set; production refuses to start without a secret key
and the host names it serves, and turns on every safeguard `manage.py check --deploy` asks for. Each safeguard
is also a variable of its own, for a deployment that needs it otherwise (e.g. TLS ended elsewhere).
"""

from django.core.exceptions import ImproperlyConfigured

from shop import env

SHOP_ENV = env.get_choice("SHOP_ENV", "development", env.PROFILES)
PRODUCTION = SHOP_ENV == "production"

# Public (it is in this file), so only for development: Django's `check --deploy` flags the `django-insecure-`
# prefix (security.W009), and production has no default at all.
DEVELOPMENT_SECRET_KEY = "django-insecure-development-only-key-of-the-shop-never-use-it-anywhere-shared"
if PRODUCTION:
    SECRET_KEY = env.get_required("SECRET_KEY", why="a long random string, e.g. from `openssl rand -base64 48`")
    ALLOWED_HOSTS = [host.strip() for host in env.get_required(
        "ALLOWED_HOSTS", why="the host names this shop answers to, comma-separated").split(",") if host.strip()]
else:
    SECRET_KEY = env.get_str("SECRET_KEY", DEVELOPMENT_SECRET_KEY)
    # The names a request to this machine can carry: localhost, the machine's own name and addresses, so
    # `HOST=0.0.0.0 make run` answers a request made to the machine's address from another one.
    ALLOWED_HOSTS = env.get_list("ALLOWED_HOSTS") or env.machine_host_names()

DEBUG = env.get_bool("DEBUG", False)
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured("DEBUG=1 is refused when SHOP_ENV=production (it shows settings and tracebacks)")

# HTTPS. In production behind a proxy that ends TLS and sets X-Forwarded-Proto; turn each off (0) where that
# is not so. The health endpoints are exempt from the redirect: load balancers probe them over plain HTTP.
SECURE_SSL_REDIRECT = env.get_bool("SECURE_SSL_REDIRECT", PRODUCTION)
SECURE_REDIRECT_EXEMPT = [r"^health/"]
SECURE_HSTS_SECONDS = env.get_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600 if PRODUCTION else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.get_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", PRODUCTION)
SECURE_HSTS_PRELOAD = env.get_bool("SECURE_HSTS_PRELOAD", PRODUCTION)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env.get_bool("SECURE_COOKIES", PRODUCTION)
# "Header-Name=value": a request with that header is taken as HTTPS. Only safe behind a proxy that always sets
# (or strips) the header; empty turns it off.
SECURE_PROXY_SSL_HEADER = env.get_header_pair("SECURE_PROXY_SSL_HEADER",
                                              "X-Forwarded-Proto=https" if PRODUCTION else "")

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
] if PRODUCTION else []

# The demo superuser admin/admin and its printed token exist only in development.
DEMO_ADMIN = not PRODUCTION

# API tokens (POST /api/v1/auth/token) stop working this long after they were issued; 0: never.
API_TOKEN_TTL_HOURS = env.get_int("API_TOKEN_TTL_HOURS", 24, minimum=0, maximum=24 * 365)
# Wrong passwords on POST /api/v1/auth/token, counted per client address and per username: this many within
# the window locks that address or username out for the rest of it (429 with Retry-After). A right password
# clears the username's count, never the address's (one known account must not reset an attacker's count).
AUTH_THROTTLE_FAILURES = env.get_int("AUTH_THROTTLE_FAILURES", 30, minimum=1)
AUTH_THROTTLE_WINDOW_SECONDS = env.get_int("AUTH_THROTTLE_WINDOW_SECONDS", 900, minimum=1)

# Production logs are JSON lines (shop.logs); development's are plain text. Both carry the request, order and
# saga ids where known.
LOG_FORMAT = env.get_choice("LOG_FORMAT", "json" if PRODUCTION else "plain", ("json", "plain"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "shop.logs.ContextFilter"},
                "without_traceback": {"()": "shop.logs.WithoutTraceback"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "shop.logs.JsonFormatter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]}},
    "root": {"handlers": ["console"], "level": env.get_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "INFO"},
                "django.security.DisallowedHost": {"filters": ["without_traceback"]}},
}
