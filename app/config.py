"""All configuration, read once from ``WXPAY_*`` environment variables (and ``.env``, or the
file ``WXPAY_ENV_FILE`` names).

In ``dev`` every setting has a safe default so ``make run`` works with nothing set, talking to
the bundled WeChat simulator. In ``production`` start-up refuses to continue while any secret is
missing or still a development default.
"""

from __future__ import annotations

import os
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, StringConstraints, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.netutil import proxy_networks
from app.wechat.signing import SignType

OFFICIAL_MINIPROGRAM_API = "https://api.weixin.qq.com"
OFFICIAL_PAY_API = "https://api.mch.weixin.qq.com"

# Development defaults. Shown here on purpose: production refuses every one of them.
DEV_APPID = "wx1234567890abcdef"
DEV_MCH_ID = "1900000109"
DEV_APP_SECRET = "dev-app-secret-not-for-production"
DEV_API_KEY = "devapikey0123456789abcdefghijklm"  # 32 characters, like a real APIv2 key
DEV_SECRET_KEY = "dev-secret-key-not-for-production-use-000000"
DEV_ADMIN_TOKEN = "dev-admin-token"
_DEV_SECRETS = {DEV_APP_SECRET, DEV_API_KEY, DEV_SECRET_KEY, DEV_ADMIN_TOKEN}
# A bearer token shorter-lived than this would send users back to wx.login all the time.
PRODUCTION_MIN_SESSION_TTL = 60
_MIN_DISTINCT_CHARACTERS = 8


# get_settings() reads this dotenv file, relative to the working directory: ".env" while the
# variable is unset, none when it is empty. Its location is configuration in its own right so a
# process can be told to read none: the test suite tells itself and every server it starts,
# since a checkout may hold the production .env that the README's Docker section asks for.
ENV_FILE_VARIABLE = "WXPAY_ENV_FILE"


NotifyUrl = Annotated[str, StringConstraints(pattern=r"^https?://[^?#\s]+$", max_length=256)]


# What WeChat Pay v3 needs. The last two (public-key mode, PROTOCOL.md §8.6) go together; with
# neither, WeChat's signatures are checked with its platform certificates, downloaded.
V3_SETTINGS = (
    "WXPAY_API_V3_KEY",
    "WXPAY_MCH_PRIVATE_KEY_PATH",
    "WXPAY_MCH_CERT_SERIAL_NO",
    "WXPAY_WECHATPAY_PUBLIC_KEY_PATH",
    "WXPAY_WECHATPAY_PUBLIC_KEY_ID",
)


class Environment(StrEnum):
    DEV = "dev"
    PRODUCTION = "production"


class ConfigError(RuntimeError):
    """The configuration cannot be used; the message says which settings and why."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="WXPAY_", env_file=".env", extra="ignore", frozen=True
    )

    env: Environment = Environment.DEV
    database_url: str = "sqlite+aiosqlite:///var/wxpay.db"
    # Connections per process on PostgreSQL (the one pool; SQLite has no server to connect to).
    database_pool_size: int = Field(default=10, ge=1, le=200)
    log_level: str = "INFO"
    # "json": one JSON object per line (for a log shipper); "text" for people.
    log_format: Literal["text", "json"] = "text"
    # One line per request at INFO (logger ``app.access``), written by the service with its
    # request id, status and time taken; uvicorn's own access line is switched off for it.
    access_log: bool = True
    # /metrics (Prometheus) and the per-request figures; with a token, scrapes must send it as
    # ``Authorization: Bearer <token>``.
    metrics: bool = True
    metrics_token: SecretStr | None = None
    # FastAPI's built-in OpenTelemetry hooks; with no SDK configured they still cost ~17 us per
    # request (docs/benchmarks.md), so they are off unless asked for.
    telemetry: bool = False

    appid: str = DEV_APPID
    app_secret: SecretStr = SecretStr(DEV_APP_SECRET)
    mch_id: str = DEV_MCH_ID
    api_key: SecretStr = SecretStr(DEV_API_KEY)
    sign_type: SignType = SignType.MD5
    mch_cert_path: str | None = None
    mch_key_path: str | None = None

    # WeChat Pay API v3 (PROTOCOL.md §8). New orders use ``api_version``; an order keeps the
    # version it was created with, so both may be configured at once during a migration.
    api_version: Literal["v2", "v3"] = "v2"
    api_v3_key: SecretStr | None = None
    # The merchant's apiclient_key.pem; unset, the file v2 refunds use for mutual TLS.
    mch_private_key_path: str | None = None
    mch_cert_serial_no: Annotated[str, StringConstraints(pattern=r"^[0-9A-Fa-f]{8,64}$")] | None = (
        None
    )
    # Public-key mode (§8.6): WeChat Pay's public key and its id, PUB_KEY_ID_ + 32 digits.
    wechatpay_public_key_path: str | None = None
    wechatpay_public_key_id: (
        Annotated[str, StringConstraints(pattern=r"^PUB_KEY_ID_[0-9A-Za-z]{1,64}$")] | None
    ) = None
    v3_notify_url: NotifyUrl | None = None
    v3_refund_notify_url: NotifyUrl | None = None
    # A PEM file of CA certificates trusted for outbound HTTPS in addition to the public ones
    # (certifi's): an egress proxy that re-signs TLS, or a stand-in for WeChat behind a private
    # CA (staging, tests). Read by this setting only: the clients ignore SSL_CERT_FILE and the
    # rest of the environment (trust_env=False), so what we trust is what the settings say.
    extra_ca_certs: str | None = None

    # Where this service is reachable; the default notify URLs and, in dev, the simulator
    # mount's address use it. In dev its port need not be right: calls to the mount and the
    # mounted simulator's notifies stay in the process (app.httpclient.InProcessTransport).
    self_base_url: Annotated[
        str, StringConstraints(pattern=r"^https?://[^?#\s]+$", max_length=200)
    ] = "http://127.0.0.1:8000"
    # WeChat takes a notify_url of at most 256 characters with no query string (§2.1, §6.3).
    notify_url: NotifyUrl | None = None
    refund_notify_url: NotifyUrl | None = None
    miniprogram_api_base: str | None = None
    pay_api_base: str | None = None
    simulator_mount: bool = True
    # Hosts besides this service's own that the mounted simulator may send notifies to.
    simulator_notify_hosts: Annotated[list[str], NoDecode] = []
    # The mount's one-process lock (app.devmount), relative to the working directory.
    simulator_lock_path: str = "var/sim-mount.lock"
    # /docs, /redoc and /openapi.json list every route, the admin API included: served in
    # dev, and in production only when asked for.
    docs: bool = False

    secret_key: SecretStr = SecretStr(DEV_SECRET_KEY)
    admin_token: SecretStr = SecretStr(DEV_ADMIN_TOKEN)
    # Seconds; production wants at least PRODUCTION_MIN_SESSION_TTL. Dev allows a few seconds so
    # the mini-program tests can watch a real token expire mid-purchase.
    session_ttl_seconds: int = Field(default=86_400, ge=1)
    # How long a process may answer a bearer check from its own memory (app.auth.sessioncache);
    # revocations still take effect at once (PostgreSQL notifies every process). 0: always ask
    # the database. SQLite never caches.
    session_cache_seconds: float = Field(default=30.0, ge=0, le=3600)
    # The client routes' usual requests skip FastAPI's generic handler (app.leanroute); false
    # serves every request through it, as stock FastAPI does (the answers are the same).
    lean_routes: bool = True

    http_connect_timeout: float = Field(default=3.0, gt=0)
    http_read_timeout: float = Field(default=10.0, gt=0)
    http_max_connections: int = Field(default=200, ge=1)
    wechat_max_attempts: int = Field(default=3, ge=1, le=10)

    # Peers whose X-Forwarded-For is believed: addresses or CIDR networks (an ingress's pods
    # change address), kept in canonical form ("10.0.0.0/8", "127.0.0.1/32").
    trusted_proxies: Annotated[list[str], NoDecode] = []
    # Every route's request body (the notify URLs keep their own, smaller limit).
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Shared across replicas through the database (app.ratelimits). Each login costs a
    # code2session call against the AppID's quota; the defaults never trip a benchmark.
    login_rate_per_ip_per_minute: int = Field(default=600, ge=1)
    login_rate_per_minute: int = Field(default=6000, ge=1)
    # Calls to WeChat a user can cause on one order (?sync=true, fresh pay params).
    order_wechat_calls_per_minute: int = Field(default=20, ge=1)
    # Refused notifies: how long their digest and excerpt are kept, and how many one source
    # may add per minute (the rest are answered FAIL without a row).
    refused_notify_retention_days: int = Field(default=30, ge=1)
    refused_notifies_per_source_per_minute: int = Field(default=600, ge=1)

    # Unpaid orders expire at WeChat after this long (time_expire); WeChat wants >= 5 minutes.
    order_ttl_minutes: int = Field(default=30, ge=5, le=7 * 24 * 60)
    # The sweep asks WeChat about orders still unpaid this long after creation (a missed
    # notify), and closes the expired ones.
    reconcile_after_minutes: int = Field(default=5, ge=1)
    sweep_interval_seconds: float = Field(default=60, ge=0)
    sweep_batch_size: int = Field(default=100, ge=1, le=1000)

    # Webhooks (issue 13). At most ``webhook_max_in_flight`` requests are open at once to one
    # endpoint, over all replicas, each given ``webhook_timeout_seconds``; a failed delivery is
    # retried with exponential backoff (doubling from the base up to the cap, with jitter)
    # until it succeeds, and an endpoint failing for ``webhook_disable_after_seconds`` (at
    # least 3 days by default: merchants' outages over a weekend must not cost them events)
    # is disabled, keeping what it is owed until it is enabled again.
    webhook_max_in_flight: int = Field(default=4, ge=1, le=100)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    webhook_retry_base_seconds: float = Field(default=30.0, gt=0)
    webhook_retry_max_seconds: float = Field(default=3600.0, gt=0)
    webhook_disable_after_seconds: float = Field(default=3 * 86_400, gt=0)
    # After a rotation the old secret still signs (a second v1=) this long.
    webhook_secret_grace_seconds: int = Field(default=86_400, ge=0)
    # In production a webhook URL must be https:// and resolve to public addresses only,
    # unless this allows private ones (a merchant's systems inside the same network).
    webhook_allow_private_urls: bool = False
    # How often the delivery worker looks for due deliveries; 0: no worker in this process.
    webhook_poll_interval_seconds: float = Field(default=1.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _split_lists(cls, data: object) -> object:
        for name in ("trusted_proxies", "simulator_notify_hosts"):
            if isinstance(data, dict) and isinstance(data.get(name), str):
                data = {**data, name: [p.strip() for p in data[name].split(",") if p.strip()]}
        return data

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxy_networks(cls, entries: list[str]) -> list[str]:
        # A typo must stop start-up: silently dropped, it would leave every client behind the
        # ingress sharing the ingress's address, and so one per-IP login budget.
        return [str(network) for network in proxy_networks(tuple(entries))]

    @property
    def is_production(self) -> bool:
        return self.env is Environment.PRODUCTION

    @property
    def uses_simulator_mount(self) -> bool:
        """Whether the dev simulator is mounted at ``/sim`` in the service process."""
        return not self.is_production and self.simulator_mount

    @property
    def serves_docs(self) -> bool:
        return self.docs or not self.is_production

    @property
    def miniprogram_api(self) -> str:
        """Base URL for code2session; an explicit setting always wins over the dev mount."""
        return self.miniprogram_api_base or self._default_upstream(OFFICIAL_MINIPROGRAM_API)

    @property
    def pay_api(self) -> str:
        """Base URL for WeChat Pay; an explicit setting always wins over the dev mount."""
        return self.pay_api_base or self._default_upstream(OFFICIAL_PAY_API)

    @property
    def pay_notify_url(self) -> str:
        return self.notify_url or f"{self.self_base_url.rstrip('/')}/wechat/pay/notify"

    @property
    def refund_notify_address(self) -> str | None:
        """Sent with each refund; None in production when unset, so WeChat uses the URL set on
        the merchant platform (PROTOCOL.md §6.3) and the sweep's refund query settles the rest."""
        if self.refund_notify_url or self.is_production:
            return self.refund_notify_url
        return f"{self.self_base_url.rstrip('/')}/wechat/pay/refund-notify"

    @property
    def v3_notify_address(self) -> str:
        return self.v3_notify_url or f"{self.self_base_url.rstrip('/')}/wechat/pay/v3/notify"

    @property
    def v3_refund_notify_address(self) -> str:
        return (
            self.v3_refund_notify_url
            or f"{self.self_base_url.rstrip('/')}/wechat/pay/v3/refund-notify"
        )

    @property
    def v2_key_set(self) -> bool:
        """Whether v2 can be used: in production only with a real APIv2 key (under v3 it is
        optional)."""
        return not (self.is_production and _is_unsafe(self.api_key))

    @property
    def merchant_private_key_path(self) -> str | None:
        return self.mch_private_key_path or self.mch_key_path

    @property
    def _v3_values(self) -> tuple[object, ...]:
        return (
            self.api_v3_key,
            self.merchant_private_key_path,
            self.mch_cert_serial_no,
            self.wechatpay_public_key_path,
            self.wechatpay_public_key_id,
        )

    @property
    def v3_missing(self) -> list[str]:
        """The v3 settings that are not set (empty: v3 can be used). The public key's path and
        id are both needed or neither (platform-certificate mode)."""
        unset = [
            name for name, value in zip(V3_SETTINGS, self._v3_values, strict=True) if not value
        ]
        public_key = V3_SETTINGS[3:]
        if all(name in unset for name in public_key):
            unset = [name for name in unset if name not in public_key]
        return unset

    @property
    def v3_configured(self) -> bool:
        """Every v3 setting is given: a v3 gateway is built whatever ``api_version`` says (an
        order keeps the version it was created with, so both run during a migration)."""
        return not self.v3_missing

    @property
    def v3_untouched(self) -> bool:
        """No v3 setting is given at all (dev then generates keys)."""
        return not any(self._v3_values)

    @property
    def v3_certificate_mode(self) -> bool:
        """No WeChat Pay public key is configured: its signatures are checked only with its
        platform certificates (downloaded). With a public key, certificates are still accepted,
        as during WeChat's migration from one to the other (§8.6)."""
        return not (self.wechatpay_public_key_path or self.wechatpay_public_key_id)

    @property
    def simulator_mount_url(self) -> str:
        """Where the dev simulator mount is, as this service's own calls address it."""
        return f"{self.self_base_url.rstrip('/')}/sim"

    def _default_upstream(self, official: str) -> str:
        return self.simulator_mount_url if self.uses_simulator_mount else official

    def _required_secrets(self) -> dict[str, SecretStr]:
        """The secrets production needs strong: the four always, the others when set."""
        secrets = {
            "WXPAY_APP_SECRET": self.app_secret,
            "WXPAY_API_KEY": self.api_key,
            "WXPAY_SECRET_KEY": self.secret_key,
            "WXPAY_ADMIN_TOKEN": self.admin_token,
        }
        if self.api_version == "v3":
            # Merchants who sign up today have only v3 credentials: the v2 key is optional,
            # and without it old v2 orders cannot be queried or refunded.
            secrets.pop("WXPAY_API_KEY")
        optional = {"WXPAY_API_V3_KEY": self.api_v3_key, "WXPAY_METRICS_TOKEN": self.metrics_token}
        return secrets | {name: value for name, value in optional.items() if value is not None}

    def _optional_secrets(self) -> dict[str, SecretStr]:
        """Secrets that may be weak or absent but must still differ from every other one: the
        v2 key under v3, once set (it then signs v2 queries and refunds, see ``v2_key_set``)."""
        if self.api_version == "v3" and self.api_key.get_secret_value() != DEV_API_KEY:
            return {"WXPAY_API_KEY": self.api_key}
        return {}

    def check_production(self) -> None:
        """Raise ``ConfigError`` naming every secret that is missing or a development default."""
        if not self.is_production:
            return
        secrets = self._required_secrets()
        bad = [name for name, value in secrets.items() if _is_unsafe(value)]
        bad += _identical({**secrets, **self._optional_secrets()})
        bad += _plain_http_upstreams(self)
        if self.api_version == "v3":
            bad += [f"{name} (WXPAY_API_VERSION=v3)" for name in self.v3_missing]
            if self.api_v3_key is not None and len(self.api_v3_key.get_secret_value()) != 32:
                bad.append("WXPAY_API_V3_KEY (32 characters)")
        # Under v2 with every v3 setting given, a v3 gateway is built all the same (runtime)
        # and sends this address with each v3 prepay.
        v3_in_use = self.api_version == "v3" or self.v3_configured
        if v3_in_use and not self.v3_notify_address.startswith("https://"):
            bad.append("WXPAY_V3_NOTIFY_URL (must be an https:// URL)")
        # v3 sends a refund notify address with every refund, its own or one made from
        # WXPAY_SELF_BASE_URL: either way WeChat must be able to reach it over https.
        if v3_in_use and not self.v3_refund_notify_address.startswith("https://"):
            bad.append("WXPAY_V3_REFUND_NOTIFY_URL (must be an https:// URL)")
        elif self.v3_refund_notify_url and not self.v3_refund_notify_url.startswith("https://"):
            bad.append("WXPAY_V3_REFUND_NOTIFY_URL (must be an https:// URL when set)")
        if self.appid == DEV_APPID or self.mch_id == DEV_MCH_ID:
            bad.append("WXPAY_APPID/WXPAY_MCH_ID (still the development values)")
        if self.api_version == "v2" and (
            self.notify_url is None or not self.notify_url.startswith("https://")
        ):
            bad.append("WXPAY_NOTIFY_URL (must be an https:// URL)")
        if self.refund_notify_url and not self.refund_notify_url.startswith("https://"):
            bad.append("WXPAY_REFUND_NOTIFY_URL (must be an https:// URL when set)")
        if self.session_ttl_seconds < PRODUCTION_MIN_SESSION_TTL:
            bad.append(f"WXPAY_SESSION_TTL_SECONDS (at least {PRODUCTION_MIN_SESSION_TTL})")
        if bad:
            raise ConfigError(
                "refusing to start in production; set these to real values: " + ", ".join(bad)
            )


def _is_unsafe(value: SecretStr) -> bool:
    """Missing, a development default, or weak: shorter than 16 characters, or made of fewer
    than 8 different ones ("aaaa…", "abab…", a date)."""
    raw = value.get_secret_value()
    return len(raw) < 16 or raw in _DEV_SECRETS or len(set(raw)) < _MIN_DISTINCT_CHARACTERS


def _identical(secrets: dict[str, SecretStr]) -> list[str]:
    """Pairs of secrets with the same value: one leak (an admin token in a shell history)
    would give away the other (the key that signs payments)."""
    names = sorted(secrets)
    return [
        f"{first}/{second} (identical; each secret must be its own)"
        for i, first in enumerate(names)
        for second in names[i + 1 :]
        if secrets[first].get_secret_value() == secrets[second].get_secret_value()
    ]


def _plain_http_upstreams(settings: Settings) -> list[str]:
    # code2session sends the AppSecret in its query string: over http it travels in clear.
    bases = {
        "WXPAY_MINIPROGRAM_API_BASE": settings.miniprogram_api,
        "WXPAY_PAY_API_BASE": settings.pay_api,
    }
    return [
        f"{name} (must be an https:// URL)"
        for name, base in bases.items()
        if not base.startswith("https://")
    ]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings(_env_file=os.environ.get(ENV_FILE_VARIABLE, ".env") or None)
