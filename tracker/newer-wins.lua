-- Applies JetStream batches of points to the live state, atomically: an older or duplicate point
-- never overwrites a newer one. Records are state-codec.ts's layout (1-based here: rev 1-4, seq 5-8,
-- recorded 9-16, last seen 17-24, lat 25-28, lon 29-32, status 39, flags 40, fleet length 41,
-- fleet, then order).
-- KEYS[1] GEO set of online vehicles; KEYS[2] hash of counts per status ("s<status>") and per status
-- and fleet ("s<status>|<fleet>"); KEYS[3] hash order id -> vehicle id.
-- ARGV[1] prefix of the state buckets (a hash per bucket: vehicle id -> record); ARGV[2] Redis
-- Pub/Sub channel prefix or "" (the benchmark's comparison); ARGV[3] the points, one blob (one
-- argument instead of five per point: cheaper to send and to parse): per point u16 id length, id,
-- u16 bucket, u16 record length, the point packed with rev 0 (all little-endian).
-- Returns one blob: per point u16 length + the new record (length 0 when the point was not newer),
-- then u16 length + the previous record (0 when none).
local geo, counts, orders = KEYS[1], KEYS[2], KEYS[3]
local prefix, channel, blob = ARGV[1], ARGV[2], ARGV[3]
-- A lower seq still wins when recorded this much later than the stored point: the vehicle restarted its seq.
local RESTART_MS = 600000
local OFFLINE = 5
-- GEOADD refuses latitudes past this (Web Mercator); records keep the exact one.
local MAX_LAT = 85.05112878

local function count(status, fleet, by)
  redis.call('HINCRBY', counts, 's' .. status, by)
  if fleet ~= '' then redis.call('HINCRBY', counts, 's' .. status .. '|' .. fleet, by) end
end

local out = {}
local pos = 1
local size = #blob
while pos <= size do
  local idLen = struct.unpack('<H', blob, pos)
  local id = string.sub(blob, pos + 2, pos + 1 + idLen)
  local bucket, recLen = struct.unpack('<HH', blob, pos + 2 + idLen)
  local v = string.sub(blob, pos + 6 + idLen, pos + 5 + idLen + recLen)
  pos = pos + 6 + idLen + recLen
  local key = prefix .. bucket
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
    local lat, lon = struct.unpack('<i4i4', v, 25)
    lat = lat / 1e7
    if lat > MAX_LAT then lat = MAX_LAT elseif lat < -MAX_LAT then lat = -MAX_LAT end
    redis.call('GEOADD', geo, lon / 1e7, lat, id)
    redis.call('HSET', key, id, rec)
    if channel ~= '' then redis.call('PUBLISH', channel .. id, rec) end
    out[#out + 1] = struct.pack('<H', #rec) .. rec
  else
    out[#out + 1] = '\0\0'
  end
  if old then out[#out + 1] = struct.pack('<H', #old) .. old else out[#out + 1] = '\0\0' end
end
return table.concat(out)
