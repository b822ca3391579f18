-- ARGV: prefix, then per use: id, time (microseconds), client address, user agent ('' for
-- none). A use later than the record's last_used_at moves it forward, with its address and
-- agent; an earlier one changes nothing.
local p = ARGV[1]
for i = 2, #ARGV, 4 do
  local h = redis.call('GET', p .. 'id:' .. ARGV[i])
  if h then
    local tok = p .. 'tok:' .. h
    if redis.call('EXISTS', tok) == 1 then
      local cur = redis.call('HGET', tok, 'last_used_at')
      if (not cur) or tonumber(cur) < tonumber(ARGV[i + 1]) then
        redis.call('HSET', tok, 'last_used_at', ARGV[i + 1])
        if ARGV[i + 2] == '' then
          redis.call('HDEL', tok, 'last_used_ip')
        else
          redis.call('HSET', tok, 'last_used_ip', ARGV[i + 2])
        end
        if ARGV[i + 3] == '' then
          redis.call('HDEL', tok, 'last_used_agent')
        else
          redis.call('HSET', tok, 'last_used_agent', ARGV[i + 3])
        end
      end
    end
  end
end
return 0
