"""auth_sessions: a notification on every change to a live session (the session caches)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30

Each process keeps the sessions it has seen (``app.auth.sessioncache``) and forgets one when
PostgreSQL says it changed: a trigger, so that a revocation by any path (another replica, an
operator's SQL) reaches every process. Deleting sessions that have already expired (the
clean-up) says nothing: no cache can serve them anyway. A TRUNCATE says "forget everything".
SQLite has no notifications, and its processes keep no sessions: nothing to do there.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As app.auth.sessioncache.SESSIONS_CHANNEL and FORGET_ALL (tests keep them equal).
_FUNCTION = """
CREATE FUNCTION wxpay_auth_session_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        PERFORM pg_notify('wxpay_auth_sessions', '*');
    ELSIF TG_OP = 'UPDATE' OR OLD.expires_at > now() THEN
        PERFORM pg_notify('wxpay_auth_sessions', OLD.id::text);
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_FUNCTION)
    op.execute(
        "CREATE TRIGGER auth_sessions_changed AFTER UPDATE OR DELETE ON auth_sessions"
        " FOR EACH ROW EXECUTE FUNCTION wxpay_auth_session_changed()"
    )
    op.execute(
        "CREATE TRIGGER auth_sessions_truncated AFTER TRUNCATE ON auth_sessions"
        " FOR EACH STATEMENT EXECUTE FUNCTION wxpay_auth_session_changed()"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER auth_sessions_truncated ON auth_sessions")
    op.execute("DROP TRIGGER auth_sessions_changed ON auth_sessions")
    op.execute("DROP FUNCTION wxpay_auth_session_changed()")
