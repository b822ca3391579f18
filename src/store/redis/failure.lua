-- Shared by the failure-limit scripts (times in microseconds, on Redis's clock).
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

-- Writes a GCRA arrival time that expires when it no longer matters.
local function set_tat(key, tat, now)
  redis.call('SET', key, string.format('%d', tat), 'PX', math.floor((tat - now) / 1000) + 1)
end

-- Counts one failure of a client (tat_key: its arrival time, block_key: its block).
-- Returns 0 within the budget; otherwise blocks the client and returns the wait (at
-- least a second), leaving the arrival time as it was.
local function charge(tat_key, block_key, interval, tolerance, now)
  local tat = tonumber(redis.call('GET', tat_key) or now)
  if tat < now then tat = now end
  local new_tat = tat + interval
  local ahead = new_tat - now
  if ahead > tolerance then
    local wait = math.max(ahead - tolerance, 1000000)
    redis.call('SET', block_key, '1', 'PX', math.ceil(wait / 1000))
    return wait
  end
  set_tat(tat_key, new_tat, now)
  return 0
end
