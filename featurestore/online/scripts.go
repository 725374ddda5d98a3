package online

import (
	"context"

	"github.com/redis/go-redis/v9"
)

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
var writeScript = redis.NewScript(writeSource)

const writeSource = `
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
`

// fenceBackPrefix starts writeScript's error reply for a fence moving back.
const fenceBackPrefix = "FENCEBACK"

// blindScript applies writes made without reading (Update.Blind), one per
// hash, each atomically, if the hash holds none of what the write would have
// had to merge with. One call takes several hashes, to spread the cost of a
// call over them; on Redis Cluster they share a slot.
//
//	KEYS     the hashes
//	ARGV     per hash, in the order of KEYS: the number of arguments that
//	         follow for it, then: TTL in milliseconds (0: no expiry), the
//	         highest tile index a tile slot may hold (Update.MaxTile; empty:
//	         no bound), nr, nf, ns, the nr fields the update reads (v, its fences, its data
//	         fields), nf triples (index of the fence field in the fields
//	         read, counting from 1; the lowest offset of the update's events
//	         of that partition; the new fence), ns pairs (index of the field
//	         in the fields read, value), then the fields to delete
//
// A write is made only if every stored fence is below the lowest offset of
// the update's events of its partition and every field to set is absent or a
// tile slot holding another tile: an older tile is overwritten, a newer one
// is kept and its field left out of the write, unless its index is beyond
// the bound: no tile of the writer's tile size can be there yet (ring.go),
// so it is of another tile size, or from a clock far ahead, and must not
// block the tile of the write. A write that sets RingField
// needs the hash to hold the same value there, or not to exist: the tiles of
// a hash laid out in a ring of another size, or before the ring was
// recorded, are no guide to which slot holds what. The reply has one element
// per hash: the new version (>= 1), as writeScript returns, when it wrote;
// else, having written nothing, the values of the nr fields, as HMGET would
// return them, so that the caller can merge and write with writeScript
// without another read.
//
// A slot value starts with its tile index as a zigzag varint (AppendSlot);
// tile indexes below 2^52 in magnitude decode exactly in Lua's doubles. A
// value that does not decode, in the hash or in the write, refuses the write.
var blindScript = redis.NewScript(blindSource)

const blindSource = `
local function tile(s)
  local u, m = 0, 1
  for i = 1, 8 do
    local b = string.byte(s, i)
    if not b then return nil end
    if b < 128 then
      u = u + b * m
      if u % 2 == 0 then return u / 2 end
      return -(u + 1) / 2
    end
    u = u + (b - 128) * m
    m = m * 128
  end
  return nil
end
-- The write of key whose arguments are ARGV[s + 1 .. e].
local function blind(key, s, e)
  local bound = tonumber(ARGV[s + 2])
  local nr, nf, ns = tonumber(ARGV[s + 3]), tonumber(ARGV[s + 4]), tonumber(ARGV[s + 5])
  local cur = redis.call('HMGET', key, unpack(ARGV, s + 6, s + 5 + nr))
  local set = {'v', ''}
  local at = s + 5 + nr
  for j = 1, nf do
    local ri, first = tonumber(ARGV[at + 1]), ARGV[at + 2]
    local old = cur[ri]
    if old and (#old > #first or (#old == #first and old >= first)) then
      return cur
    end
    set[#set + 1] = ARGV[s + 5 + ri]
    set[#set + 1] = ARGV[at + 3]
    at = at + 3
  end
  for j = 1, ns do
    local ri, val = tonumber(ARGV[at + 1]), ARGV[at + 2]
    local old = cur[ri]
    local name = ARGV[s + 5 + ri]
    local keep = true
    if name == 'r' then
      -- The ring: the same one, or a new hash.
      if old ~= val and (old or cur[1]) then
        return cur
      end
      keep = not old
    elseif old then
      if string.sub(name, 1, 2) ~= 't:' then
        return cur
      end
      local ko, kn = tile(old), tile(val)
      if not ko or not kn or ko == kn then
        return cur
      end
      keep = ko < kn or (bound ~= nil and ko > bound)
    end
    if keep then
      set[#set + 1] = ARGV[s + 5 + ri]
      set[#set + 1] = val
    end
    at = at + 2
  end
  if at < e then
    redis.call('HDEL', key, unpack(ARGV, at + 1, e))
  end
  local v = (tonumber(cur[1]) or 0) + 1
  set[2] = string.format('%d', v)
  redis.call('HSET', key, unpack(set))
  local ttl = tonumber(ARGV[s + 1])
  if ttl > 0 then
    redis.call('PEXPIRE', key, ttl)
  else
    redis.call('PERSIST', key)
  end
  return v
end
local out, s = {}, 0
for i = 1, #KEYS do
  local e = s + 1 + tonumber(ARGV[s + 1])
  out[i] = blind(KEYS[i], s + 1, e)
  s = e
end
return out
`

// script is a Lua script as Apply sends it: EVALSHA with the digest, and
// EVAL with the source when the node does not have it.
type script struct {
	sha, src any // boxed once: they are in every call
}

var (
	writeCall = script{sha: writeScript.Hash(), src: writeSource}
	blindCall = script{sha: blindScript.Hash(), src: blindSource}
)

// argsOf returns the start of the arguments of a call of a script on key:
// room for the command and the script, then the key count and the key.
// The script's ARGV follow.
func argsOf(args []any, key any) []any {
	return append(args[:0], nil, nil, 1, key)
}

// cmd returns the command that runs the script with args: the command and
// the script (left for cmd to fill in), the key count, the keys and the
// script's ARGV (see argsOf). It calls the script by digest or, if eval,
// by source.
func (s script) cmd(ctx context.Context, args []any, eval bool) *redis.Cmd {
	if eval {
		args[0], args[1] = "eval", s.src
	} else {
		args[0], args[1] = "evalsha", s.sha
	}
	c := redis.NewCmd(ctx, args...)
	c.SetFirstKeyPos(3) // so that Redis Cluster routes it by its key
	return c
}
