-- ARGV: prefix, before, now, limit, then hex digests to judge. Sets expiry_warned_at = now
-- on each live record expiring in (now, before] and not yet warned, up to `limit` of them;
-- returns their digests. Each record is judged and changed inside this script, so no two
-- claims take the same one.
local p, before, now, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
for i = 5, #ARGV do
  if #out >= limit then break end
  local h = ARGV[i]
  local tok = p .. 'tok:' .. h
  local f = redis.call('HMGET', tok, 'id', 'revoked_at', 'expires_at', 'replaced_by', 'expiry_warned_at')
  if f[1] ~= false and f[4] == false and f[5] == false and f[3] ~= false
    and valid_at(f[2], f[3], now) and tonumber(f[3]) <= before then
    redis.call('HSET', tok, 'expiry_warned_at', ARGV[3])
    out[#out + 1] = h
  end
end
return out
