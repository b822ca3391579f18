-- ARGV: prefix, id, now, channel, new name ('' keeps it), expire_at_ms ('-' unchanged, ''
-- none), dead ('-' unchanged, '' none), n, the n fields to delete, then field/value pairs
-- to set. Returns {'0', the record's field/value pairs...}, {'1'} name taken, {'4'} not
-- found (or not live).
local p, id, now, channel, name = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local expire_at_ms, dead, ndel = ARGV[6], ARGV[7], tonumber(ARGV[8])
local h = redis.call('GET', p .. 'id:' .. id)
if not h then return {'4'} end
local tok = p .. 'tok:' .. h
local f = redis.call('HMGET', tok, 'owner', 'revoked_at', 'expires_at', 'replaced_by', 'name')
if f[1] == false or f[4] ~= false or not valid_at(f[2], f[3], now) then return {'4'} end
if name ~= '' and name ~= f[5] then
  local okey = p .. 'owner:' .. f[1]
  for _, o in ipairs(redis.call('SMEMBERS', okey)) do
    if o ~= h then
      local g = redis.call('HMGET', p .. 'tok:' .. o, 'name', 'expires_at', 'revoked_at', 'replaced_by')
      if g[1] == name and g[4] == false and valid_at(g[3], g[2], now) then return {'1'} end
    end
  end
end
for i = 9, 8 + ndel do redis.call('HDEL', tok, ARGV[i]) end
local sets = {}
for i = 9 + ndel, #ARGV do sets[#sets + 1] = ARGV[i] end
if #sets > 0 then redis.call('HSET', tok, unpack(sets)) end
if expire_at_ms ~= '-' then
  if expire_at_ms == '' then
    redis.call('PERSIST', tok)
    redis.call('PERSIST', p .. 'id:' .. id)
  else
    redis.call('PEXPIREAT', tok, expire_at_ms)
    redis.call('PEXPIREAT', p .. 'id:' .. id, expire_at_ms)
  end
end
if dead ~= '-' then
  if dead == '' then
    redis.call('ZREM', p .. 'dead', h)
  else
    redis.call('ZADD', p .. 'dead', dead, h)
  end
end
redis.call('PUBLISH', channel, h)
local out = {'0'}
for _, v in ipairs(redis.call('HGETALL', tok)) do out[#out + 1] = v end
return out
