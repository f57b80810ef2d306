-- Readings of one feeder committed in the sink for one window, start inclusive, end exclusive.
-- sql kind: args = { feeder = "north", start = "{start}", end = "{end}" }, reading_ts holds UTC.
SELECT COUNT(*)
FROM meter_readings
WHERE feeder = :feeder
  AND reading_ts >= :start
  AND reading_ts < :end
