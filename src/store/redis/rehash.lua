-- ARGV: prefix, id, from (hex), to (hex), channel. Moves the record of `id` from the key of
-- digest `from` to the key of digest `to`, if its digest is still `from`, keeping its TTL,
-- its owner-index entry and its purge-index score. Returns 1 when moved, 0 when the id is
-- unknown or its digest is no longer `from`, -1 when `to` is taken.
local p, id, from, to, channel = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('GET', p .. 'id:' .. id) ~= from then return 0 end
local old = p .. 'tok:' .. from
local new = p .. 'tok:' .. to
if redis.call('EXISTS', old) == 0 then return 0 end
if redis.call('EXISTS', new) == 1 then return -1 end
redis.call('RENAME', old, new)
redis.call('HSET', new, 'hash', to)
redis.call('SET', p .. 'id:' .. id, to, 'KEEPTTL')
local owner = redis.call('HGET', new, 'owner')
if owner then
  if redis.call('SREM', p .. 'owner:' .. owner, from) == 1 then
    redis.call('SADD', p .. 'owner:' .. owner, to)
  end
end
local dead = redis.call('ZSCORE', p .. 'dead', from)
if dead then
  redis.call('ZREM', p .. 'dead', from)
  redis.call('ZADD', p .. 'dead', dead, to)
end
redis.call('PUBLISH', channel, from)
redis.call('PUBLISH', channel, to)
return 1
