-- sqlite3 .dump of a ledger made by main 9984a76 (3 events); tests/test_migrations.py replays it.
PRAGMA foreign_keys=OFF;
BEGIN TRANSACTION;
CREATE TABLE ledger_events (
	seq BIGINT NOT NULL, 
	at DATETIME NOT NULL, 
	actor VARCHAR(320) NOT NULL, 
	identity_source VARCHAR(16) NOT NULL, 
	backfill_id VARCHAR(128), 
	window_key VARCHAR(128), 
	kind VARCHAR(64) NOT NULL, 
	payload TEXT NOT NULL, 
	prev_hash VARCHAR(64) NOT NULL, 
	hash VARCHAR(64) NOT NULL, 
	PRIMARY KEY (seq)
);
INSERT INTO ledger_events VALUES(1,'2026-12-01 13:22:47.282029','alice','os','bf-1',NULL,'request','{"plan_hash":"abababababababababababababababababababababababababababababababab"}','0000000000000000000000000000000000000000000000000000000000000000','571938ded03fce673d5e7837eadb4c04a70c53b7bd7d67afe14bfe956043f95f');
INSERT INTO ledger_events VALUES(2,'2026-12-01 13:22:47.286966','bob','declared','bf-1',NULL,'approval','{"note":"ok"}','571938ded03fce673d5e7837eadb4c04a70c53b7bd7d67afe14bfe956043f95f','e1c3a224ec413e80659df292c02dafd142fa37edd1847062857fe002607a1743');
INSERT INTO ledger_events VALUES(3,'2026-12-01 13:22:47.289370','bob','declared',NULL,NULL,'note','{"text":"legacy"}','e1c3a224ec413e80659df292c02dafd142fa37edd1847062857fe002607a1743','787cb739c5f1cf05bab377f3c300c204c12e3713449dbfc5af26d102ea91baa1');
CREATE TABLE backfills (
	id VARCHAR(64) NOT NULL, 
	plan_path TEXT NOT NULL, 
	plan_hash VARCHAR(64) NOT NULL, 
	pipeline VARCHAR(260) NOT NULL, 
	factory_key VARCHAR(400) NOT NULL, 
	title TEXT NOT NULL, 
	ticket VARCHAR(200) NOT NULL, 
	requester VARCHAR(320) NOT NULL, 
	requester_source VARCHAR(16) NOT NULL, 
	requested_at DATETIME NOT NULL, 
	note TEXT, 
	approval TEXT NOT NULL, 
	decisions TEXT NOT NULL, 
	preview TEXT NOT NULL, 
	PRIMARY KEY (id)
);
CREATE TABLE window_claims (
	id INTEGER NOT NULL, 
	backfill_id VARCHAR(64) NOT NULL, 
	window_key VARCHAR(64) NOT NULL, 
	attempt INTEGER NOT NULL, 
	worker VARCHAR(255) NOT NULL, 
	claimed_at DATETIME, 
	lease_until DATETIME, 
	released_at DATETIME, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_window_claims_attempt UNIQUE (backfill_id, window_key, attempt)
);
CREATE TABLE history_runs (
	factory_key VARCHAR(255) NOT NULL, 
	pipeline VARCHAR(260) NOT NULL, 
	run_id VARCHAR(64) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	run_start_us BIGINT, 
	last_updated_us BIGINT, 
	run_group_id VARCHAR(64), 
	is_latest BOOLEAN NOT NULL, 
	parameters TEXT NOT NULL, 
	data TEXT NOT NULL, 
	PRIMARY KEY (factory_key, pipeline, run_id)
);
CREATE TABLE history_sync (
	factory_key VARCHAR(255) NOT NULL, 
	pipeline VARCHAR(260) NOT NULL, 
	watermark_us BIGINT, 
	horizon_us BIGINT NOT NULL, 
	synced_at_us BIGINT NOT NULL, 
	PRIMARY KEY (factory_key, pipeline)
);
CREATE TABLE history_key_sets (
	id INTEGER NOT NULL, 
	factory_key VARCHAR(255) NOT NULL, 
	pipeline VARCHAR(260) NOT NULL, 
	signature VARCHAR(64) NOT NULL, 
	fields TEXT NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_history_key_sets UNIQUE (factory_key, pipeline, signature)
);
CREATE TABLE history_keys (
	set_id INTEGER NOT NULL, 
	run_id VARCHAR(64) NOT NULL, 
	key_hash BIGINT, 
	PRIMARY KEY (set_id, run_id)
);
CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description TEXT);
INSERT INTO schema_version VALUES(1,'ledger append-only triggers');
INSERT INTO schema_version VALUES(30,'backfills insert-only triggers');
CREATE INDEX ix_ledger_events_kind ON ledger_events (kind);
CREATE INDEX ix_ledger_events_backfill_id ON ledger_events (backfill_id);
CREATE INDEX ix_ledger_events_at ON ledger_events (at);
CREATE INDEX ix_backfills_requested_at ON backfills (requested_at);
CREATE INDEX ix_window_claims_backfill_id ON window_claims (backfill_id);
CREATE INDEX ix_history_runs_start ON history_runs (factory_key, pipeline, run_start_us);
CREATE INDEX ix_history_keys_hash ON history_keys (set_id, key_hash);
CREATE TRIGGER ledger_events_no_update BEFORE UPDATE ON ledger_events BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
CREATE TRIGGER ledger_events_no_delete BEFORE DELETE ON ledger_events BEGIN SELECT RAISE(ABORT, 'ledger is append-only'); END;
CREATE TRIGGER backfills_no_update BEFORE UPDATE ON backfills BEGIN SELECT RAISE(ABORT, 'backfills are insert-only'); END;
CREATE TRIGGER backfills_no_delete BEFORE DELETE ON backfills BEGIN SELECT RAISE(ABORT, 'backfills are insert-only'); END;
COMMIT;
