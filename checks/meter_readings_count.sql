-- Readings of one feeder committed in the sink for one window, start inclusive, end exclusive.
-- odbc kind: bind args = [feeder, "{start}", "{end}"] in this order, reading_ts holds UTC.
SELECT COUNT(*)
FROM meter_readings
WHERE feeder = ?
  AND reading_ts >= ?
  AND reading_ts < ?
