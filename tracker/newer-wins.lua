-- Applies one JetStream batch of points to the live state, atomically: an older or duplicate point
-- never overwrites a newer one. Records are state-codec.ts's layout (1-based here: rev 1-4, seq 5-8,
-- recorded 9-16, last seen 17-24, status 39, flags 40, fleet length 41, fleet, then order).
-- KEYS[1] GEO set of online vehicles; KEYS[2] hash of counts per status ("s<status>") and per status
-- and fleet ("s<status>|<fleet>"); KEYS[3] hash order id -> vehicle id.
-- ARGV[1] prefix of the state buckets (a hash per bucket: vehicle id -> record); ARGV[2] Redis
-- Pub/Sub channel prefix or "" (the benchmark's comparison); then five per point: vehicle id,
-- bucket, lon, lat (clamped to what GEOADD takes), the point packed with rev 0.
-- Returns two per point: the new record ("" when the point was not newer) and the previous one.
local geo, counts, orders = KEYS[1], KEYS[2], KEYS[3]
local prefix, channel = ARGV[1], ARGV[2]
-- A lower seq still wins when recorded this much later than the stored point: the vehicle restarted its seq.
local RESTART_MS = 600000
local OFFLINE = 5

local function count(status, fleet, by)
  redis.call('HINCRBY', counts, 's' .. status, by)
  if fleet ~= '' then redis.call('HINCRBY', counts, 's' .. status .. '|' .. fleet, by) end
end

local out = {}
for i = 3, #ARGV, 5 do
  local id, key, v = ARGV[i], prefix .. ARGV[i + 1], ARGV[i + 4]
  local old = redis.call('HGET', key, id)
  local nseq, nrec = struct.unpack('<I4d', v, 5)
  local rev, status, oldStatus, oldFleet, oldOrder = 1, 1, 0, '', ''
  local newer = true
  if old then
    local orev, oseq, orec = struct.unpack('<I4I4d', old)
    newer = nseq > oseq or nrec > orec + RESTART_MS
    rev = (orev + 1) % 4294967296
    status = string.byte(old, 39)
    oldStatus = (string.byte(old, 40) % 2 == 1) and status or OFFLINE
    local ofl = string.byte(old, 41)
    oldFleet = string.sub(old, 42, 41 + ofl)
    oldOrder = string.sub(old, 42 + ofl)
  end
  if newer then
    local ns = string.byte(v, 39)
    if ns ~= 0 then status = ns end
    local fl = string.byte(v, 41)
    local fleet = string.sub(v, 42, 41 + fl)
    local order = string.sub(v, 42 + fl)
    if order == '' then order = oldOrder end
    local rec = struct.pack('<I4', rev) .. string.sub(v, 5, 38) .. string.char(status, 1, fl) .. fleet .. order
    if oldStatus ~= status or oldFleet ~= fleet then
      if old then count(oldStatus, oldFleet, -1) end
      count(status, fleet, 1)
    end
    if order ~= oldOrder then
      if oldOrder ~= '' and redis.call('HGET', orders, oldOrder) == id then redis.call('HDEL', orders, oldOrder) end
      if order ~= '' then redis.call('HSET', orders, order, id) end
    end
    redis.call('GEOADD', geo, ARGV[i + 2], ARGV[i + 3], id)
    redis.call('HSET', key, id, rec)
    if channel ~= '' then redis.call('PUBLISH', channel .. id, rec) end
    out[#out + 1] = rec
  else
    out[#out + 1] = ''
  end
  out[#out + 1] = old or ''
end
return out
