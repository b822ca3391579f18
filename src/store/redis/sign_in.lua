-- KEYS: client arrival time, client block, account arrival time, (account, client) pair.
-- ARGV: client interval, client tolerance, account interval, account tolerance,
-- account period, memory (µs). Returns 0 (counted: check the password) or the wait (µs).
local now = now_us()
local c_interval, c_tolerance = tonumber(ARGV[1]), tonumber(ARGV[2])
local a_interval, a_tolerance = tonumber(ARGV[3]), tonumber(ARGV[4])
local a_period, memory = tonumber(ARGV[5]), tonumber(ARGV[6])
local blocked = redis.call('PTTL', KEYS[2])
if blocked > 0 then return blocked * 1000 end
local acct = tonumber(redis.call('GET', KEYS[3]) or now)
if acct < now then acct = now end
-- How long until the account takes one more failure.
local over = acct - now + a_interval - a_tolerance
if over > 0 then
  local pair = redis.call('PTTL', KEYS[4])
  if pair > 0 then return math.max(math.min(over, pair * 1000), 1000000) end
end
local wait = charge(KEYS[1], KEYS[2], c_interval, c_tolerance, now)
if wait > 0 then return wait end
-- The account counts every attempt, over budget or not, but never more than one period
-- beyond its budget.
set_tat(KEYS[3], math.min(acct + a_interval, now + a_tolerance + a_period), now)
redis.call('SET', KEYS[4], '1', 'PX', math.max(math.ceil(memory / 1000), 1))
return 0
