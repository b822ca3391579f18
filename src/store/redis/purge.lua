local p = ARGV[1]
local n = 0
for _, h in ipairs(redis.call('ZRANGEBYSCORE', p .. 'dead', '-inf', ARGV[2])) do
  local tok = p .. 'tok:' .. h
  local f = redis.call('HMGET', tok, 'id', 'owner')
  if f[1] ~= false then
    redis.call('DEL', tok, p .. 'id:' .. f[1])
    redis.call('SREM', p .. 'owner:' .. f[2], h)
    n = n + 1
  end
  redis.call('ZREM', p .. 'dead', h)
end
return n
