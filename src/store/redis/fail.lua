-- KEYS: client arrival time, client block. ARGV: interval, tolerance (µs).
-- Returns 0, or the wait (µs) the client is now blocked for.
return charge(KEYS[1], KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]), now_us())
