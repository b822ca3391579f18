local h = redis.call('GET', ARGV[1] .. 'id:' .. ARGV[2])
if not h then return false end
local tok = ARGV[1] .. 'tok:' .. h
if redis.call('EXISTS', tok) == 0 then return false end
local b = redis.call('HGET', tok, 'bound_to')
if b then return b end
redis.call('HSET', tok, 'bound_to', ARGV[3], 'bound_at', ARGV[4])
return ARGV[3]
