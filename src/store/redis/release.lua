local p, id, now, min, channel = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local h = redis.call('GET', p .. 'id:' .. id)
if not h then return {'4', ''} end
local tok = p .. 'tok:' .. h
if redis.call('EXISTS', tok) == 0 then return {'4', ''} end
local f = redis.call('HMGET', tok, 'bound_to', 'released_at')
if f[1] == false then return {'1', ''} end
if f[2] ~= false and tonumber(f[2]) + min > now then
  return {'2', string.format('%.0f', tonumber(f[2]) + min)}
end
redis.call('HDEL', tok, 'bound_to', 'bound_at')
redis.call('HSET', tok, 'released_at', ARGV[3])
redis.call('PUBLISH', channel, h)
return {'0', ''}
