local p, hex, id, owner, name, kind = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local now, max, per_kind = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9] == '1'
if exists(p, hex, id) then return 3 end
local okey = p .. 'owner:' .. owner
local n = 0
for _, h in ipairs(redis.call('SMEMBERS', okey)) do
  local f = redis.call('HMGET', p .. 'tok:' .. h, 'name', 'kind', 'expires_at', 'revoked_at', 'replaced_by')
  if f[1] == false then
    redis.call('SREM', okey, h)
  elseif valid_at(f[4], f[3], now) then
    if f[5] == false and f[1] == name then return 1 end
    if counted(per_kind, f[2], kind) then n = n + 1 end
  end
end
if max >= 0 and n >= max then return 2 end
put(p, hex, 12, ARGV[10], ARGV[11])
return 0
