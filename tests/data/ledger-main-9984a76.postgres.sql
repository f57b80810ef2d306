-- pg_dump --inserts --no-owner --no-privileges of a ledger made by main 9984a76 (3 events); tests/test_migrations.py replays it.

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

CREATE FUNCTION public.backfills_insert_only() RETURNS trigger
    LANGUAGE plpgsql
    AS $$ BEGIN RAISE EXCEPTION 'backfills are insert-only' USING ERRCODE = 'insufficient_privilege'; END $$;

CREATE FUNCTION public.ledger_events_append_only() RETURNS trigger
    LANGUAGE plpgsql
    AS $$ BEGIN RAISE EXCEPTION 'ledger is append-only' USING ERRCODE = 'insufficient_privilege'; END $$;

SET default_tablespace = '';

SET default_table_access_method = heap;

CREATE TABLE public.backfills (
    id character varying(64) NOT NULL,
    plan_path text NOT NULL,
    plan_hash character varying(64) NOT NULL,
    pipeline character varying(260) NOT NULL,
    factory_key character varying(400) NOT NULL,
    title text NOT NULL,
    ticket character varying(200) NOT NULL,
    requester character varying(320) NOT NULL,
    requester_source character varying(16) NOT NULL,
    requested_at timestamp with time zone NOT NULL,
    note text,
    approval text NOT NULL,
    decisions text NOT NULL,
    preview text NOT NULL
);

CREATE TABLE public.history_key_sets (
    id integer NOT NULL,
    factory_key character varying(255) NOT NULL,
    pipeline character varying(260) NOT NULL,
    signature character varying(64) NOT NULL,
    fields text NOT NULL
);

CREATE SEQUENCE public.history_key_sets_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.history_key_sets_id_seq OWNED BY public.history_key_sets.id;

CREATE TABLE public.history_keys (
    set_id integer NOT NULL,
    run_id character varying(64) NOT NULL,
    key_hash bigint
);

CREATE TABLE public.history_runs (
    factory_key character varying(255) NOT NULL,
    pipeline character varying(260) NOT NULL,
    run_id character varying(64) NOT NULL,
    status character varying(16) NOT NULL,
    run_start_us bigint,
    last_updated_us bigint,
    run_group_id character varying(64),
    is_latest boolean NOT NULL,
    parameters text NOT NULL,
    data text NOT NULL
);

CREATE TABLE public.history_sync (
    factory_key character varying(255) NOT NULL,
    pipeline character varying(260) NOT NULL,
    watermark_us bigint,
    horizon_us bigint NOT NULL,
    synced_at_us bigint NOT NULL
);

CREATE TABLE public.ledger_events (
    seq bigint NOT NULL,
    at timestamp with time zone NOT NULL,
    actor character varying(320) NOT NULL,
    identity_source character varying(16) NOT NULL,
    backfill_id character varying(128),
    window_key character varying(128),
    kind character varying(64) NOT NULL,
    payload text NOT NULL,
    prev_hash character varying(64) NOT NULL,
    hash character varying(64) NOT NULL
);

CREATE TABLE public.schema_version (
    version integer NOT NULL,
    description text
);

CREATE TABLE public.window_claims (
    id integer NOT NULL,
    backfill_id character varying(64) NOT NULL,
    window_key character varying(64) NOT NULL,
    attempt integer NOT NULL,
    worker character varying(255) NOT NULL,
    claimed_at timestamp with time zone,
    lease_until timestamp with time zone,
    released_at timestamp with time zone
);

CREATE SEQUENCE public.window_claims_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;

ALTER SEQUENCE public.window_claims_id_seq OWNED BY public.window_claims.id;

ALTER TABLE ONLY public.history_key_sets ALTER COLUMN id SET DEFAULT nextval('public.history_key_sets_id_seq'::regclass);

ALTER TABLE ONLY public.window_claims ALTER COLUMN id SET DEFAULT nextval('public.window_claims_id_seq'::regclass);

INSERT INTO public.ledger_events VALUES (1, '2026-12-01 13:22:48.645858+00', 'alice', 'os', 'bf-1', NULL, 'request', '{"plan_hash":"abababababababababababababababababababababababababababababababab"}', '0000000000000000000000000000000000000000000000000000000000000000', 'c4f4cabf7e8d96efb0aa8169f27dcc54cbd295599bb0089445ff960127954bc1');
INSERT INTO public.ledger_events VALUES (2, '2026-12-01 13:22:48.653167+00', 'bob', 'declared', 'bf-1', NULL, 'approval', '{"note":"ok"}', 'c4f4cabf7e8d96efb0aa8169f27dcc54cbd295599bb0089445ff960127954bc1', '9e26ba82574789d8584dd358b6131f722e107c91002d255a4e4281ddbfbfacb2');
INSERT INTO public.ledger_events VALUES (3, '2026-12-01 13:22:48.659957+00', 'bob', 'declared', NULL, NULL, 'note', '{"text":"legacy"}', '9e26ba82574789d8584dd358b6131f722e107c91002d255a4e4281ddbfbfacb2', 'f9792bc02064b61916f1116be95a4ad84cdb41cbb2f83a2eaf37958005dec9f6');

INSERT INTO public.schema_version VALUES (1, 'ledger append-only triggers');
INSERT INTO public.schema_version VALUES (30, 'backfills insert-only triggers');

SELECT pg_catalog.setval('public.history_key_sets_id_seq', 1, false);

SELECT pg_catalog.setval('public.window_claims_id_seq', 1, false);

ALTER TABLE ONLY public.backfills
    ADD CONSTRAINT backfills_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.history_key_sets
    ADD CONSTRAINT history_key_sets_pkey PRIMARY KEY (id);

ALTER TABLE ONLY public.history_keys
    ADD CONSTRAINT history_keys_pkey PRIMARY KEY (set_id, run_id);

ALTER TABLE ONLY public.history_runs
    ADD CONSTRAINT history_runs_pkey PRIMARY KEY (factory_key, pipeline, run_id);

ALTER TABLE ONLY public.history_sync
    ADD CONSTRAINT history_sync_pkey PRIMARY KEY (factory_key, pipeline);

ALTER TABLE ONLY public.ledger_events
    ADD CONSTRAINT ledger_events_pkey PRIMARY KEY (seq);

ALTER TABLE ONLY public.schema_version
    ADD CONSTRAINT schema_version_pkey PRIMARY KEY (version);

ALTER TABLE ONLY public.history_key_sets
    ADD CONSTRAINT uq_history_key_sets UNIQUE (factory_key, pipeline, signature);

ALTER TABLE ONLY public.window_claims
    ADD CONSTRAINT uq_window_claims_attempt UNIQUE (backfill_id, window_key, attempt);

ALTER TABLE ONLY public.window_claims
    ADD CONSTRAINT window_claims_pkey PRIMARY KEY (id);

CREATE INDEX ix_backfills_requested_at ON public.backfills USING btree (requested_at);

CREATE INDEX ix_history_keys_hash ON public.history_keys USING btree (set_id, key_hash);

CREATE INDEX ix_history_runs_start ON public.history_runs USING btree (factory_key, pipeline, run_start_us);

CREATE INDEX ix_ledger_events_at ON public.ledger_events USING btree (at);

CREATE INDEX ix_ledger_events_backfill_id ON public.ledger_events USING btree (backfill_id);

CREATE INDEX ix_ledger_events_kind ON public.ledger_events USING btree (kind);

CREATE INDEX ix_window_claims_backfill_id ON public.window_claims USING btree (backfill_id);

CREATE TRIGGER backfills_no_update_delete BEFORE DELETE OR UPDATE ON public.backfills FOR EACH ROW EXECUTE FUNCTION public.backfills_insert_only();

CREATE TRIGGER ledger_events_no_truncate BEFORE TRUNCATE ON public.ledger_events FOR EACH STATEMENT EXECUTE FUNCTION public.ledger_events_append_only();

CREATE TRIGGER ledger_events_no_update_delete BEFORE DELETE OR UPDATE ON public.ledger_events FOR EACH ROW EXECUTE FUNCTION public.ledger_events_append_only();

