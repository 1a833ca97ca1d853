"""BuildX settings: every value comes from the environment, with safe defaults for local use.

The README documents each variable. Unset DATABASE_URL means SQLite; unset REDIS_URL means the
embedded mode (in-memory channel layer, in-process Dramatiq worker, local-memory cache).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from corsheaders.defaults import default_headers as default_cors_headers
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


def database_from_url(url: str) -> dict:
    """Turn postgres://user:pass@host:port/name?opt=v into a Django DATABASES entry (psycopg 3, pooled)."""
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql", "pgsql"}:
        raise ImproperlyConfigured(f"DATABASE_URL must be a postgres:// URL, not {parts.scheme}://")
    options: dict = dict(parse_qsl(parts.query))
    # Django's own psycopg pool; CONN_MAX_AGE must stay 0 with it.
    options["pool"] = {"min_size": 1, "max_size": env_int("DATABASE_POOL_MAX", 10), "timeout": 10}
    return {
        # django-prometheus's wrapper of Django's backend counts queries and their time (METRICS_ENABLED).
        "ENGINE": ("django_prometheus" if METRICS_ENABLED else "django") + ".db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")) or "buildx",
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "OPTIONS": options,
        "TEST": {"NAME": env("DATABASE_TEST_NAME") or None},
    }


# --- Core -----------------------------------------------------------------------------------

DEFAULT_SECRET_KEY = "buildx-local-development-key-do-not-use-in-production"
SECRET_KEY = env("SECRET_KEY", DEFAULT_SECRET_KEY)
DEBUG = env_bool("DEBUG", True)
if not DEBUG and SECRET_KEY == DEFAULT_SECRET_KEY:
    raise ImproperlyConfigured(
        "DEBUG is off but SECRET_KEY is the built-in development key. "
        "Set SECRET_KEY to a long random value (python -c 'import secrets; print(secrets.token_urlsafe(50))')."
    )

# Prometheus metrics (buildx/metrics.py): request metrics from django-prometheus (its middleware and
# database wrapper), BuildX's own, and /metrics. Off: none of it is loaded.
METRICS_ENABLED = env_bool("METRICS_ENABLED", True)

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

DATA_DIR = Path(env("BUILDX_DATA_DIR", str(BASE_DIR / "var" / "data")))
MEDIA_ROOT = Path(env("MEDIA_ROOT", str(BASE_DIR / "var" / "media")))
MEDIA_URL = "/media/"
STATIC_URL = "/static/"
STATIC_ROOT = Path(env("STATIC_ROOT", str(BASE_DIR / "var" / "static")))
STATICFILES_DIRS = [BASE_DIR / "static"]

DATABASE_URL = env("DATABASE_URL")
REDIS_URL = env("REDIS_URL")
EMBEDDED = not REDIS_URL

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.sites",
    "channels",
    "rest_framework",
    "drf_spectacular",
    "django_dramatiq",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.google",
    "allauth.headless",
    "phonenumber_field",
    "corsheaders",
    "csp",
    *(["django_prometheus"] if METRICS_ENABLED else []),
    "buildx.apps.BuildxConfig",
    "accounts",
    "library",
    "designs",
    "training",
    "feedback",
]

MIDDLEWARE = [
    # First and last: django-prometheus times the whole request, every other middleware included.
    *(["django_prometheus.middleware.PrometheusBeforeMiddleware"] if METRICS_ENABLED else []),
    "django.middleware.security.SecurityMiddleware",
    # Above everything that can answer on its own (the body limits, CommonMiddleware), so that those
    # answers carry the CORS headers too and a listed origin's page can read them.
    "corsheaders.middleware.CorsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    # Before anything reads a body (CSRF reads forms, DRF and allauth parse JSON); after the locale,
    # so that its refusals speak the user's language.
    "buildx.middleware.JSONBodyLimits",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # The request id and the user id on every log line of the request (buildx/logs.py).
    "buildx.logs.RequestContext",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    # After allauth's: a rate limit hit deep inside one of its flows answers 429, not 500.
    "accounts.middleware.RateLimitedAs429",
    *(["django_prometheus.middleware.PrometheusAfterMiddleware"] if METRICS_ENABLED else []),
]

ROOT_URLCONF = "buildx.urls"
ASGI_APPLICATION = "buildx.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "buildx.context_processors.platform",
            ],
        },
    },
]

if DATABASE_URL:
    DATABASES = {"default": database_from_url(DATABASE_URL)}
else:
    # In var/, which manage.py and the test suite create (importing the settings creates nothing).
    DATABASES = {
        "default": {
            "ENGINE": ("django_prometheus" if METRICS_ENABLED else "django") + ".db.backends.sqlite3",
            "NAME": env("SQLITE_PATH", str(BASE_DIR / "var" / "db.sqlite3")),
            # The embedded worker writes from other threads; wait for the lock instead of failing.
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
            # The test database in a file, not in shared-cache memory, where a second thread's write
            # fails at once with "database table is locked" instead of waiting for the lock.
            "TEST": {"NAME": env("DATABASE_TEST_NAME") or str(BASE_DIR / "var" / "test-db.sqlite3")},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"
SITE_ID = 1

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]

# --- Cache, channels, background work --------------------------------------------------------

if not REDIS_URL:
    CHANNEL_LAYERS: dict[str, dict[str, Any]] = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}
    }
else:
    # Redis pub/sub: a group send is one PUBLISH, and each web process reads its subscriptions in bulk.
    # Run events reach a process once, through the consumers' RunFanout (training/consumers.py), which
    # joins run.<id> with one channel and fans out to its sockets. Chosen by bench/stream.py (500
    # sockets): the core layer's receive costs four Redis round trips a message on the server's event
    # loop, and fell seconds behind whenever handshakes and deliveries kept that loop busy. At most
    # once: the database is the record, and a socket fills a gap in a run's numbers from it.
    # Redis keeps its pub/sub channels outside its numbered databases: two deployments (or two test runs)
    # on one Redis server with different database numbers would hear each other's run events. The prefix
    # carries the database number, so each one hears only its own.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": f"buildx{urlsplit(REDIS_URL).path.strip('/') or '0'}"},
        }
    }

if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

DRAMATIQ_BROKER = {
    "BROKER": "dramatiq.brokers.redis.RedisBroker" if REDIS_URL else "dramatiq.brokers.stub.StubBroker",
    "OPTIONS": {"url": REDIS_URL} if REDIS_URL else {},
    "MIDDLEWARE": [
        "dramatiq.middleware.AgeLimit",
        "dramatiq.middleware.TimeLimit",
        "dramatiq.middleware.Callbacks",
        "dramatiq.middleware.Retries",
        "django_dramatiq.middleware.DbConnectionsMiddleware",
        # The ids of the request or job that enqueued a message on its job's log lines (buildx/logs.py).
        "buildx.logs.LogContext",
        # Messages counted and timed, the worker's heartbeat and its metrics endpoint (buildx/worker_metrics.py).
        "buildx.worker_metrics.WorkerMetrics",
        # Runs whose worker died are marked interrupted and resumed (RUNS_STALE_CHECK_INTERVAL).
        "training.middleware.StaleRunCheck",
    ],
}
DRAMATIQ_AUTODISCOVER_MODULES = ["actors"]
DRAMATIQ_TASKS_DATABASE = "default"
# Embedded mode runs this many worker threads inside the web process.
EMBEDDED_WORKER_THREADS = env_int("EMBEDDED_WORKER_THREADS", 2)

# --- Accounts (allauth) ------------------------------------------------------------------------

# Email + password, or a phone number + a code sent by SMS (allauth's login by code). A phone is
# never a password login: see accounts/adapters.py.
ACCOUNT_LOGIN_METHODS = {"email", "phone"}
ACCOUNT_EMAIL_VERIFICATION = env("ACCOUNT_EMAIL_VERIFICATION", "optional")
# Sign up with an email and a password, or with a phone number alone; accounts.forms.SignupExtras
# asks for one of the two (allauth's fields are all optional). allauth cannot make email verification
# mandatory without a required email, so then only email sign-ups are open (a phone can still be added).
PHONE_SIGNUP_ENABLED = ACCOUNT_EMAIL_VERIFICATION != "mandatory"
ACCOUNT_SIGNUP_FIELDS = (
    ["email", "phone", "password1", "password2"]
    if PHONE_SIGNUP_ENABLED
    else ["email*", "phone", "password1*", "password2*"]
)
ACCOUNT_SIGNUP_FORM_CLASS = "accounts.forms.SignupExtras"
ACCOUNT_FORMS = {
    "login": "accounts.login_forms.EmailLoginForm",
    "request_login_code": "accounts.login_forms.PhoneLoginCodeForm",
}
# allauth warns when no login method is a required sign-up field; SignupExtras requires one of two.
SILENCED_SYSTEM_CHECKS = ["account.W001"] if PHONE_SIGNUP_ENABLED else []
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_LOGOUT_ON_PASSWORD_CHANGE = False
ACCOUNT_LOGIN_BY_CODE_ENABLED = True
# SMS codes: six digits (what phones offer to paste), a few minutes, three tries, used once (allauth
# keeps a code in the session's pending login and drops it when the login completes or fails).
# One lifetime for every SMS code (the text says it): a few minutes, as Korean services do.
PHONE_CODE_TIMEOUT_S = 3 * 60
ACCOUNT_LOGIN_BY_CODE_TIMEOUT = PHONE_CODE_TIMEOUT_S
ACCOUNT_LOGIN_BY_CODE_MAX_ATTEMPTS = 3
ACCOUNT_LOGIN_BY_CODE_SUPPORTS_RESEND = True
ACCOUNT_PHONE_VERIFICATION_TIMEOUT = PHONE_CODE_TIMEOUT_S
ACCOUNT_PHONE_VERIFICATION_MAX_ATTEMPTS = 3
ACCOUNT_PHONE_VERIFICATION_CODE_FORMAT = {"numeric": True, "length": 6, "dashed": False}
ACCOUNT_PHONE_VERIFICATION_SUPPORTS_RESEND = True
# Rate limits live in the cache (Redis in production, shared by every process). Keys are the E.164
# number, so "010-1234-5678" and "+821012345678" count as one. "sms" is ours: every text BuildX would
# send to a number, whatever the flow, unknown numbers included (the same answers either way).
ACCOUNT_RATE_LIMITS = {
    "login_failed": "10/m/ip,5/5m/key",
    "request_login_code": "30/10m/ip,5/h/key",
    "verify_phone": "1/30s/key,5/h/key,30/10m/ip",
    "change_phone": "5/m/user",
    "sms": "5/h/key",
}
# Numbers typed without a country code are Korean.
PHONENUMBER_DEFAULT_REGION = env("PHONENUMBER_DEFAULT_REGION", "KR")
ACCOUNT_ADAPTER = "accounts.adapters.AccountAdapter"
SOCIALACCOUNT_ADAPTER = "accounts.adapters.SocialAccountAdapter"
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "/dashboard/"
ACCOUNT_LOGOUT_REDIRECT_URL = "/"

GOOGLE_CLIENT_ID = env("GOOGLE_CLIENT_ID")
GOOGLE_CLIENT_SECRET = env("GOOGLE_CLIENT_SECRET")
GOOGLE_LOGIN_ENABLED = bool(GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET)
SOCIALACCOUNT_PROVIDERS = {
    "google": {
        "APPS": (
            [{"client_id": GOOGLE_CLIENT_ID, "secret": GOOGLE_CLIENT_SECRET, "key": ""}]
            if GOOGLE_LOGIN_ENABLED
            else []
        ),
        "SCOPE": ["profile", "email"],
        "AUTH_PARAMS": {"access_type": "online"},
        "OAUTH_PKCE_ENABLED": True,
    }
}
# A Google login whose verified email matches an existing account logs into (and connects to) it.
SOCIALACCOUNT_EMAIL_AUTHENTICATION = True
SOCIALACCOUNT_EMAIL_AUTHENTICATION_AUTO_CONNECT = True
SOCIALACCOUNT_LOGIN_ON_GET = False

# allauth headless for API clients: JWTs (access 30 minutes, refresh 7 days, rotated on refresh).
HEADLESS_TOKEN_STRATEGY = "allauth.headless.tokens.strategies.jwt.JWTTokenStrategy"
HEADLESS_JWT_PRIVATE_KEY = env("JWT_PRIVATE_KEY")
# Without an RSA key, tokens are signed with HS256 and SECRET_KEY.
HEADLESS_JWT_ALGORITHM = "RS256" if HEADLESS_JWT_PRIVATE_KEY else "HS256"
HEADLESS_JWT_ACCESS_TOKEN_EXPIRES_IN = 30 * 60
HEADLESS_JWT_REFRESH_TOKEN_EXPIRES_IN = 7 * 24 * 3600
HEADLESS_JWT_ROTATE_REFRESH_TOKEN = True
# Check the session behind each access token, so logging out (or an admin ending the session)
# revokes the tokens at once instead of up to 30 minutes later. One session read per request.
HEADLESS_JWT_STATEFUL_VALIDATION_ENABLED = True
HEADLESS_CLIENTS = ("app",)
HEADLESS_SERVE_SPECIFICATION = True
# allauth's own page loads Swagger UI from a CDN, which our CSP forbids; ours uses the vendored copy.
HEADLESS_SPECIFICATION_TEMPLATE_NAME = "api/headless_docs.html"

EMAIL_BACKEND = env("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "BuildX <noreply@localhost>")

# --- SMS (accounts/sms.py) ---------------------------------------------------------------------

# "console" logs each text (the code shows in the log, as mail does); "gateway" posts it to an HTTP
# SMS gateway (below); "locmem" keeps texts in accounts.sms.outbox (tests); or a dotted class path.
SMS_BACKEND = env("SMS_BACKEND", "console")
SMS_GATEWAY_URL = env("SMS_GATEWAY_URL")
SMS_GATEWAY_KEY = env("SMS_GATEWAY_KEY")
SMS_SENDER = env("SMS_SENDER", "BuildX")
SMS_GATEWAY_TIMEOUT_S = env_float("SMS_GATEWAY_TIMEOUT_S", 5.0)  # one HTTP attempt
# Retries after the first attempt, on 429/5xx answers, timeouts and refused connections, with
# exponential backoff (base × 2^retry seconds). A code is short-lived: a few quick tries, then give up.
SMS_GATEWAY_MAX_RETRIES = env_int("SMS_GATEWAY_MAX_RETRIES", 2)
SMS_GATEWAY_BACKOFF_S = env_float("SMS_GATEWAY_BACKOFF_S", 0.5)

# --- API ---------------------------------------------------------------------------------------

REST_FRAMEWORK = {
    # JWT first: DRF takes the 401-or-403 decision and the WWW-Authenticate header from the first
    # class, and a client with a missing or expired token must get 401 ("log in again"), not 403.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "allauth.headless.contrib.rest_framework.authentication.JWTTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # drf-spectacular's, plus the error answers every endpoint can give (buildx/schema.py).
    "DEFAULT_SCHEMA_CLASS": "buildx.schema.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "buildx.api.exception_handler",
}
# Deepest nesting of arrays and objects a JSON body may have (a spec has a few levels): Python's
# parser recurses per level, and a body of 100,000 "[" would end in a RecursionError, a 500.
MAX_JSON_DEPTH = env_int("MAX_JSON_DEPTH", 64)
SPECTACULAR_SETTINGS = {
    "TITLE": "BuildX API",
    "DESCRIPTION": "Build, train and understand CNNs.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from our own static files (the default is a CDN, which the CSP forbids).
    "SWAGGER_UI_DIST": STATIC_URL + "vendor/swagger-ui-5.35.0",
    "SWAGGER_UI_FAVICON_HREF": STATIC_URL + "vendor/swagger-ui-5.35.0/favicon-32x32.png",
    # The artifacts list and the code view share CodeArtifact's status choices; runs have a "status" of
    # their own.
    "ENUM_NAME_OVERRIDES": {"CodeArtifactStatusEnum": "designs.models.CodeArtifact.Status"},
    # The run's event stream is a plain Django view (Server-Sent Events): its hook describes it.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "training.sse.openapi_paths",
    ],
}

# Cross-origin API clients (django-cors-headers): pages of these origins, a front end served from
# another host, may call /api/ with a token. None by default: only the site's own pages.
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS")
CORS_URLS_REGEX = r"^/api/"
# Tokens, never cookies: a listed origin's page cannot act with a visitor's BuildX session.
CORS_ALLOW_CREDENTIALS = False
CORS_ALLOW_HEADERS = [*default_cors_headers, "last-event-id"]
CORS_EXPOSE_HEADERS = ["Retry-After", "Content-Disposition"]

# --- LLM (optional) -----------------------------------------------------------------------------

OPENAI_API_KEY = env("OPENAI_API_KEY")
OPENAI_BASE_URL = env("OPENAI_BASE_URL")
OPENAI_MODEL = env("OPENAI_MODEL", "gpt-4o-mini")
LLM_ENABLED = bool(OPENAI_API_KEY or OPENAI_BASE_URL)

# --- Internationalisation -----------------------------------------------------------------------

LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("ko", _("Korean"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
TIME_ZONE = env("TIME_ZONE", "UTC")
USE_TZ = True

# --- Security ----------------------------------------------------------------------------------

SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
if not DEBUG:
    # TLS ends at nginx, which sets X-Forwarded-Proto.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    LANGUAGE_COOKIE_SECURE = True

# Pages load scripts and styles only from our own static files: no inline script, no CDN. Pages
# connect only to their own origin: 'self' covers ws:// and wss:// of the same host in CSP level 3
# browsers, where bare ws: wss: would let an injected script open a socket to any host.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:", "blob:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'", "https://accounts.google.com"],
    }
}

# Structured logs (buildx/logs.py): one JSON object a line, or readable lines, with the request id,
# user id, run id and message id wherever they apply.
LOG_FORMAT = env("LOG_FORMAT", "console" if DEBUG else "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"structured": {"()": "buildx.logs.formatter", "json": LOG_FORMAT == "json"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        # buildx.logs.RequestContext writes one line a request, with the ids.
        "django.server": {"level": "WARNING"},
    },
}

# --- Metrics and error tracking -----------------------------------------------------------------

# /metrics answers a request with "Authorization: Bearer <METRICS_TOKEN>" or from one of these networks
# (CIDRs); with neither set it refuses everyone. The workers' endpoint (WORKER_METRICS_PORT) likewise.
METRICS_TOKEN = env("METRICS_TOKEN")
METRICS_ALLOWED_NETWORKS = env_list("METRICS_ALLOWED_NETWORKS")
# A worker's metrics, summed over its processes, on this port (0: none); needs PROMETHEUS_MULTIPROC_DIR.
WORKER_METRICS_PORT = env_int("WORKER_METRICS_PORT", 9191)
# Each worker process says it is alive this often (seconds); one silent this long is forgotten.
WORKER_HEARTBEAT_SECONDS = env_float("WORKER_HEARTBEAT_SECONDS", 15.0)
WORKER_FORGET_SECONDS = env_float("WORKER_FORGET_SECONDS", 3600.0)
# Sentry (optional): errors of the web and the workers, with the user id and run id as tags and no
# personal data (buildx/apps.py).
SENTRY_DSN = env("SENTRY_DSN")
SENTRY_ENVIRONMENT = env("SENTRY_ENVIRONMENT", "production" if not DEBUG else "development")
SENTRY_TRACES_SAMPLE_RATE = env_float("SENTRY_TRACES_SAMPLE_RATE", 0.0)
SENTRY_SAMPLE_RATE = env_float("SENTRY_SAMPLE_RATE", 1.0)

# --- Storage of run files ------------------------------------------------------------------------

# Run files (scripts, checkpoints, models) go through Django's storage API: the local MEDIA_ROOT by
# default, an S3-compatible bucket (django-storages, boto3) with STORAGE_URL=s3://bucket/prefix
# (?endpoint_url=http://minio:9000&region=...) or the AWS_* variables. Credentials: boto3's own
# (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the environment, or an instance role).
STORAGE_URL = env("STORAGE_URL")
storage_url = urlsplit(STORAGE_URL)
storage_query = dict(parse_qsl(storage_url.query))
if STORAGE_URL and storage_url.scheme != "s3":
    raise ImproperlyConfigured(f"STORAGE_URL must be an s3:// URL, not {storage_url.scheme}://")
AWS_STORAGE_BUCKET_NAME = env("AWS_STORAGE_BUCKET_NAME", storage_url.hostname or "")
AWS_LOCATION = env("AWS_LOCATION", unquote(storage_url.path).strip("/"))
AWS_S3_ENDPOINT_URL = env("AWS_S3_ENDPOINT_URL", storage_query.get("endpoint_url", "")) or None
AWS_S3_REGION_NAME = env("AWS_S3_REGION_NAME", storage_query.get("region", "")) or None
# Never a public object: every read is signed, and a signed URL lives this long (seconds).
AWS_DEFAULT_ACL = None
AWS_QUERYSTRING_AUTH = True
AWS_QUERYSTRING_EXPIRE = env_int("STORAGE_URL_EXPIRE_SECONDS", 60)
# A name in use gets a new one (the old file goes when its row points at the new): a failed write never
# replaces a file a row still needs. With versioning on, a replaced file stays as an older version.
AWS_S3_FILE_OVERWRITE = False
AWS_S3_SIGNATURE_VERSION = "s3v4"
AWS_S3_ADDRESSING_STYLE = env("AWS_S3_ADDRESSING_STYLE", "path") or None
# Uploads in parts of this size from a stream (boto3's multipart upload): a checkpoint is never whole
# in memory and a trainer on another host needs no shared disk.
AWS_S3_MAX_MEMORY_SIZE = env_int("STORAGE_SPOOL_BYTES", 8 * 2**20)
# Downloads of run files: "stream" through Django (the default; the same access checks, no URL to
# share), or "redirect" to a signed URL of AWS_QUERYSTRING_EXPIRE seconds, issued after those checks
# (the bucket's endpoint must then be reachable from the browser).
STORAGE_DOWNLOADS = env("STORAGE_DOWNLOADS", "stream")
USES_OBJECT_STORAGE = bool(AWS_STORAGE_BUCKET_NAME)
if USES_OBJECT_STORAGE:
    STORAGES: dict[str, dict[str, Any]] = {
        "default": {"BACKEND": "storages.backends.s3.S3Storage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
else:
    STORAGES = {
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


# --- Designs -------------------------------------------------------------------------------------

# Largest request body the design API parses (bytes): a spec of 500 layers is far below it.
BUILDX_MAX_SPEC_BYTES = env_int("BUILDX_MAX_SPEC_BYTES", 1_000_000)
# Server processes load PyTorch's meta kernels in a background thread at start-up, so the editor's first
# validation is fast: `manage.py serve` always, Daphne through buildx.asgi when DEBUG is off (designs/apps.py).
BUILDX_VALIDATION_WARMUP = env_bool("BUILDX_VALIDATION_WARMUP", True)

# --- Sandbox (the training child process) -------------------------------------------------------

# "bwrap": bubblewrap namespaces (no network, read-only root, only the run directory writable);
# "none": a plain child with a scrubbed environment and limits (laptops without bubblewrap).
BUILDX_SANDBOX = env("BUILDX_SANDBOX") or ("bwrap" if shutil.which("bwrap") else "none")
# Without bubblewrap, code written by the LLM is refused unless the operator accepts the risk.
BUILDX_ALLOW_UNSANDBOXED_LLM_CODE = env_bool("BUILDX_ALLOW_UNSANDBOXED_LLM_CODE", False)
# When the worker runs as root, every sandbox runs as a uid of its own from this pool (the kernel counts
# processes per uid), leased with a lock file in BUILDX_SANDBOX_LOCK_DIR shared by the host's workers.
# Give each trainer container on one host its own range.
BUILDX_SANDBOX_UID_BASE = env_int("BUILDX_SANDBOX_UID_BASE", 200_000)
BUILDX_SANDBOX_UID_COUNT = env_int("BUILDX_SANDBOX_UID_COUNT", 1000)
BUILDX_SANDBOX_LOCK_DIR = Path(env("BUILDX_SANDBOX_LOCK_DIR", "/tmp/buildx-sandbox-uids"))
# The boxes' own folders (the dataset link, passwd); on the same file system as BUILDX_DATA_DIR, so that
# a dataset is linked into a box, not copied.
BUILDX_SANDBOX_WORK_DIR = Path(env("BUILDX_SANDBOX_WORK_DIR", str(BASE_DIR / "var" / "sandbox")))
# Control groups: "auto" (v2 where its controllers are usable, else v1), "v1", "v2", or "off".
BUILDX_CGROUPS = env("BUILDX_CGROUPS", "auto")
BUILDX_CGROUP_PARENT = env("BUILDX_CGROUP_PARENT", "buildx")  # the folder of the boxes' groups
BUILDX_SANDBOX_CPU_WEIGHT = env_int(
    "BUILDX_SANDBOX_CPU_WEIGHT", 50
)  # cgroup v2 scale: 100 = a normal process
BUILDX_SANDBOX_CPU_SECONDS = env_int("BUILDX_SANDBOX_CPU_SECONDS", 6 * 3600)  # all threads together
# The whole sandbox's memory (its control group), or each process's address space where there is none.
BUILDX_SANDBOX_MEMORY_BYTES = env_int("BUILDX_SANDBOX_MEMORY_BYTES", 8 * 2**30)
BUILDX_SANDBOX_OPEN_FILES = env_int("BUILDX_SANDBOX_OPEN_FILES", 1024)
BUILDX_SANDBOX_FILE_BYTES = env_int("BUILDX_SANDBOX_FILE_BYTES", 2**30)  # largest single file
BUILDX_SANDBOX_DISK_BYTES = env_int("BUILDX_SANDBOX_DISK_BYTES", 4 * 2**30)  # the whole run directory
BUILDX_SANDBOX_TMP_BYTES = env_int("BUILDX_SANDBOX_TMP_BYTES", 64 * 2**20)  # the child's tmpfs /tmp
BUILDX_SANDBOX_PROCESSES = env_int("BUILDX_SANDBOX_PROCESSES", 512)  # threads count too
BUILDX_SANDBOX_OUTPUT_BYTES = env_int("BUILDX_SANDBOX_OUTPUT_BYTES", 2 * 2**20)  # stdout + stderr + logs
BUILDX_SANDBOX_LINE_CHARS = env_int("BUILDX_SANDBOX_LINE_CHARS", 2000)
BUILDX_SANDBOX_GRACE_SECONDS = float(env("BUILDX_SANDBOX_GRACE_SECONDS", "4"))  # stop: SIGUSR1, then SIGKILL
BUILDX_SANDBOX_THREADS = env_int("BUILDX_SANDBOX_THREADS", os.cpu_count() or 1)  # OMP/MKL threads
# Boxes each worker process keeps started (torch imported) for its next code checks (sandbox/checks.py).
BUILDX_SANDBOX_PRESPAWN = env_int("BUILDX_SANDBOX_PRESPAWN", 1)

# --- LLM client: timeouts, retries, budget, cost, cache (buildx/llm.py) -------------------------

# Seconds one HTTP attempt may take before it counts as failed (and is retried).
LLM_TIMEOUT_S = env_float("LLM_TIMEOUT_S", 60.0)
# Retries after the first attempt, on 408/409/429/5xx, timeouts and connection errors.
LLM_MAX_RETRIES = env_int("LLM_MAX_RETRIES", 3)
# Exponential backoff: base * 2**retry seconds, capped; a server's Retry-After wins when it is given
# and not longer than LLM_RETRY_AFTER_MAX_S (a longer one ends the call with "try again later").
LLM_BACKOFF_BASE_S = env_float("LLM_BACKOFF_BASE_S", 1.0)
LLM_BACKOFF_MAX_S = env_float("LLM_BACKOFF_MAX_S", 20.0)
LLM_RETRY_AFTER_MAX_S = env_float("LLM_RETRY_AFTER_MAX_S", 60.0)
# Tokens (prompt + completion, cache hits excluded) one user may spend in any rolling hour; 0 = no limit.
LLM_USER_HOURLY_BUDGET = env_int("LLM_USER_HOURLY_BUDGET", 200_000)
# US dollars per 1,000 tokens, for the cost recorded on each call (defaults: gpt-4o-mini's list price).
LLM_PRICE_PER_1K_INPUT = env_float("LLM_PRICE_PER_1K_INPUT", 0.00015)
LLM_PRICE_PER_1K_OUTPUT = env_float("LLM_PRICE_PER_1K_OUTPUT", 0.0006)
# The same (model, messages, params) is answered from the cache for this long instead of paid again.
LLM_CACHE_TTL_S = env_int("LLM_CACHE_TTL_S", 7 * 24 * 3600)
# Namespace of the cache keys in the shared cache (tests give each test its own).
LLM_CACHE_PREFIX = env("LLM_CACHE_PREFIX", "llm")

# --- Training runs (issue 5) ---------------------------------------------------------------------

# Quotas: a request over one is refused with the reason. RUNS_MAX_EPOCHS and RUNS_MAX_PARAMS are the one
# source of what a design may ask of this server: the editor's report marks a design over them as not
# trainable (designs/limits.py) before Train, and the runs API refuses it with the same sentence.
RUNS_MAX_CONCURRENT_PER_USER = env_int("RUNS_MAX_CONCURRENT_PER_USER", 2)  # queued + running
RUNS_MAX_EPOCHS = env_int("RUNS_MAX_EPOCHS", 100)
RUNS_MAX_PARAMS = env_int("RUNS_MAX_PARAMS", 5_000_000)
RUNS_MAX_WALL_SECONDS = env_int("RUNS_MAX_WALL_SECONDS", 3600)  # one execution, enforced by the sandbox
RUNS_USER_DAILY_SECONDS = env_int("RUNS_USER_DAILY_SECONDS", 8 * 3600)  # training time per user per 24 h
RUNS_USER_STORAGE_BYTES = env_int("RUNS_USER_STORAGE_BYTES", 2 * 2**30)  # a user's stored run files
RUNS_EVALUATE_SECONDS = env_int("RUNS_EVALUATE_SECONDS", 600)  # the trusted test evaluation after a run
# Backstop above the sandbox's own limit: Dramatiq's TimeLimit cannot interrupt C code.
RUNS_ACTOR_TIME_LIMIT_MS = (RUNS_MAX_WALL_SECONDS + 600) * 1000
# Liveness: a running run whose heartbeat is older than the timeout is marked interrupted and resumed.
RUNS_HEARTBEAT_INTERVAL = float(env("RUNS_HEARTBEAT_INTERVAL", "5"))  # seconds
RUNS_HEARTBEAT_TIMEOUT = float(env("RUNS_HEARTBEAT_TIMEOUT", "30"))  # seconds
RUNS_STALE_CHECK_INTERVAL = float(env("RUNS_STALE_CHECK_INTERVAL", "10"))  # seconds
RUNS_MAX_AUTO_RESUMES = env_int("RUNS_MAX_AUTO_RESUMES", 3)
# Event stream: a batch is stored and published every interval; chatty logs are cut.
RUNS_FLUSH_INTERVAL = float(env("RUNS_FLUSH_INTERVAL", "0.1"))  # seconds
# How long an epoch's metrics wait for that epoch's checkpoint, to be stored together (seconds).
RUNS_CHECKPOINT_WAIT = float(env("RUNS_CHECKPOINT_WAIT", "2"))
RUNS_LOG_MAX_LINES = env_int("RUNS_LOG_MAX_LINES", 5000)  # stored log lines per run
RUNS_LOG_LINES_PER_SECOND = env_int("RUNS_LOG_LINES_PER_SECOND", 100)
RUNS_PUBLISH_TIMEOUT = env_float("RUNS_PUBLISH_TIMEOUT", 2.0)  # seconds per channel-layer send
RUNS_DEVICE = env("RUNS_DEVICE", "auto")
RUNS_GPU = env_bool("RUNS_GPU", False)

# --- Sweeps and tried suggestions (issue 17) ------------------------------------------------------

# The Optuna study's storage in embedded (SQLite) mode; with PostgreSQL it is the project's database.
SWEEPS_SQLITE_PATH = env("SWEEPS_SQLITE_PATH", str(BASE_DIR / "var" / "optuna.sqlite3"))
SWEEPS_MAX_TRIALS = env_int("SWEEPS_MAX_TRIALS", 50)  # one sweep's trials, also under a time budget
SWEEPS_MAX_CONCURRENCY = env_int("SWEEPS_MAX_CONCURRENCY", 4)  # trials of one sweep queued or running
# "Try the top suggestions" of a run's feedback: how many, and the epochs each short trial trains at most.
FEEDBACK_TRY_TOP = env_int("FEEDBACK_TRY_TOP", 3)
FEEDBACK_TRY_MAX_EPOCHS = env_int("FEEDBACK_TRY_MAX_EPOCHS", 5)

# --- WebSockets (training/consumers.py) ---------------------------------------------------------

# Open sockets (browser tabs) one user may hold across all processes, and one Daphne process in all;
# one over a cap is closed with 4429 (the user's) or 1013 (the process's) and a reason the page shows.
WS_MAX_PER_USER = env_int("WS_MAX_PER_USER", 20)
WS_MAX_PER_PROCESS = env_int("WS_MAX_PER_PROCESS", 2000)
# With Redis, each socket refreshes its entry in its user's count this often (seconds); entries of a
# crashed process stop counting after three missed heartbeats.
WS_HEARTBEAT_SECONDS = env_float("WS_HEARTBEAT_SECONDS", 30.0)
# A replay of stored events goes out in frames of at most this many bytes (a larger event goes alone).
WS_REPLAY_PAGE_BYTES = env_int("WS_REPLAY_PAGE_BYTES", 256 * 1024)
# A token socket (buildx/tokens.py) that did not offer its token at the handshake has this long to send
# it in its first message before it is closed (seconds).
WS_AUTH_SECONDS = env_float("WS_AUTH_SECONDS", 10.0)
# A run's event stream over Server-Sent Events (training/sse.py): it reads new stored events this often,
# sends a comment after this much silence (proxies close idle connections), and ends after at most this
# long (the client reconnects with Last-Event-ID and is checked again). Seconds.
SSE_POLL_SECONDS = env_float("SSE_POLL_SECONDS", 1.0)
SSE_KEEPALIVE_SECONDS = env_float("SSE_KEEPALIVE_SECONDS", 15.0)
SSE_MAX_SECONDS = env_float("SSE_MAX_SECONDS", 300.0)

# --- Datasets people bring (library/) ------------------------------------------------------------
# Uploads are plain files under BUILDX_DATA_DIR/uploads/<id>/ (the zip, the tensor cache, the samples), on the
# file system the sandbox links datasets from.
DATASET_MAX_UPLOAD_BYTES = env_int("DATASET_MAX_UPLOAD_BYTES", 200 * 2**20)  # one zip
DATASET_CHUNK_BYTES = env_int("DATASET_CHUNK_BYTES", 2 * 2**20)  # the largest chunk one request may send
DATASET_USER_QUOTA_BYTES = env_int("DATASET_USER_QUOTA_BYTES", 1024 * 2**20)  # a user's uploads together
DATASET_COURSE_QUOTA_BYTES = env_int("DATASET_COURSE_QUOTA_BYTES", 4096 * 2**20)  # shared with one course
DATASET_MAX_IMAGES = env_int("DATASET_MAX_IMAGES", 20_000)  # entries in one zip
DATASET_CHECK_TIME_LIMIT_S = env_int("DATASET_CHECK_TIME_LIMIT_S", 1800)  # the worker's check of one zip
# The check runs in a box of its own (sandbox/upload_check.py): its memory (the whole tree, the cache it
# writes included: 20,000 colour images of 64x64 are 245 MB, held twice) and its wall clock, under the actor's.
DATASET_CHECK_MEMORY_BYTES = env_int("DATASET_CHECK_MEMORY_BYTES", 2 * 2**30)
DATASET_CHECK_WALL_S = env_int("DATASET_CHECK_WALL_S", 1200)
DATASET_TEXT_MAX_BYTES = env_int("DATASET_TEXT_MAX_BYTES", 16 * 2**20)  # one plain-text upload (UTF-8)

# --- Predictions and exports (issue 9) -----------------------------------------------------------

# Models kept loaded per web process: at most this many, and at most this many bytes of weights.
PREDICT_CACHE_MODELS = env_int("PREDICT_CACHE_MODELS", 8)
PREDICT_CACHE_BYTES = env_int("PREDICT_CACHE_BYTES", 256 * 2**20)
PREDICT_MAX_IMAGES = env_int("PREDICT_MAX_IMAGES", 64)  # images per request
PREDICT_MAX_IMAGE_BYTES = env_int("PREDICT_MAX_IMAGE_BYTES", 4 * 2**20)  # one image file
PREDICT_MAX_IMAGE_PIXELS = env_int("PREDICT_MAX_IMAGE_PIXELS", 4096 * 4096)  # width × height
# Torch's intra-op threads in a web process (0 = torch's default). A single-image forward of a small CNN
# is ~5x slower with two threads than with one on a busy machine, and requests already run in parallel.
PREDICT_TORCH_THREADS = env_int("PREDICT_TORCH_THREADS", 1)
# The same for text generation, set in each generation thread: one token at a time of a small model is
# 6-8x slower with two threads than with one on a busy 2-core machine (bench/generate.py --threads).
GENERATE_TORCH_THREADS = env_int("GENERATE_TORCH_THREADS", 1)
# A run of code written by the assistant predicts in the training sandbox: one child per request, this long at most.
PREDICT_SANDBOX_SECONDS = env_int("PREDICT_SANDBOX_SECONDS", 60)
PREDICT_MISTAKES = env_int("PREDICT_MISTAKES", 24)  # wrongly classified test images on the predict page
# One user's share of a web process: predictions (and mistakes grids) running at once, and requests a
# minute; over either, a 429 with Retry-After (training/limits.py; kept in the cache, so across processes).
PREDICT_MAX_CONCURRENT_PER_USER = env_int("PREDICT_MAX_CONCURRENT_PER_USER", 2)
PREDICT_RATE_PER_MINUTE = env_int("PREDICT_RATE_PER_MINUTE", 60)  # 0 = no limit

# --- LLM code generation (designs/codegen.py) ---------------------------------------------------

# Wall-clock limit of the sandboxed check of one LLM script (model check + one-batch smoke run).
BUILDX_CODEGEN_SMOKE_WALL_S = env_float("BUILDX_CODEGEN_SMOKE_WALL_S", 60.0)
# The generate_code actor's time limit: three LLM calls with retries and three sandbox checks.
BUILDX_CODEGEN_TIME_LIMIT_S = env_int("BUILDX_CODEGEN_TIME_LIMIT_S", 15 * 60)

# --- Experiment tracking: MLflow (training/mlflow_export.py; issue 17) ---------------------------

# With a tracking URI (an http(s) server, or a file: store), every finished run is logged to MLflow from
# the log_run_to_mlflow actor on the default queue; empty: nothing is logged.
MLFLOW_TRACKING_URI = env("MLFLOW_TRACKING_URI")
MLFLOW_EXPERIMENT_NAME = env("MLFLOW_EXPERIMENT_NAME", "BuildX")
# The MLflow UI as the browser reaches it (e.g. https://mlflow.school.example): the run page links a
# logged run there. Empty: no link.
MLFLOW_UI_URL = env("MLFLOW_UI_URL").rstrip("/")
# One HTTP request to the tracking server, seconds, and no retries: MLflow down makes the actor give up
# within about this long (its own defaults retry for minutes). export_mlflow logs what was missed.
MLFLOW_TIMEOUT_SECONDS = env_int("MLFLOW_TIMEOUT_SECONDS", 5)
