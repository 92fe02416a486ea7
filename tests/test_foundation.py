"""Configuration, errors, health and migrations (issue 2)."""

from __future__ import annotations

import gc
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.config import ConfigError, Settings
from app.db import Base
from app.main import create_app
from app.orders.models import Order
from app.orders.repository import ORDER_COLUMNS
from app.refunds.models import Refund
from app.refunds.repository import REFUND_COLUMNS
from tests.conftest import ClientFactory
from tests.db import ROOT, downgrade, fresh_database_url, migrate
from tests.helpers import ADMIN
from tests.hermetic import child_env, hermetic_settings


def test_production_refuses_development_secrets() -> None:
    with pytest.raises(ConfigError) as refused:
        create_app(hermetic_settings(env="production"))

    message = str(refused.value)
    for name in ("WXPAY_APP_SECRET", "WXPAY_API_KEY", "WXPAY_SECRET_KEY", "WXPAY_ADMIN_TOKEN"):
        assert name in message
    assert hermetic_settings().api_key.get_secret_value() not in message


def test_production_start_up_exits_non_zero_with_a_clear_message() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import app.main"],
        cwd=ROOT,
        env=child_env(WXPAY_ENV="production"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    assert "refusing to start in production" in result.stderr


PRODUCTION = {
    "env": "production",
    "appid": "wx9999999999999999",
    "mch_id": "1234567890",
    # Shaped like real ones (an AppSecret is 32 hex digits, an APIv2 key 32 letters and
    # digits); "a" * 32 and the like are refused as weak (issue 15, item 7).
    "app_secret": "3f9c1e0b7a4d62c58e1f0a9b7c3d5e21",
    "api_key": "Q7wZ2kP9xR4mT8vL1nB6cY3hJ5gF0dSa",
    "secret_key": "m4Rk-9vQz_Lw2Xc7Tn5Bj8Hs3Gd6Fy1Pe0UaKo",
    "admin_token": "adm_7Yq2Vn9Rc4Lx8Kw3Tz6Pb1Hm5Js0Gd",
    "notify_url": "https://pay.example.com/wechat/pay/notify",
}


def test_production_accepts_real_secrets() -> None:
    settings = hermetic_settings(**PRODUCTION)

    settings.check_production()  # raises if anything is still unsafe
    assert settings.pay_api == "https://api.mch.weixin.qq.com"
    assert settings.miniprogram_api == "https://api.weixin.qq.com"
    # Unset in production: WeChat uses the refund notify URL set on the merchant platform.
    assert settings.refund_notify_address is None


# Every v3 setting (PROTOCOL.md §8), platform-certificate mode; the check reads no file.
V3 = {
    "api_v3_key": "Zr8Kq2Wn5Tx9Lm4Pb7Vc1Hj6Gd3Fs0Ya",
    "mch_private_key_path": "/run/secrets/apiclient_key.pem",
    "mch_cert_serial_no": "5157F09EFDC096DE15EBE81A47057A7232F1B8E1",
    "v3_notify_url": "https://pay.example.com/wechat/pay/v3/notify",
    # v3 sends a refund notify address with each refund; unset, it is made from this.
    "self_base_url": "https://pay.example.com",
}
PRODUCTION_V3 = {**PRODUCTION, **V3, "api_version": "v3"}


@pytest.mark.parametrize("base", [PRODUCTION, PRODUCTION_V3], ids=["v2", "v3"])
def test_production_refuses_a_v3_refund_notify_address_made_from_a_plain_http_base(
    base: dict[str, str],
) -> None:
    settings = hermetic_settings(**{**base, **V3, "self_base_url": "http://10.0.0.7:8000"})

    assert settings.v3_refund_notify_address.startswith("http://10.0.0.7:8000/")
    with pytest.raises(ConfigError, match="WXPAY_V3_REFUND_NOTIFY_URL"):
        settings.check_production()


@pytest.mark.parametrize("base", [PRODUCTION, PRODUCTION_V3], ids=["v2", "v3"])
@pytest.mark.parametrize("setting", ["refund_notify_url", "v3_refund_notify_url"])
def test_production_refuses_a_plain_http_refund_notify_url(
    base: dict[str, str], setting: str
) -> None:
    hermetic_settings(
        **{**base, setting: "https://pay.example.com/refund-notify"}
    ).check_production()
    settings = hermetic_settings(**{**base, setting: "http://pay.example.com/refund-notify"})

    with pytest.raises(ConfigError, match=f"WXPAY_{setting.upper()}"):
        settings.check_production()


@pytest.mark.parametrize("api_version", ["v2", "v3"])
@pytest.mark.parametrize("v3_notify_url", ["http://pay.example.com/wechat/pay/v3/notify", None])
def test_production_refuses_a_plain_http_v3_notify_url_whenever_v3_is_configured(
    api_version: str, v3_notify_url: str | None
) -> None:
    # Under v2 with every v3 setting given, a v3 gateway is built too (and sends this URL);
    # unset, it is derived from WXPAY_SELF_BASE_URL, by default http://127.0.0.1:8000.
    values = {**PRODUCTION, **V3, "api_version": api_version}
    hermetic_settings(**values).check_production()
    unset = {"self_base_url": "http://127.0.0.1:8000"} if v3_notify_url is None else {}
    settings = hermetic_settings(**{**values, "v3_notify_url": v3_notify_url, **unset})

    with pytest.raises(ConfigError, match="WXPAY_V3_NOTIFY_URL"):
        settings.check_production()


def test_production_refuses_a_session_lifetime_under_a_minute() -> None:
    # Dev allows a few seconds (the mini-program tests expire a real token); production not.
    short = hermetic_settings(**PRODUCTION, session_ttl_seconds=59)
    hermetic_settings(session_ttl_seconds=2)  # accepted in dev

    with pytest.raises(ConfigError, match="WXPAY_SESSION_TTL_SECONDS"):
        short.check_production()
    hermetic_settings(**PRODUCTION, session_ttl_seconds=60).check_production()


@pytest.mark.parametrize(
    ("weak", "value"),
    [
        ("app_secret", "a" * 32),
        ("api_key", "ab" * 16),
        ("secret_key", "2026-11-30-2026-11-30-2026"),
        ("admin_token", "short-token"),
        # Set, the metrics token guards /metrics as the admin token guards the admin routes.
        ("metrics_token", "REPLACE-ME"),
        ("metrics_token", "x"),
        ("metrics_token", "token-token-token"),
    ],
)
def test_production_refuses_weak_secrets(weak: str, value: str) -> None:
    settings = hermetic_settings(**{**PRODUCTION, weak: value})

    with pytest.raises(ConfigError, match=f"WXPAY_{weak.upper()}") as refused:
        settings.check_production()
    assert value not in str(refused.value)


@pytest.mark.parametrize(
    ("base", "setting", "copied", "named"),
    [
        (PRODUCTION, "admin_token", "secret_key", "WXPAY_ADMIN_TOKEN/WXPAY_SECRET_KEY"),
        (PRODUCTION, "metrics_token", "admin_token", "WXPAY_ADMIN_TOKEN/WXPAY_METRICS_TOKEN"),
        # Optional under v3, but once set the v2 key signs v2 queries and refunds.
        (PRODUCTION_V3, "api_key", "admin_token", "WXPAY_ADMIN_TOKEN/WXPAY_API_KEY"),
        (PRODUCTION_V3, "api_v3_key", "api_key", "WXPAY_API_KEY/WXPAY_API_V3_KEY"),
    ],
    ids=["v2-admin", "v2-metrics", "v3-api-key", "v3-api-v3-key"],
)
def test_production_refuses_two_secrets_with_the_same_value(
    base: dict[str, str], setting: str, copied: str, named: str
) -> None:
    hermetic_settings(**base).check_production()
    settings = hermetic_settings(**{**base, setting: base[copied]})

    with pytest.raises(ConfigError, match=named) as refused:
        settings.check_production()
    assert base[copied] not in str(refused.value)


@pytest.mark.parametrize("setting", ["pay_api_base", "miniprogram_api_base"])
def test_production_refuses_a_plain_http_wechat_api_base(setting: str) -> None:
    # code2session carries the AppSecret in its query string; over http it is in clear.
    settings = hermetic_settings(**{**PRODUCTION, setting: "http://api.example.com"})

    with pytest.raises(ConfigError, match=f"WXPAY_{setting.upper()}"):
        settings.check_production()


def test_production_accepts_https_wechat_api_bases() -> None:
    proxy = {"pay_api_base": "https://egress.example", "miniprogram_api_base": "https://eg.ex"}
    hermetic_settings(**{**PRODUCTION, **proxy}).check_production()


@pytest.mark.parametrize(
    ("values", "served"),
    [({}, True), (PRODUCTION, False), ({**PRODUCTION, "docs": True}, True)],
    ids=["dev", "production", "production with WXPAY_DOCS=true"],
)
async def test_docs_are_served_in_production_only_when_asked_for(
    values: dict[str, object], served: bool
) -> None:
    # The routes alone: no lifespan, so production needs no database or WeChat here.
    app = create_app(hermetic_settings(**values))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service.test") as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            response = await client.get(path)
            assert response.status_code == (200 if served else 404), path
            if not served:
                assert response.json()["error"]["code"] == "NOT_FOUND"


def test_explicit_upstream_urls_win_over_the_dev_simulator_mount() -> None:
    default = hermetic_settings()
    explicit = hermetic_settings(
        pay_api_base="http://127.0.0.1:9100", miniprogram_api_base="http://x"
    )

    assert default.pay_api.endswith("/sim")
    assert explicit.pay_api == "http://127.0.0.1:9100"
    assert explicit.miniprogram_api == "http://x"


def test_secrets_do_not_appear_in_the_settings_repr() -> None:
    settings = hermetic_settings()

    assert settings.api_key.get_secret_value() not in repr(settings)
    assert settings.secret_key.get_secret_value() not in str(settings)


@pytest.mark.parametrize(
    ("env_file", "admin_token"),
    [
        (None, "from-dot-env"),  # unset: .env in the working directory, as before
        ("", "dev-admin-token"),  # empty: no file at all
        ("other.env", "from-other-env"),
    ],
)
def test_get_settings_reads_the_env_file_wxpay_env_file_names(
    tmp_path: Path, env_file: str | None, admin_token: str
) -> None:
    (tmp_path / ".env").write_text("WXPAY_ADMIN_TOKEN=from-dot-env\n", encoding="utf-8")
    (tmp_path / "other.env").write_text("WXPAY_ADMIN_TOKEN=from-other-env\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WXPAY_")}
    if env_file is not None:
        env["WXPAY_ENV_FILE"] = env_file
    script = (
        "from app.config import get_settings; print(get_settings().admin_token.get_secret_value())"
    )

    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert result.stdout.strip() == admin_token


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


async def test_readiness_reports_an_unreachable_database(
    make_client: ClientFactory,
) -> None:
    client = await make_client(database_url="postgresql+asyncpg://nobody@127.0.0.1:9/none")

    ready = await client.get("/readyz")

    assert ready.status_code == 503
    assert ready.json()["error"]["code"] == "NOT_READY"


@pytest.fixture
async def role_refused_connections(database_url: str, engine: AsyncEngine) -> AsyncIterator[str]:
    """A PostgreSQL role that may open no connection: each attempt gets ``53300``, the error
    PostgreSQL gives when ``max_connections`` is used up ("sorry, too many clients already")."""
    if make_url(database_url).get_backend_name() != "postgresql":
        pytest.skip("PostgreSQL's connection limits (the PostgreSQL pass runs it)")
    role = f"wxpay_no_room_{secrets.token_hex(4)}"
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 0"))
    try:
        yield make_url(database_url).set(username=role).render_as_string(False)
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f"DROP ROLE {role}"))


async def test_a_database_with_no_room_for_another_client_is_503_not_500(
    make_client: ClientFactory, role_refused_connections: str
) -> None:
    # Found by the reliability suite while other suites held every connection of the shared
    # server: asyncpg's TooManyConnectionsError escaped as a 500 where a retry would succeed.
    client = await make_client(database_url=role_refused_connections)
    product = {"name": "短信套餐", "description": "短信套餐", "price_fen": 990}

    response = await client.post("/api/v1/admin/products", json=product, headers=ADMIN)

    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "DATABASE_UNAVAILABLE"


async def test_unknown_route_uses_the_error_envelope(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/nothing-here")

    assert response.status_code == 404
    assert response.json() == {"error": {"code": "NOT_FOUND", "message": "Not Found"}}


async def test_a_method_the_route_does_not_take_is_405_naming_those_it_does(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/api/v1/auth/login")

    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


async def test_openapi_documents_the_error_envelope(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()

    assert "ErrorEnvelope" in schema["components"]["schemas"]
    login = schema["paths"]["/api/v1/auth/login"]["post"]
    assert "401" in login["responses"] and "503" in login["responses"]


async def test_openapi_shows_the_bearer_token_on_client_routes(client: httpx.AsyncClient) -> None:
    # /docs' "Authorize" sends the token; the user is resolved in the same dependency.
    schema = (await client.get("/openapi.json")).json()

    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, method in [("/api/v1/orders", "post"), ("/api/v1/auth/session", "get")]:
        assert schema["paths"][path][method]["security"] == [{"HTTPBearer": []}]
    assert "security" not in schema["paths"]["/api/v1/auth/login"]["post"]


def test_migrations_go_down_and_up_again() -> None:
    with fresh_database_url() as url:
        migrate(url)
        downgrade(url, "base")
        migrate(url)


async def test_models_and_migrations_agree(engine: AsyncEngine) -> None:
    def diff(sync_conn: object) -> list[object]:
        context = MigrationContext.configure(sync_conn, opts={"compare_type": True})  # type: ignore[arg-type]
        return list(compare_metadata(context, Base.metadata))

    async with engine.connect() as conn:
        differences = await conn.run_sync(diff)
        tables = await conn.execute(text("SELECT version_num FROM alembic_version"))
        assert tables.scalar() is not None

    assert differences == []


async def test_orders_keep_room_on_each_page_for_their_updates(engine: AsyncEngine) -> None:
    # Migration 0006: without it, new orders land on packed pages and not one prepay update is
    # HOT (bench/growth.py). compare_metadata does not look at storage parameters.
    if engine.dialect.name != "postgresql":
        pytest.skip("fillfactor is a PostgreSQL storage parameter")
    async with engine.connect() as conn:
        options = await conn.scalar(
            text("SELECT reloptions FROM pg_class WHERE relname = 'orders'")
        )

    assert options == ["fillfactor=90"]
    assert Order.__table__.dialect_options["postgresql"]["with"] == {"fillfactor": 90}


def test_records_name_every_column_of_their_table() -> None:
    # Both order repositories build OrderRecord from full rows; a column added by a migration
    # must be added to the record too, or every order read fails.
    assert set(ORDER_COLUMNS) == {column.name for column in Order.__table__.columns}
    assert set(REFUND_COLUMNS) == {column.name for column in Refund.__table__.columns}


def test_a_notify_url_wechat_would_refuse_is_refused_at_start_up() -> None:
    # WeChat takes no query string in notify_url (PROTOCOL.md §2.1, §6.3); a refund built with
    # one would fail on every request.
    with pytest.raises(ValidationError, match="refund_notify_url"):
        hermetic_settings(refund_notify_url="https://pay.example.com/refund-notify?x=1")
    with pytest.raises(ValidationError, match="notify_url"):
        hermetic_settings(notify_url="https://pay.example.com/notify?x=1")


async def test_the_start_up_heap_is_left_out_of_full_collections_while_serving(
    settings: Settings,
) -> None:
    """What start-up built lives as long as the service: a full collection need not walk it
    (app.main). Unfrozen at shutdown, so a stopped app can be collected."""
    app = create_app(settings)
    assert gc.get_freeze_count() == 0

    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() > 10_000  # the modules, routes and models at least

    assert gc.get_freeze_count() == 0
