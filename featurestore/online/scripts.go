package online

import "github.com/redis/go-redis/v9"

// writeScript applies one write to one hash, atomically, if the hash is still
// at the version the writer read (see the package documentation).
//
//	KEYS[1]  the hash
//	ARGV     expected version ("0": the hash must not exist), TTL in
//	         milliseconds (0: no expiry), nf, ns, nf pairs (fence field,
//	         offset), ns pairs (field, value), then the fields to delete
//
// It returns the new version (>= 1) when it wrote, and minus the current
// version (<= 0) when the version differs; then it wrote nothing. A fence
// that would move back is an error reply "FENCEBACK <field> <stored offset>",
// and nothing is written either.
//
// All checks come before the first write: a script that fails half-way keeps
// the writes it made, so it must not fail after writing. Offsets are compared
// as decimal strings, by length and then bytewise (Go writes them without
// sign or leading zeros), because Lua numbers are doubles and lose precision
// above 2^53; the version is counted in Lua, exact up to 2^53 writes.
//
// Each redis.call costs a few microseconds in Redis 7, more than the work it
// does here, so a typical write makes three: HMGET of the version and the
// fences, one HSET of the version, fences and fields (the layout of ARGV keeps
// them in one run), and PEXPIRE. unpack is limited to a few thousand values,
// hence the chunks for very large writes.
var writeScript = redis.NewScript(`
local key = KEYS[1]
local nf, ns = tonumber(ARGV[3]), tonumber(ARGV[4])
local get = {'v'}
for j = 1, nf do
  get[j + 1] = ARGV[3 + 2 * j]
end
local cur = redis.call('HMGET', key, unpack(get))
local v = cur[1] or '0'
if v ~= ARGV[1] then
  return -tonumber(v)
end
for j = 1, nf do
  local old, new = cur[j + 1], ARGV[4 + 2 * j]
  if old and (#new < #old or (#new == #old and new < old)) then
    return redis.error_reply('FENCEBACK ' .. ARGV[3 + 2 * j] .. ' ' .. old)
  end
end
local last = 4 + 2 * (nf + ns)
for i = last + 1, #ARGV, 4000 do
  redis.call('HDEL', key, unpack(ARGV, i, math.min(i + 3999, #ARGV)))
end
v = tonumber(v) + 1
if last <= 4004 then
  redis.call('HSET', key, 'v', string.format('%d', v), unpack(ARGV, 5, last))
else
  redis.call('HSET', key, 'v', string.format('%d', v))
  for i = 5, last, 4000 do
    redis.call('HSET', key, unpack(ARGV, i, math.min(i + 3999, last)))
  end
end
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('PEXPIRE', key, ttl)
else
  redis.call('PERSIST', key)
end
return v
`)

// fenceBackPrefix starts writeScript's error reply for a fence moving back.
const fenceBackPrefix = "FENCEBACK"
