-- Quaint2 monitoring and troubleshooting queries (psql: \i scripts/monitoring.sql runs them all).
-- Each query starts with a "-- name:" line and an \echo of its name, so psql labels every result;
-- tests/test_deploy_monitoring.py runs every one against the
-- real schema (timescaledb/init.sql), so they stay correct as it changes. No parameters: edit the
-- intervals in place. Times are UTC; a candle's time is its open time, so it closes a minute later.

-- name: latest_candle_per_symbol
\echo '== latest_candle_per_symbol =='
-- The newest stored candle of each symbol and how long ago it closed. In production, lag above
-- ~2 minutes means the feeder is not receiving (see its /health and logs).
SELECT symbol,
       max(time)                                   AS latest_open_time,
       now() - (max(time) + INTERVAL '1 minute')   AS lag_since_close,
       count(*)                                    AS candles_last_7_days
FROM candles_1m
WHERE time > now() - INTERVAL '7 days'
GROUP BY symbol
ORDER BY symbol;

-- name: missing_minutes_24h
\echo '== missing_minutes_24h =='
-- Per symbol, how many of the last 24 hours' closed minutes have no candle (the newest two minutes
-- are left out: the feeder and the gap handler get that long to write them).
WITH symbols AS (
    SELECT DISTINCT symbol FROM candles_1m WHERE time > now() - INTERVAL '25 hours'
), minutes AS (
    SELECT generate_series(date_trunc('minute', now() - INTERVAL '24 hours'),
                           date_trunc('minute', now()) - INTERVAL '2 minutes',
                           INTERVAL '1 minute') AS time
)
SELECT s.symbol,
       count(*) FILTER (WHERE c.time IS NULL)      AS missing_minutes,
       min(m.time) FILTER (WHERE c.time IS NULL)   AS first_missing,
       max(m.time) FILTER (WHERE c.time IS NULL)   AS last_missing
FROM symbols AS s
CROSS JOIN minutes AS m
LEFT JOIN candles_1m AS c ON c.symbol = s.symbol AND c.time = m.time
GROUP BY s.symbol
ORDER BY missing_minutes DESC, s.symbol;

-- name: gaps_24h
\echo '== gaps_24h =='
-- The holes themselves, as ranges between stored candles in the last 24 hours (what the gap handler
-- should be backfilling).
SELECT symbol,
       prev_time + INTERVAL '1 minute'                               AS gap_start,
       time - INTERVAL '1 minute'                                    AS gap_end,
       (extract(epoch FROM time - prev_time) / 60)::integer - 1      AS missing_minutes
FROM (
    SELECT symbol, time, lag(time) OVER (PARTITION BY symbol ORDER BY time) AS prev_time
    FROM candles_1m
    WHERE time > now() - INTERVAL '24 hours'
) AS t
WHERE time - prev_time > INTERVAL '1 minute'
ORDER BY symbol, gap_start;

-- name: candle_sources_24h
\echo '== candle_sources_24h =='
-- Where the last 24 hours' candles came from: ws (live stream), rest (backfilled), archive.
SELECT symbol, source, count(*) AS candles, max(ingested_at) AS last_ingested
FROM candles_1m
WHERE time > now() - INTERVAL '24 hours'
GROUP BY symbol, source
ORDER BY symbol, source;

-- name: recent_data_quality_logs
\echo '== recent_data_quality_logs =='
-- The latest data-quality events: gaps detected and backfilled, unrecoverable windows, reconnects,
-- database outages, dropped rows, errors.
SELECT time, symbol, event_type, gap_start, gap_end, candles_missing, candles_recovered, source,
       resolved, left(message, 200) AS message
FROM data_quality_logs
WHERE time > now() - INTERVAL '24 hours'
ORDER BY time DESC, id DESC
LIMIT 100;

-- name: data_quality_summary_24h
\echo '== data_quality_summary_24h =='
-- Event counts per type and symbol over the last 24 hours.
SELECT event_type, symbol, count(*) AS events,
       coalesce(sum(candles_missing), 0)   AS candles_missing,
       coalesce(sum(candles_recovered), 0) AS candles_recovered,
       max(time)                           AS latest
FROM data_quality_logs
WHERE time > now() - INTERVAL '24 hours'
GROUP BY event_type, symbol
ORDER BY event_type, symbol;

-- name: open_gaps
\echo '== open_gaps =='
-- Gaps detected but not yet resolved, oldest first (a long list means backfill is stuck: see the gap
-- handler's log and /health).
SELECT id, time AS detected_at, symbol, gap_start, gap_end, candles_missing, now() - time AS open_for
FROM data_quality_logs
WHERE event_type = 'gap_detected' AND NOT resolved
ORDER BY gap_start
LIMIT 100;

-- name: hypertable_sizes
\echo '== hypertable_sizes =='
-- Size and chunk count of each hypertable (compression is available on the Community edition only).
SELECT h.hypertable_name,
       h.num_chunks,
       h.compression_enabled,
       pg_size_pretty(hypertable_size(format('%I.%I', h.hypertable_schema, h.hypertable_name)::regclass))
           AS total_size,
       hypertable_size(format('%I.%I', h.hypertable_schema, h.hypertable_name)::regclass) AS total_bytes
FROM timescaledb_information.hypertables AS h
ORDER BY total_bytes DESC, h.hypertable_name;

-- name: chunks
\echo '== chunks =='
-- Every chunk with its time range, size and compression state, newest first per table.
SELECT c.hypertable_name, c.chunk_name, c.range_start, c.range_end, c.is_compressed,
       pg_size_pretty(d.total_bytes) AS total_size
FROM timescaledb_information.chunks AS c
JOIN LATERAL chunks_detailed_size(format('%I.%I', c.hypertable_schema, c.hypertable_name)::regclass) AS d
    ON d.chunk_schema = c.chunk_schema AND d.chunk_name = c.chunk_name
ORDER BY c.hypertable_name, c.range_start DESC;

-- name: book_tick_rates
\echo '== book_tick_rates =='
-- Best bid/ask ticks stored per symbol in the last 5 minutes, per second, and the newest tick's age
-- (BOOK_TICKER_MODE=sampled stores at most about one per symbol per second).
SELECT symbol,
       count(*)                          AS ticks_last_5_min,
       round(count(*) / 300.0, 2)        AS ticks_per_second,
       max(time)                         AS latest_tick,
       now() - max(time)                 AS latest_tick_age
FROM book_ticker
WHERE time > now() - INTERVAL '5 minutes'
GROUP BY symbol
ORDER BY symbol;

-- name: book_ticks_per_minute_1h
\echo '== book_ticks_per_minute_1h =='
-- Stored ticks per symbol and minute over the last hour: a drop to zero marks a stalled stream.
SELECT time_bucket(INTERVAL '1 minute', time) AS minute, symbol, count(*) AS ticks
FROM book_ticker
WHERE time > now() - INTERVAL '1 hour'
GROUP BY minute, symbol
ORDER BY minute DESC, symbol;

-- name: feature_freshness
\echo '== feature_freshness =='
-- The newest feature row per symbol and version, and how far behind the current minute it is (the
-- feeder writes features every FEATURE_CACHE_INTERVAL_S, 60 s by default).
SELECT symbol, version,
       max(time)                                   AS latest_feature_minute,
       now() - (max(time) + INTERVAL '1 minute')   AS lag_since_close,
       max(created_at)                             AS last_written
FROM feature_cache
WHERE time > now() - INTERVAL '1 day'
GROUP BY symbol, version
ORDER BY symbol, version;

-- name: candles_without_features_1h
\echo '== candles_without_features_1h =='
-- Closed minutes of the last hour that have a candle but no feature row (any version).
SELECT c.symbol, count(*) AS minutes_without_features, min(c.time) AS first, max(c.time) AS last
FROM candles_1m AS c
WHERE c.time > now() - INTERVAL '1 hour'
  AND c.time < date_trunc('minute', now()) - INTERVAL '2 minutes'
  AND NOT EXISTS (SELECT 1 FROM feature_cache AS f WHERE f.symbol = c.symbol AND f.time = c.time)
GROUP BY c.symbol
ORDER BY c.symbol;

-- name: ingest_rate_1h
\echo '== ingest_rate_1h =='
-- Candles written per 5 minutes over the last hour, by source (ws = live, rest = backfill).
SELECT time_bucket(INTERVAL '5 minutes', ingested_at) AS bucket, source, count(*) AS candles
FROM candles_1m
WHERE time > now() - INTERVAL '1 day' AND ingested_at > now() - INTERVAL '1 hour'
GROUP BY bucket, source
ORDER BY bucket DESC, source;

-- name: scheduled_jobs
\echo '== scheduled_jobs =='
-- The daily jobs (retention, prediction accuracy) and compression policies, from whichever
-- scheduler runs them here (timescaledb | pg_cron | gap_handler), with their last run.
SELECT * FROM quaint_scheduled_jobs();

-- name: retention_settings
\echo '== retention_settings =='
-- The retention each daily cleanup applies (table quaint_config: change it with UPDATE, e.g. book ticks).
SELECT key, value FROM quaint_config ORDER BY key;

-- name: database_sessions
\echo '== database_sessions =='
-- Who is connected to this database and what runs for long (application_name tells the services
-- apart when they set it).
SELECT pid, usename, application_name, client_addr, state, now() - query_start AS running_for,
       wait_event_type, left(query, 120) AS query
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
ORDER BY query_start NULLS LAST;
