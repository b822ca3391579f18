-- KEYS: client arrival time, account arrival time, (account, client) pair.
-- ARGV: client interval, account interval (µs). Gives one failure back to each, and
-- forgets the pair.
local now = now_us()
local function give_back(key, interval)
  local tat = tonumber(redis.call('GET', key))
  if tat == nil then return end
  tat = tat - interval
  if tat > now then set_tat(key, tat, now) else redis.call('DEL', key) end
end
give_back(KEYS[1], tonumber(ARGV[1]))
give_back(KEYS[2], tonumber(ARGV[2]))
redis.call('DEL', KEYS[3])
return 0
