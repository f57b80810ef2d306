"""Team mode on PostgreSQL (spec §15): ``backfill ledger init``.

An administrator runs it once. It creates the schema (migrations), two roles and the grants,
and a trigger that makes the database, not the client, the source of identity:

- ``<prefix>_user`` (default ``backfill_user``): INSERT and SELECT on the ledger and the
  backfills, SELECT on ``ledger_meta`` and ``alembic_version``, never UPDATE or DELETE;
  read/write on the claims and history cache tables, which hold no evidence. Each person logs
  in as their own role, a member of it (on Azure Database for PostgreSQL, their Entra ID
  principal).
- ``<prefix>_admin`` (default ``backfill_admin``): everything on the tables, for migrations.
- ``ledger_events_stamp``: BEFORE INSERT, every event's actor must be ``session_user`` with
  identity source ``database`` (the client writes exactly that, so its hash chain is the one
  stored), and an approval, rejection or gate acceptance whose role is the requester's is
  refused. A ``backfills`` row must name ``session_user`` as its requester.

Role names are cluster-wide in PostgreSQL, hence the prefix (tests use a random one).
"""

from __future__ import annotations

import re

from sqlalchemy import text
from sqlalchemy.engine import Connection

from backfill import events as ev
from backfill.errors import ConfigError, UsageError
from backfill.store.database import Database

DEFAULT_PREFIX = "backfill"
DATABASE_SOURCE = "database"
STAMP_ERROR = "team ledger"
# Events that count as a review of the request: refused from the requester's own role.
REVIEW_KINDS = (ev.APPROVED, ev.REJECTED, ev.CANARY_APPROVED, ev.WINDOW_ACCEPTED)
EVIDENCE_TABLES = ("ledger_events", "backfills", "ledger_meta", "alembic_version")
CACHE_TABLES = ("window_claims", "history_runs", "history_sync", "history_key_sets", "history_keys", "history_secrets")
_PREFIX = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


def role_names(prefix: str) -> tuple[str, str]:
    if not _PREFIX.match(prefix):
        raise UsageError(f"--role-prefix {prefix!r}: lowercase letters, digits and _ (a PostgreSQL role name)")
    return f"{prefix}_user", f"{prefix}_admin"


def _stamp_function() -> str:
    kinds = ", ".join(f"'{k}'" for k in REVIEW_KINDS)
    return f"""
CREATE OR REPLACE FUNCTION ledger_events_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE requester text;
BEGIN
  IF NEW.actor IS DISTINCT FROM session_user::text OR NEW.identity_source IS DISTINCT FROM '{DATABASE_SOURCE}' THEN
    RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege', MESSAGE = '{STAMP_ERROR}: an event of role '
      || session_user || ' must be stamped ' || session_user || ' ({DATABASE_SOURCE}), not '
      || coalesce(NEW.actor, '') || ' (' || coalesce(NEW.identity_source, '') || ')';
  END IF;
  IF NEW.kind IN ({kinds}) THEN
    SELECT actor INTO requester FROM ledger_events
      WHERE backfill_id = NEW.backfill_id AND kind = '{ev.REQUESTED}' ORDER BY seq LIMIT 1;
    IF requester IS NULL OR requester = session_user::text THEN
      RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege', MESSAGE = '{STAMP_ERROR}: '
        || coalesce(requester, 'nobody') || ' requested ' || coalesce(NEW.backfill_id, 'nothing')
        || '; another role must review it (four eyes)';
    END IF;
  END IF;
  RETURN NEW;
END $$"""


_BACKFILLS_FUNCTION = f"""
CREATE OR REPLACE FUNCTION backfills_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.requester IS DISTINCT FROM session_user::text OR NEW.requester_source IS DISTINCT FROM '{DATABASE_SOURCE}' THEN
    RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege', MESSAGE = '{STAMP_ERROR}: a request of role '
      || session_user || ' must name ' || session_user || ' ({DATABASE_SOURCE}) as its requester';
  END IF;
  RETURN NEW;
END $$"""


def init_team_ledger(url: str | None = None, prefix: str = DEFAULT_PREFIX) -> tuple[str, str]:
    """Create the schema, roles, grants and stamping triggers; idempotent. Returns the roles."""
    user, admin = role_names(prefix)
    db = Database(url)
    try:
        if db.dialect != "postgresql":
            raise ConfigError(f"ledger {db.display_url}: team mode (ledger init) needs PostgreSQL")
        with db.writing() as conn:
            _roles(conn, user, admin)
            _grants(conn, user, admin)
            for statement in (_stamp_function(), _BACKFILLS_FUNCTION):
                conn.exec_driver_sql(statement)
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS ledger_events_stamp ON ledger_events")
            conn.exec_driver_sql(
                "CREATE TRIGGER ledger_events_stamp BEFORE INSERT ON ledger_events "
                "FOR EACH ROW EXECUTE FUNCTION ledger_events_stamp()"
            )
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS backfills_stamp ON backfills")
            conn.exec_driver_sql(
                "CREATE TRIGGER backfills_stamp BEFORE INSERT ON backfills "
                "FOR EACH ROW EXECUTE FUNCTION backfills_stamp()"
            )
            present = {r[0] for r in conn.execute(text("SELECT name FROM ledger_meta"))}
            for name, value in (("mode", "team"), ("team_roles", f"{user},{admin}")):
                if name not in present:
                    conn.execute(text("INSERT INTO ledger_meta (name, value) VALUES (:n, :v)"), {"n": name, "v": value})
    finally:
        db.dispose()
    return user, admin


def _roles(conn: Connection, user: str, admin: str) -> None:
    existing = {
        r[0]
        for r in conn.execute(text("SELECT rolname FROM pg_roles WHERE rolname IN (:u, :a)"), {"u": user, "a": admin})
    }
    for role in (user, admin):
        if role not in existing:
            conn.exec_driver_sql(f'CREATE ROLE "{role}" NOLOGIN')


def _grants(conn: Connection, user: str, admin: str) -> None:
    schema = conn.execute(text("SELECT current_schema()")).scalar_one()
    conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA "{schema}" TO "{user}", "{admin}"')
    for table in EVIDENCE_TABLES + CACHE_TABLES:
        conn.exec_driver_sql(f'REVOKE ALL ON "{table}" FROM PUBLIC')
        conn.exec_driver_sql(f'GRANT ALL ON "{table}" TO "{admin}"')
    for table in EVIDENCE_TABLES:
        # ledger_meta (origin, mode) and the schema version are the administrator's to write.
        privileges = "SELECT" if table in ("alembic_version", "ledger_meta") else "SELECT, INSERT"
        conn.exec_driver_sql(f'GRANT {privileges} ON "{table}" TO "{user}"')
    for table in CACHE_TABLES:
        conn.exec_driver_sql(f'GRANT SELECT, INSERT, UPDATE, DELETE ON "{table}" TO "{user}"')
    conn.exec_driver_sql(f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA "{schema}" TO "{user}", "{admin}"')
