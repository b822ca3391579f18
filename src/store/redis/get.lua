local h = redis.call('GET', ARGV[1] .. 'id:' .. ARGV[2])
if not h then return {} end
return redis.call('HGETALL', ARGV[1] .. 'tok:' .. h)
