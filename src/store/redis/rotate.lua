local p, old_id, now, old_exp, retention, channel = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5]), ARGV[6]
local max, per_kind = tonumber(ARGV[11]), ARGV[12] == '1'
local h = redis.call('GET', p .. 'id:' .. old_id)
if not h then return {'4'} end
local tok = p .. 'tok:' .. h
if redis.call('EXISTS', tok) == 0 then return {'4'} end
local f = redis.call('HMGET', tok, 'revoked_at', 'replaced_by', 'expires_at', 'owner', 'kind')
if f[2] ~= false or not valid_at(f[1], f[3], now) then return {'4'} end
if exists(p, ARGV[7], ARGV[8]) then return {'3'} end
local okey = p .. 'owner:' .. f[4]
local ended, n = {}, 0
for _, oh in ipairs(redis.call('SMEMBERS', okey)) do
  local g = redis.call('HMGET', p .. 'tok:' .. oh, 'id', 'kind', 'expires_at', 'revoked_at', 'replaced_by')
  if g[1] == false then
    redis.call('SREM', okey, oh)
  elseif valid_at(g[4], g[3], now) then
    if g[5] == old_id then ended[#ended + 1] = {oh, g[1]} end
    if counted(per_kind, g[2], f[5]) then n = n + 1 end
  end
end
if tonumber(old_exp) > now and #ended == 0 and max >= 0 and n >= max then return {'2'} end
local out = {'0'}
for _, e in ipairs(ended) do
  local etok = p .. 'tok:' .. e[1]
  redis.call('HSET', etok, 'expires_at', ARGV[3])
  local e_ms = string.format('%.0f', math.floor(now / 1000) + retention)
  redis.call('PEXPIREAT', etok, e_ms)
  redis.call('PEXPIREAT', p .. 'id:' .. e[2], e_ms)
  redis.call('ZADD', p .. 'dead', ARGV[3], e[1])
  redis.call('PUBLISH', channel, e[1])
  out[#out + 1] = e[2]
end
put(p, ARGV[7], 13, ARGV[9], ARGV[10])
local exp = old_exp
if f[3] ~= false and tonumber(f[3]) < tonumber(old_exp) then exp = f[3] end
redis.call('HSET', tok, 'replaced_by', ARGV[8], 'expires_at', exp)
local at_ms = string.format('%.0f', math.floor(tonumber(exp) / 1000) + retention)
redis.call('PEXPIREAT', tok, at_ms)
redis.call('PEXPIREAT', p .. 'id:' .. old_id, at_ms)
redis.call('ZADD', p .. 'dead', exp, h)
redis.call('PUBLISH', channel, h)
return out
