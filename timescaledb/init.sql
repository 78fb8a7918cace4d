-- Quaint2 schema: the single source of truth.
--
-- Idempotent: applied by the TimescaleDB Docker image at first start (mounted into
-- /docker-entrypoint-initdb.d) and by each service at start-up under an advisory lock,
-- so local runs, tests and containers all use exactly this file.
--
-- Licences: the Docker image is TimescaleDB's Community edition (timescaledb.license =
-- 'timescale'): compression, retention and the daily jobs use TimescaleDB's own
-- policies and job scheduler. Debian's build is the Apache edition ('apache'):
-- compression is unavailable; retention and the daily jobs run through pg_cron when it
-- is installed in this database, otherwise the gap handler runs them on the same
-- schedule (see quaint_automation_mode()).

CREATE EXTENSION IF NOT EXISTS timescaledb;

-- ---------------------------------------------------------------------------------
-- Settings the schema's own jobs read (book tick retention is user-configurable).
CREATE TABLE IF NOT EXISTS quaint_config (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO quaint_config (key, value) VALUES
    ('candles_retention', '13 months'),
    ('predictions_retention', '3 months'),
    ('features_retention', '1 month'),
    ('book_ticker_retention', '30 days')
ON CONFLICT (key) DO NOTHING;

-- ---------------------------------------------------------------------------------
-- 1-minute candles. time = the candle's open time (UTC).
CREATE TABLE IF NOT EXISTS candles_1m (
    symbol                       TEXT        NOT NULL,
    time                         TIMESTAMPTZ NOT NULL,
    open                         NUMERIC     NOT NULL,
    high                         NUMERIC     NOT NULL,
    low                          NUMERIC     NOT NULL,
    close                        NUMERIC     NOT NULL,
    volume                       NUMERIC     NOT NULL,
    quote_asset_volume           NUMERIC,
    taker_buy_base_asset_volume  NUMERIC,
    taker_buy_quote_asset_volume NUMERIC,
    number_of_trades             BIGINT,
    source                       TEXT        NOT NULL DEFAULT 'ws'
        CONSTRAINT candles_1m_source_check CHECK (source IN ('ws', 'rest', 'archive')),
    ingested_at                  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, time),
    CONSTRAINT candles_1m_minute_check CHECK (date_trunc('minute', time AT TIME ZONE 'UTC') = time AT TIME ZONE 'UTC'),
    CONSTRAINT candles_1m_range_check CHECK (low <= LEAST(open, close) AND high >= GREATEST(open, close))
);
SELECT create_hypertable('candles_1m', by_range('time', INTERVAL '7 days'), if_not_exists => TRUE);

-- The complete compressed batches of one symbol inside [p_lo, p_hi), as spans
-- [first minute, last minute + 1 minute) in which every minute is stored. They come from
-- each batch's own metadata (row count, min and max time), so nothing is decompressed:
-- the gap scan (gap_handler/store.py) counts rows only where these spans do not reach.
-- Exact: (symbol, time) is unique and every time is a whole minute, so a batch of n rows
-- whose first and last minutes are n - 1 minutes apart holds every minute between them;
-- a DELETE or UPDATE that touches a batch decompresses it (or drops it whole), so its
-- rows are then counted like any other. Empty on the Apache build (nothing is compressed) and for chunks laid
-- out otherwise (symbol not a segmentby column, time not the first orderby column, a
-- table access method other than heap): an empty answer only makes the scan read more.
-- The metadata column names (_ts_meta_count, _ts_meta_min_1, _ts_meta_max_1) and
-- compression_settings are TimescaleDB internals, unchanged from 2.19 to 2.29; should a
-- release rename them, the lookup fails, is caught, and the scan counts every row.
CREATE OR REPLACE FUNCTION quaint_complete_batches(p_symbol TEXT, p_lo TIMESTAMPTZ, p_hi TIMESTAMPTZ)
RETURNS TABLE (span_start TIMESTAMPTZ, span_end TIMESTAMPTZ)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    q TEXT;
BEGIN
    SELECT string_agg(format(
               'SELECT _ts_meta_min_1, _ts_meta_max_1 + interval ''1 minute'' FROM %s'
               ' WHERE symbol = $1 AND _ts_meta_min_1 >= $2 AND _ts_meta_max_1 < $3'
               ' AND _ts_meta_count = extract(epoch FROM _ts_meta_max_1 - _ts_meta_min_1) / 60 + 1',
               s.compress_relid), ' UNION ALL ')
    INTO q
    FROM show_chunks('candles_1m') AS c
    JOIN _timescaledb_catalog.compression_settings AS s ON s.relid = c
    JOIN pg_class AS r ON r.oid = c
    WHERE s.compress_relid IS NOT NULL AND 'symbol' = ANY (s.segmentby) AND s.orderby[1] = 'time'
      AND r.relam = (SELECT oid FROM pg_am WHERE amname = 'heap')
      AND c NOT IN (SELECT show_chunks('candles_1m', older_than => p_lo))   -- wholly before
      AND c NOT IN (SELECT show_chunks('candles_1m', newer_than => p_hi));  -- wholly after
    IF q IS NOT NULL THEN
        RETURN QUERY EXECUTE q USING p_symbol, p_lo, p_hi;
    END IF;
EXCEPTION
    -- A chunk dropped by retention between the lookup and the read, a renamed layout, or
    -- a role that may read candles_1m but not its compressed chunks: count every row.
    WHEN undefined_table OR undefined_column OR insufficient_privilege THEN
        RETURN;
END $$;

-- Best bid/ask as received. Spot bookTicker has no event time: time = receipt time.
CREATE TABLE IF NOT EXISTS book_ticker (
    symbol    TEXT        NOT NULL,
    time      TIMESTAMPTZ NOT NULL,
    update_id BIGINT      NOT NULL,
    bid_price NUMERIC     NOT NULL,
    bid_qty   NUMERIC     NOT NULL,
    ask_price NUMERIC     NOT NULL,
    ask_qty   NUMERIC     NOT NULL
);
SELECT create_hypertable('book_ticker', by_range('time', INTERVAL '1 day'), if_not_exists => TRUE);
CREATE INDEX IF NOT EXISTS book_ticker_symbol_time_idx ON book_ticker (symbol, time DESC);

-- Normalized ML features; time = the minute the features describe (from data up to
-- and including that minute's close, never later).
CREATE TABLE IF NOT EXISTS feature_cache (
    symbol        TEXT        NOT NULL,
    time          TIMESTAMPTZ NOT NULL,
    features_json JSONB       NOT NULL,
    version       TEXT        NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (symbol, time, version)
);
SELECT create_hypertable('feature_cache', by_range('time', INTERVAL '1 day'), if_not_exists => TRUE);

-- Model predictions; time = the target minute being predicted.
-- accuracy (filled by quaint_resolve_predictions once the target minute's candle is
-- stored): accuracy = max(0, 1 - |prediction - actual| / actual), i.e. 1 minus the
-- absolute percentage error of the predicted close, floored at 0; 1 = exact.
CREATE TABLE IF NOT EXISTS predictions (
    time        TIMESTAMPTZ NOT NULL,
    symbol      TEXT        NOT NULL,
    model_id    TEXT        NOT NULL,
    prediction  NUMERIC     NOT NULL,
    confidence  NUMERIC     CHECK (confidence BETWEEN 0 AND 1),
    actual      NUMERIC,
    accuracy    NUMERIC     CHECK (accuracy BETWEEN 0 AND 1),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    resolved_at TIMESTAMPTZ,
    PRIMARY KEY (symbol, model_id, time)
);
SELECT create_hypertable('predictions', by_range('time', INTERVAL '7 days'), if_not_exists => TRUE);

-- ---------------------------------------------------------------------------------
-- Ensemble A/B configurations. The constraints make a bad configuration impossible
-- to store: one weight per member, weights >= 0 summing to 1, distinct members,
-- traffic share in [0, 1] and the active configurations' shares summing to <= 1.
CREATE OR REPLACE FUNCTION quaint_weights_valid(weights NUMERIC[]) RETURNS BOOLEAN
LANGUAGE sql IMMUTABLE AS $$
    SELECT bool_and(w IS NOT NULL AND w >= 0) AND abs(sum(w) - 1) < 0.000001
    FROM unnest(weights) AS w
$$;

CREATE OR REPLACE FUNCTION quaint_members_distinct(members TEXT[]) RETURNS BOOLEAN
LANGUAGE sql IMMUTABLE AS $$
    SELECT count(DISTINCT m) = count(*) AND bool_and(m IS NOT NULL AND m <> '')
    FROM unnest(members) AS m
$$;

CREATE TABLE IF NOT EXISTS ensemble_models (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          TEXT        NOT NULL CHECK (name ~ '^[A-Za-z0-9_.-]{1,100}$'),
    version       INTEGER     NOT NULL CHECK (version > 0),
    member_models TEXT[]      NOT NULL CHECK (cardinality(member_models) >= 1
                                             AND quaint_members_distinct(member_models)),
    weights       NUMERIC[]   NOT NULL CHECK (quaint_weights_valid(weights)),
    traffic_share NUMERIC     NOT NULL DEFAULT 0 CHECK (traffic_share BETWEEN 0 AND 1),
    is_active     BOOLEAN     NOT NULL DEFAULT FALSE,
    metrics       JSONB       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metrics) = 'object'),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (name, version),
    CONSTRAINT ensemble_models_weights_match CHECK (cardinality(weights) = cardinality(member_models))
);

CREATE OR REPLACE FUNCTION quaint_check_traffic_share() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Serialise concurrent writers so two transactions cannot each pass the check.
    PERFORM pg_advisory_xact_lock(hashtext('quaint.ensemble_models.traffic'));
    IF (SELECT coalesce(sum(traffic_share), 0) FROM ensemble_models WHERE is_active) > 1 THEN
        RAISE EXCEPTION 'active ensemble configurations would receive more than 100%% of traffic'
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS ensemble_models_traffic ON ensemble_models;
CREATE CONSTRAINT TRIGGER ensemble_models_traffic
    AFTER INSERT OR UPDATE ON ensemble_models
    DEFERRABLE INITIALLY IMMEDIATE
    FOR EACH ROW EXECUTE FUNCTION quaint_check_traffic_share();

-- ---------------------------------------------------------------------------------
-- Data quality events, kept forever (small, and the audit trail of the history).
CREATE TABLE IF NOT EXISTS data_quality_logs (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    time              TIMESTAMPTZ NOT NULL DEFAULT now(),
    symbol            TEXT,
    event_type        TEXT        NOT NULL CONSTRAINT data_quality_logs_event_type_check CHECK (event_type IN (
                          'gap_detected', 'gap_backfilled', 'gap_unrecoverable', 'ws_reconnect',
                          'db_unavailable', 'data_dropped', 'error', 'archive_missing',
                          'archive_checksum_mismatch', 'archive_short', 'archive_malformed',
                          'archive_mismatch', 'symbol_listed', 'symbol_halted', 'symbol_resumed',
                          'symbol_delisted', 'db_failover', 'leader_changed')),
    gap_start         TIMESTAMPTZ,
    gap_end           TIMESTAMPTZ,
    candles_missing   INTEGER CHECK (candles_missing >= 0),
    candles_recovered INTEGER CHECK (candles_recovered >= 0),
    source            TEXT,
    message           TEXT,
    details           JSONB       NOT NULL DEFAULT '{}'::jsonb,
    resolved          BOOLEAN     NOT NULL DEFAULT FALSE,
    resolved_at       TIMESTAMPTZ,
    CONSTRAINT data_quality_logs_gap_order CHECK (gap_end IS NULL OR gap_start <= gap_end)
);
-- A database made before the newest event types (archive fallbacks; universe changes, failover and
-- leadership): widen its CHECK once (the ALTER locks this small table briefly; skipped when the
-- constraint already lists the last one added).
DO $quality_types$
BEGIN
    IF pg_get_constraintdef((SELECT oid FROM pg_constraint
                             WHERE conname = 'data_quality_logs_event_type_check'
                               AND conrelid = 'data_quality_logs'::regclass)) NOT LIKE '%leader_changed%' THEN
        ALTER TABLE data_quality_logs DROP CONSTRAINT data_quality_logs_event_type_check,
            ADD CONSTRAINT data_quality_logs_event_type_check CHECK (event_type IN (
                'gap_detected', 'gap_backfilled', 'gap_unrecoverable', 'ws_reconnect',
                'db_unavailable', 'data_dropped', 'error', 'archive_missing',
                'archive_checksum_mismatch', 'archive_short', 'archive_malformed', 'archive_mismatch',
                'symbol_listed', 'symbol_halted', 'symbol_resumed', 'symbol_delisted', 'db_failover',
                'leader_changed'));
    END IF;
END
$quality_types$;
CREATE INDEX IF NOT EXISTS data_quality_logs_type_symbol_idx
    ON data_quality_logs (event_type, symbol, gap_start);
CREATE INDEX IF NOT EXISTS data_quality_logs_open_gaps_idx
    ON data_quality_logs (symbol, gap_start) WHERE event_type = 'gap_detected' AND NOT resolved;
-- An exchange outage is recorded once: one gap_unrecoverable row per (symbol, window).
CREATE UNIQUE INDEX IF NOT EXISTS data_quality_logs_unrecoverable_once
    ON data_quality_logs (symbol, gap_start, gap_end) WHERE event_type = 'gap_unrecoverable';

-- Every gap_detected row wakes the gap handler at once (LISTEN quaint_gaps), whoever
-- inserted it, so backfill starts now rather than at the next periodic scan.
CREATE OR REPLACE FUNCTION quaint_notify_gap() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('quaint_gaps', json_build_object(
        'id', NEW.id, 'symbol', NEW.symbol,
        'gap_start', NEW.gap_start, 'gap_end', NEW.gap_end)::text);
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS data_quality_logs_notify_gap ON data_quality_logs;
CREATE TRIGGER data_quality_logs_notify_gap
    AFTER INSERT ON data_quality_logs
    FOR EACH ROW WHEN (NEW.event_type = 'gap_detected')
    EXECUTE FUNCTION quaint_notify_gap();

-- ---------------------------------------------------------------------------------
-- Backfills asked for through the gap handler's API (POST /backfills). The row is
-- written before the request is acknowledged and updated as each work unit ends; at
-- start-up the gap handler resumes every row not finished, so an accepted request
-- survives a restart even when its range lies outside the automatic scan window.
-- A plain table kept forever, like data_quality_logs: a few rows per request made by
-- hand. The range is half-open: [range_start, range_end).
CREATE TABLE IF NOT EXISTS backfill_requests (
    id                    TEXT        PRIMARY KEY CONSTRAINT backfill_requests_id_check CHECK (id ~ '^[0-9a-f]{16}$'),
    symbol                TEXT        NOT NULL,
    range_start           TIMESTAMPTZ NOT NULL,
    range_end             TIMESTAMPTZ NOT NULL,
    state                 TEXT        NOT NULL CONSTRAINT backfill_requests_state_check CHECK (state IN (
                              'queued', 'scanning', 'running', 'complete', 'incomplete', 'failed')),
    requested_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at            TIMESTAMPTZ,
    finished_at           TIMESTAMPTZ,
    -- Minutes missing when the request first started; done = no longer missing.
    minutes_total         INTEGER     NOT NULL DEFAULT 0 CHECK (minutes_total >= 0),
    minutes_done          INTEGER     NOT NULL DEFAULT 0 CHECK (minutes_done >= 0),
    candles_recovered     INTEGER     NOT NULL DEFAULT 0 CHECK (candles_recovered >= 0),
    unrecoverable_minutes INTEGER     NOT NULL DEFAULT 0 CHECK (unrecoverable_minutes >= 0),
    error                 TEXT,
    CONSTRAINT backfill_requests_range_order CHECK (range_start < range_end),
    -- Finished exactly when the state is final: what start-up resumes is unambiguous.
    CONSTRAINT backfill_requests_finished_check
        CHECK ((finished_at IS NULL) = (state IN ('queued', 'scanning', 'running')))
);
CREATE INDEX IF NOT EXISTS backfill_requests_recent_idx ON backfill_requests (requested_at DESC);
CREATE INDEX IF NOT EXISTS backfill_requests_unfinished_idx
    ON backfill_requests (requested_at) WHERE finished_at IS NULL;

-- ---------------------------------------------------------------------------------
-- Daily jobs, as functions so every scheduler calls the same code.

CREATE OR REPLACE FUNCTION quaint_retention(p_key TEXT) RETURNS INTERVAL
LANGUAGE sql STABLE AS $$ SELECT value::interval FROM quaint_config WHERE key = p_key $$;

-- Retention: drop whole chunks older than each table's retention. Returns the number
-- of chunks dropped.
CREATE OR REPLACE FUNCTION quaint_cleanup(p_now TIMESTAMPTZ DEFAULT now()) RETURNS INTEGER
LANGUAGE plpgsql AS $$
DECLARE
    dropped INTEGER := 0;
    n INTEGER;
BEGIN
    SELECT count(*) INTO n FROM drop_chunks('candles_1m', older_than => p_now - quaint_retention('candles_retention'));
    dropped := dropped + n;
    SELECT count(*) INTO n FROM drop_chunks('predictions', older_than => p_now - quaint_retention('predictions_retention'));
    dropped := dropped + n;
    SELECT count(*) INTO n FROM drop_chunks('feature_cache', older_than => p_now - quaint_retention('features_retention'));
    dropped := dropped + n;
    SELECT count(*) INTO n FROM drop_chunks('book_ticker', older_than => p_now - quaint_retention('book_ticker_retention'));
    dropped := dropped + n;
    RETURN dropped;
END $$;

-- Accuracy: for every past prediction whose target minute has a stored candle, fill
-- actual (that minute's close), accuracy (formula above) and resolved_at.
CREATE OR REPLACE FUNCTION quaint_resolve_predictions(p_now TIMESTAMPTZ DEFAULT now()) RETURNS INTEGER
LANGUAGE plpgsql AS $$
DECLARE
    n INTEGER;
BEGIN
    UPDATE predictions AS p
    SET actual = c.close,
        accuracy = CASE WHEN c.close = 0 THEN NULL
                        ELSE GREATEST(0, 1 - abs(p.prediction - c.close) / c.close) END,
        resolved_at = p_now
    FROM candles_1m AS c
    WHERE p.actual IS NULL
      AND p.time <= p_now - INTERVAL '1 minute'
      AND c.symbol = p.symbol AND c.time = p.time;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- TimescaleDB job wrappers (Community licence): add_job needs (job_id, config).
CREATE OR REPLACE PROCEDURE quaint_cleanup_job(job_id INTEGER, config JSONB)
LANGUAGE plpgsql AS $$ BEGIN PERFORM quaint_cleanup(); END $$;
CREATE OR REPLACE PROCEDURE quaint_accuracy_job(job_id INTEGER, config JSONB)
LANGUAGE plpgsql AS $$ BEGIN PERFORM quaint_resolve_predictions(); END $$;

-- Which scheduler runs the daily jobs in this database:
-- 'timescaledb' (Community licence), 'pg_cron' (jobs registered here) or 'service'
-- (the gap handler runs quaint_cleanup at 02:00 and quaint_resolve_predictions at 03:00 UTC).
CREATE OR REPLACE FUNCTION quaint_automation_mode() RETURNS TEXT
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF current_setting('timescaledb.license', TRUE) = 'timescale' THEN
        RETURN 'timescaledb';
    END IF;
    IF to_regclass('cron.job') IS NOT NULL THEN
        IF EXISTS (SELECT 1 FROM cron.job WHERE jobname IN ('quaint-cleanup', 'quaint-accuracy')
                   AND database = current_database()) THEN
            RETURN 'pg_cron';
        END IF;
    END IF;
    RETURN 'service';
END $$;

-- The daily jobs as the scheduler that runs them here sees them (scripts/monitoring.sql,
-- scheduled_jobs): TimescaleDB's own jobs for this schema (compression policies, the two
-- daily jobs; not TimescaleDB's internal ones, which are none of this project's business),
-- pg_cron's jobs registered here with their last run, or, when neither runs them, the gap
-- handler's schedule (it logs daily_job_done / daily_job_failed; nothing is stored).
CREATE OR REPLACE FUNCTION quaint_scheduled_jobs()
RETURNS TABLE (scheduler TEXT, job TEXT, schedule TEXT, last_run TIMESTAMPTZ, last_status TEXT,
               next_run TIMESTAMPTZ, failures BIGINT)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    CASE quaint_automation_mode()
    WHEN 'timescaledb' THEN
        RETURN QUERY
        -- A rollup's policies run on its materialization hypertable: named by the rollup's view.
        SELECT 'timescaledb'::TEXT,
               j.proc_name::TEXT || coalesce(' on ' || coalesce(c.view_name, j.hypertable_name)::TEXT, ''),
               j.schedule_interval::TEXT, s.last_run_started_at, s.last_run_status::TEXT, s.next_start,
               s.total_failures::BIGINT
        FROM timescaledb_information.jobs AS j
        LEFT JOIN timescaledb_information.job_stats AS s ON s.job_id = j.job_id
        LEFT JOIN timescaledb_information.continuous_aggregates AS c
               ON c.materialization_hypertable_schema = j.hypertable_schema
              AND c.materialization_hypertable_name = j.hypertable_name
        WHERE j.proc_name IN ('quaint_cleanup_job', 'quaint_accuracy_job')
           OR j.hypertable_name IN ('candles_1m', 'book_ticker', 'feature_cache', 'predictions')
           OR c.view_name IN ('candles_5m', 'candles_15m', 'candles_1h', 'candles_4h', 'candles_1d')
        ORDER BY j.job_id;
    WHEN 'pg_cron' THEN
        -- cron.* exists only where pg_cron is installed: referenced through EXECUTE.
        RETURN QUERY EXECUTE $q$
        SELECT 'pg_cron'::TEXT, j.jobname::TEXT, j.schedule::TEXT, r.start_time, r.status::TEXT,
               NULL::TIMESTAMPTZ,
               (SELECT count(*) FROM cron.job_run_details AS f WHERE f.jobid = j.jobid AND f.status = 'failed')
        FROM cron.job AS j
        LEFT JOIN LATERAL (SELECT d.start_time, d.status FROM cron.job_run_details AS d
                           WHERE d.jobid = j.jobid ORDER BY d.start_time DESC LIMIT 1) AS r ON true
        WHERE j.database = current_database() AND j.jobname IN ('quaint-cleanup', 'quaint-accuracy')
        ORDER BY j.jobname $q$;
    ELSE
        RETURN QUERY
        SELECT 'gap_handler'::TEXT, v.job, v.schedule, NULL::TIMESTAMPTZ,
               'see the gap handler log (daily_job_done)'::TEXT,
               quaint_next_utc_hour(v.hour), NULL::BIGINT
        FROM (VALUES ('quaint_cleanup()', 'daily 02:00 UTC', 2),
                     ('quaint_resolve_predictions()', 'daily 03:00 UTC', 3)) AS v(job, schedule, hour);
    END CASE;
END $$;

-- Next occurrence of hh:00 UTC, as the first run of a daily TimescaleDB job.
CREATE OR REPLACE FUNCTION quaint_next_utc_hour(p_hour INTEGER) RETURNS TIMESTAMPTZ
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN t > now() THEN t ELSE t + INTERVAL '1 day' END
    FROM (SELECT (date_trunc('day', now() AT TIME ZONE 'UTC') + make_interval(hours => p_hour))
                 AT TIME ZONE 'UTC' AS t) AS s
$$;

DO $automation$
BEGIN
    IF current_setting('timescaledb.license', TRUE) = 'timescale' THEN
        -- Community edition: compression and TimescaleDB's own scheduler. Only once: this file
        -- runs at every service start, and the ALTER takes candles_1m's exclusive lock, so it
        -- would queue behind any open write and stall every later read and write meanwhile.
        IF NOT (SELECT compression_enabled FROM timescaledb_information.hypertables
                WHERE hypertable_schema = current_schema() AND hypertable_name = 'candles_1m') THEN
            ALTER TABLE candles_1m SET (timescaledb.compress,
                                        timescaledb.compress_segmentby = 'symbol',
                                        timescaledb.compress_orderby = 'time DESC');
        END IF;
        PERFORM add_compression_policy('candles_1m', INTERVAL '7 days', if_not_exists => TRUE);
        IF NOT EXISTS (SELECT 1 FROM timescaledb_information.jobs WHERE proc_name = 'quaint_cleanup_job') THEN
            PERFORM add_job('quaint_cleanup_job', INTERVAL '1 day', initial_start => quaint_next_utc_hour(2));
        END IF;
        IF NOT EXISTS (SELECT 1 FROM timescaledb_information.jobs WHERE proc_name = 'quaint_accuracy_job') THEN
            PERFORM add_job('quaint_accuracy_job', INTERVAL '1 day', initial_start => quaint_next_utc_hour(3));
        END IF;
    ELSE
        RAISE NOTICE 'TimescaleDB licence is %: compression unavailable; retention and daily jobs via pg_cron or the gap handler',
            current_setting('timescaledb.license', TRUE);
        -- pg_cron can only be created in the database named by cron.database_name.
        IF current_setting('cron.database_name', TRUE) = current_database()
           AND EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_cron') THEN
            CREATE EXTENSION IF NOT EXISTS pg_cron;
            -- cron.schedule(name, ...) replaces a job of the same name: idempotent.
            PERFORM cron.schedule('quaint-cleanup', '0 2 * * *', 'SELECT quaint_cleanup()');
            PERFORM cron.schedule('quaint-accuracy', '0 3 * * *', 'SELECT quaint_resolve_predictions()');
        END IF;
    END IF;
END
$automation$;

-- ---------------------------------------------------------------------------------
-- Rollups: candles_5m, candles_15m, candles_1h, candles_4h, candles_1d. candles_1m's
-- columns (exact NUMERIC) plus minutes = how many 1-minute candles the bucket holds (60
-- for a complete hour: fewer means a partial or outage-cut bar). Buckets are UTC
-- (time_bucket on TIMESTAMPTZ without a zone), time = the bucket's open time.
-- Same names, columns and answers on both licences:
-- * Community: continuous aggregates, hierarchical (5m <- 1m, 15m <- 5m, 1h <- 15m,
--   4h <- 1h, 1d <- 4h), real-time (materialized_only = false) so the live edge is current,
--   a refresh policy for the recent window, and compression of old buckets. A repair
--   older than the policy's window is refreshed by the writer: quaint.store.rollups.
--   refresh_rollups() after every backfill unit or archive import (it must run outside a
--   transaction block, so it cannot live in this file). Rollups are never dropped with
--   candles_1m's chunks: their retention is "forever" (a refresh only ever covers
--   buckets whose minutes still exist).
-- * Apache: plain views over time_bucket + first/last, always exact and current with no
--   writer cooperation; TimescaleDB turns the bucket filter into a chunk-excluding range
--   on candles_1m. They hold what candles_1m holds (its retention).
DO $rollups$
DECLARE
    -- (name, width, parent, policy start_offset, schedule)
    r RECORD;
    community BOOLEAN := current_setting('timescaledb.license', TRUE) = 'timescale';
BEGIN
    FOR r IN SELECT * FROM (VALUES
        ('candles_5m',  INTERVAL '5 minutes',  'candles_1m',  INTERVAL '1 day',  INTERVAL '5 minutes'),
        ('candles_15m', INTERVAL '15 minutes', 'candles_5m',  INTERVAL '1 day',  INTERVAL '15 minutes'),
        ('candles_1h',  INTERVAL '1 hour',     'candles_15m', INTERVAL '2 days', INTERVAL '30 minutes'),
        ('candles_4h',  INTERVAL '4 hours',    'candles_1h',  INTERVAL '3 days', INTERVAL '1 hour'),
        ('candles_1d',  INTERVAL '1 day',      'candles_4h',  INTERVAL '5 days', INTERVAL '1 hour')
    ) AS v(name, width, parent, start_offset, schedule) LOOP
        IF NOT community THEN
            -- GROUP BY by position: "time" there would name candles_1m's column, not the bucket.
            EXECUTE format($v$
                CREATE OR REPLACE VIEW %I AS
                SELECT symbol, time_bucket(%L::INTERVAL, time) AS time,
                       first(open, time) AS open, max(high) AS high, min(low) AS low,
                       last(close, time) AS close, sum(volume) AS volume,
                       sum(quote_asset_volume) AS quote_asset_volume,
                       sum(taker_buy_base_asset_volume) AS taker_buy_base_asset_volume,
                       sum(taker_buy_quote_asset_volume) AS taker_buy_quote_asset_volume,
                       sum(number_of_trades)::BIGINT AS number_of_trades,
                       count(*)::INTEGER AS minutes
                FROM candles_1m
                GROUP BY 1, 2 $v$, r.name, r.width);
        ELSIF to_regclass(r.name) IS NULL THEN
            -- minutes: counted at the first level, summed above it.
            EXECUTE format($v$
                CREATE MATERIALIZED VIEW %I
                WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
                SELECT symbol, time_bucket(%L::INTERVAL, time) AS time,
                       first(open, time) AS open, max(high) AS high, min(low) AS low,
                       last(close, time) AS close, sum(volume) AS volume,
                       sum(quote_asset_volume) AS quote_asset_volume,
                       sum(taker_buy_base_asset_volume) AS taker_buy_base_asset_volume,
                       sum(taker_buy_quote_asset_volume) AS taker_buy_quote_asset_volume,
                       sum(number_of_trades)::BIGINT AS number_of_trades,
                       %s AS minutes
                FROM %I
                GROUP BY symbol, time_bucket(%L::INTERVAL, time)
                WITH NO DATA $v$,
                r.name, r.width,
                CASE WHEN r.parent = 'candles_1m' THEN 'count(*)::INTEGER' ELSE 'sum(minutes)::INTEGER' END,
                r.parent, r.width);
            EXECUTE format('ALTER MATERIALIZED VIEW %I SET (timescaledb.compress = true, '
                           'timescaledb.compress_segmentby = ''symbol'', timescaledb.compress_orderby = ''time'')',
                           r.name);
        END IF;
        IF community THEN
            PERFORM add_continuous_aggregate_policy(r.name::REGCLASS, start_offset => r.start_offset,
                                                    end_offset => r.width, schedule_interval => r.schedule,
                                                    if_not_exists => TRUE);
            -- Old buckets compress (long after the policy window and candles_1m's own 7 days).
            PERFORM add_compression_policy(r.name::REGCLASS, compress_after => INTERVAL '30 days',
                                           if_not_exists => TRUE);
        END IF;
    END LOOP;
END
$rollups$;
