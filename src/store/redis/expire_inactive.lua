local p, cutoff, now, channel = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local n = tonumber(ARGV[5])
local release = {}
for i = 6, 5 + n do release[ARGV[i]] = true end
local m = tonumber(ARGV[6 + n])
local kinds = {}
for i = 7 + n, 6 + n + m do kinds[ARGV[i]] = true end
local out = {}
for i = 7 + n + m, #ARGV do
  local h = ARGV[i]
  local tok = p .. 'tok:' .. h
  local f = redis.call('HMGET', tok, 'id', 'kind', 'created_at', 'last_used_at', 'bound_at', 'revoked_at', 'expires_at', 'bound_to')
  if f[1] ~= false and kinds[f[2]] and valid_at(f[6], f[7], now) then
    local active = tonumber(f[3])
    if f[4] ~= false and tonumber(f[4]) > active then active = tonumber(f[4]) end
    if f[5] ~= false and tonumber(f[5]) > active then active = tonumber(f[5]) end
    if active < cutoff then
      if release[f[2]] then
        if f[8] ~= false then
          redis.call('HDEL', tok, 'bound_to', 'bound_at')
          redis.call('PUBLISH', channel, h)
          out[#out + 1] = 'r'
          out[#out + 1] = f[1]
        end
      else
        redis.call('HSET', tok, 'revoked_at', ARGV[3])
        redis.call('ZADD', p .. 'dead', ARGV[3], h)
        redis.call('PUBLISH', channel, h)
        out[#out + 1] = 'v'
        out[#out + 1] = f[1]
      end
    end
  end
end
return out
