local okey = ARGV[1] .. 'owner:' .. ARGV[2]
local out = {}
for _, h in ipairs(redis.call('SMEMBERS', okey)) do
  local r = redis.call('HGETALL', ARGV[1] .. 'tok:' .. h)
  if #r == 0 then redis.call('SREM', okey, h) else out[#out + 1] = r end
end
return out
