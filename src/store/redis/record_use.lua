local p = ARGV[1]
for i = 2, #ARGV, 2 do
  local h = redis.call('GET', p .. 'id:' .. ARGV[i])
  if h then
    local tok = p .. 'tok:' .. h
    if redis.call('EXISTS', tok) == 1 then
      local cur = redis.call('HGET', tok, 'last_used_at')
      if (not cur) or tonumber(cur) < tonumber(ARGV[i + 1]) then
        redis.call('HSET', tok, 'last_used_at', ARGV[i + 1])
      end
    end
  end
end
return 0
