-- Readings the source holds for one feeder and window: the expected count of a complete load.
-- odbc kind, as expect = { query_file = "../checks/meter_readings_source_count.sql", args = [...] }.
SELECT COUNT(*)
FROM source_readings
WHERE feeder = ?
  AND reading_ts >= ?
  AND reading_ts < ?
