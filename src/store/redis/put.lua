-- The functions shared by the scripts that write records (prepended to them).

-- The liveness rule (TokenRecord::is_valid_at): not revoked, not expired at `now`, from the
-- stored `revoked_at` and `expires_at` fields (false when absent).
local function valid_at(revoked_at, expires_at, now)
  return revoked_at == false and (expires_at == false or tonumber(expires_at) > now)
end

-- The limit rule: a valid token of kind `kind` counts against the limit of a new token of
-- kind `new_kind` always, or only when the kinds match with a per-kind cap.
local function counted(per_kind, kind, new_kind)
  return (not per_kind) or kind == new_kind
end

-- put(p, hex, first, expire_at_ms, dead) writes the hash, the id and owner indexes, the TTL
-- and the purge index.
local function put(p, hex, first, expire_at_ms, dead)
  local fields = {}
  local id, owner
  for i = first, #ARGV, 2 do
    fields[#fields + 1] = ARGV[i]
    fields[#fields + 1] = ARGV[i + 1]
    if ARGV[i] == 'id' then id = ARGV[i + 1] end
    if ARGV[i] == 'owner' then owner = ARGV[i + 1] end
  end
  local tok = p .. 'tok:' .. hex
  local seq = redis.call('INCR', p .. 'seq')
  redis.call('HSET', tok, 'seq', seq, unpack(fields))
  redis.call('SET', p .. 'id:' .. id, hex)
  redis.call('SADD', p .. 'owner:' .. owner, hex)
  if expire_at_ms ~= '' then
    redis.call('PEXPIREAT', tok, expire_at_ms)
    redis.call('PEXPIREAT', p .. 'id:' .. id, expire_at_ms)
  end
  if dead ~= '' then redis.call('ZADD', p .. 'dead', dead, hex) end
end
local function exists(p, hex, id)
  return redis.call('EXISTS', p .. 'tok:' .. hex) == 1 or redis.call('EXISTS', p .. 'id:' .. id) == 1
end
