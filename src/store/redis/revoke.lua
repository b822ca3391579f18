local p, id, at, channel = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local h = redis.call('GET', p .. 'id:' .. id)
if not h then return 0 end
local tok = p .. 'tok:' .. h
if redis.call('EXISTS', tok) == 0 then return 0 end
local f = redis.call('HMGET', tok, 'revoked_at', 'expires_at')
if f[1] ~= false then return 0 end
redis.call('HSET', tok, 'revoked_at', at)
local dead = at
if f[2] ~= false and tonumber(f[2]) < tonumber(at) then dead = f[2] end
redis.call('ZADD', p .. 'dead', dead, h)
redis.call('PUBLISH', channel, h)
return 1
