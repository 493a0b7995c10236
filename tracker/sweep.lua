-- Takes vehicles not heard from since a cutoff offline: out of the GEO set, counted as offline,
-- flagged in their record (rev bumped). Atomic per call, so several trackers may sweep at once: a
-- vehicle goes offline once. Same keys and record layout as newer-wins.lua.
-- KEYS[3] hash bucket -> a lower bound of the last-seen times of the bucket's online vehicles: a
-- bucket whose bound is past the cutoff has nothing stale and is not read (most buckets, most of the
-- time, so a sweep costs little with 100,000 vehicles). Last-seen times only grow, so a bound stays
-- a bound; newer-wins.lua lowers it for a point heard from long ago (a replay).
-- ARGV[1] prefix of the state buckets, ARGV[2] first bucket, ARGV[3] bucket after the last,
-- ARGV[4] cutoff (ms since the epoch), ARGV[5] now, ARGV[6] prefix of the GEO sets per fleet
-- (newer-wins.lua: a vehicle taken offline leaves its fleet's too). Returns two per vehicle taken offline: id, new record.
local geo, counts, bounds = KEYS[1], KEYS[2], KEYS[3]
local prefix, from, to, cutoff, now, fleetGeo = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local OFFLINE = 5

local function count(s, fleet, by)
  redis.call('HINCRBY', counts, 's' .. s, by)
  if fleet ~= '' then redis.call('HINCRBY', counts, 's' .. s .. '|' .. fleet, by) end
end

local out = {}
for b = from, to - 1 do
  local bound = tonumber(redis.call('HGET', bounds, b))
  if not bound or bound < cutoff then
  local key = prefix .. b
  local all = redis.call('HGETALL', key)
  local least = now
  for j = 1, #all, 2 do
    local id, v = all[j], all[j + 1]
    local flags = string.byte(v, 40)
    local seen = struct.unpack('<d', v, 17)
    if flags % 2 == 1 and seen >= cutoff and seen < least then least = seen end
    if flags % 2 == 1 and seen < cutoff then
      local rev = (struct.unpack('<I4', v) + 1) % 4294967296
      local fl = string.byte(v, 41)
      local fleet = string.sub(v, 42, 41 + fl)
      local rec = struct.pack('<I4', rev) .. string.sub(v, 5, 39) .. string.char(flags - 1) .. string.sub(v, 41)
      redis.call('ZREM', geo, id)
      if fleet ~= '' then redis.call('ZREM', fleetGeo .. fleet, id) end
      count(string.byte(v, 39), fleet, -1)
      count(OFFLINE, fleet, 1)
      redis.call('HSET', key, id, rec)
      out[#out + 1] = id
      out[#out + 1] = rec
    end
  end
  redis.call('HSET', bounds, b, least)
  end
end
return out
