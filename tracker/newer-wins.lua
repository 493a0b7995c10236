-- Applies JetStream batches of points to the live state, atomically: the newest fix by its recorded
-- time wins; an older one, a duplicate (a redelivery) or a second fix with the same recorded time
-- changes nothing. The same time keeps the first, as history does (ON CONFLICT DO NOTHING on
-- (vehicle_id, recorded_at)), so both agree on which point it is. Seq plays no part: a vehicle that
-- reboots restarts its seqs at 1, and its next fix must still win. Records are state-codec.ts's layout (1-based here: rev 1-4, seq 5-8,
-- recorded 9-16, last seen 17-24, lat 25-28, lon 29-32, status 39, flags 40, fleet length 41,
-- fleet, then order).
-- KEYS[1] GEO set of online vehicles; KEYS[2] hash of counts per status ("s<status>") and per status
-- and fleet ("s<status>|<fleet>"); KEYS[3] hash "<fleet>/<order>" -> vehicle id (an order id is
-- unique within its fleet only: lib/auth.ts orderGrant); KEYS[4] the sweep's lower
-- bounds of last-seen per bucket (sweep.lua).
-- ARGV[1] prefix of the state buckets (a hash per bucket: vehicle id -> record); ARGV[2] Redis
-- Pub/Sub channel prefix or "" (the benchmark's comparison); ARGV[4] see oldBefore below; ARGV[5] prefix
-- of the GEO sets per fleet (prefix .. fleet: that fleet's online vehicles, which a fleet token's
-- search reads instead of every fleet's: its cost follows its grant). ARGV[3] the points, one blob (one
-- argument instead of five per point: cheaper to send and to parse): per point u16 id length,
-- u16 record length, u8 length + the bucket in decimal (the key is then a concatenation, not a
-- printf of a number), the id, the point packed with rev 0 (all little-endian), then u8
-- length + longitude and u8 length + latitude as GEOADD takes them (text: see point-blob.ts).
-- Returns one value per point: 0 when it was not newer (nothing changed), else what the vehicle
-- was before it: its previous record, or false (nil) when it is new. The caller makes the new record
-- from that and the point, as newRecord below does (store.ts): building and sending it here cost
-- Redis more than the rest of the point.
local geo, counts, orders, bounds = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, channel, blob, fleetGeo = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
-- A point heard from before this (ms) lowers its bucket's sweep bound (a replay after an outage);
-- fresh points leave the bound alone, which costs nothing.
local oldBefore = tonumber(ARGV[4])
local OFFLINE = 5
-- Vehicles whose fleet changed in this call -> their fleet now ('' for none).
local movedTo = {}

local unpack_table = unpack
local unpack, sub, byte, char, pack, call = struct.unpack, string.sub, string.byte, string.char, struct.pack, redis.call

local function count(status, fleet, by)
  call('HINCRBY', counts, 's' .. status, by)
  if fleet ~= '' then call('HINCRBY', counts, 's' .. status .. '|' .. fleet, by) end
end

-- The record after point v (rev 0) over old (nil: a new vehicle), with the counts and the order
-- index brought in step. The status 0 in a point keeps the stored one; an empty order keeps the stored
-- one while the fleet stays (a vehicle moved to another fleet does not take the old fleet's order along).
local function newRecord(v, old, rev, id)
  local status, oldStatus, oldFleet, oldOrder = 1, 0, '', ''
  if old then
    status = byte(old, 39)
    oldStatus = (byte(old, 40) % 2 == 1) and status or OFFLINE
    local ofl = byte(old, 41)
    oldFleet = sub(old, 42, 41 + ofl)
    oldOrder = sub(old, 42 + ofl)
  end
  local ns, _, fl = byte(v, 39, 41)
  if ns ~= 0 then status = ns end
  local fleet = sub(v, 42, 41 + fl)
  local order = sub(v, 42 + fl)
  if order == '' and fleet == oldFleet then order = oldOrder end
  if oldStatus ~= status or oldFleet ~= fleet then
    if old then count(oldStatus, oldFleet, -1) end
    count(status, fleet, 1)
  end
  -- Out of the old fleet's GEO set (added to the new one's with the call's GEOADDs, below).
  if old and oldFleet ~= fleet then
    if oldFleet ~= '' then call('ZREM', fleetGeo .. oldFleet, id) end
    movedTo[id] = fleet
  end
  if order ~= oldOrder or fleet ~= oldFleet then
    local oldKey = oldFleet .. '/' .. oldOrder
    if oldOrder ~= '' and call('HGET', orders, oldKey) == id then call('HDEL', orders, oldKey) end
    if order ~= '' then call('HSET', orders, fleet .. '/' .. order, id) end
  end
  return pack('<I4', rev) .. sub(v, 5, 38) .. char(status, 1, fl) .. fleet .. order
end

local out = {}
local n = 0
local geoArgs, gn = {}, 0
-- The GEOADD arguments of each fleet's set, and how many.
local byFleet, fleetN = {}, {}
local pos = 1
local size = #blob
while pos <= size do
  local idLen, recLen, bucketLen = unpack('<HHB', blob, pos)
  local bucket = sub(blob, pos + 5, pos + 4 + bucketLen)
  local idEnd = pos + 4 + bucketLen + idLen
  local id = sub(blob, idEnd - idLen + 1, idEnd)
  local v = sub(blob, idEnd + 1, idEnd + recLen)
  pos = idEnd + recLen + 1
  local lonLen = byte(blob, pos)
  local lonText = sub(blob, pos + 1, pos + lonLen)
  pos = pos + 1 + lonLen
  local latLen = byte(blob, pos)
  local latText = sub(blob, pos + 1, pos + latLen)
  pos = pos + 1 + latLen
  local key = prefix .. bucket
  local old = call('HGET', key, id)
  local nrec, seen = unpack('<dd', v, 9)
  local rec
  n = n + 1
  if old then
    local orev, _, orec = unpack('<I4I4d', old)
    if nrec > orec then
      local rev = (orev + 1) % 4294967296
      local ns = byte(v, 39)
      local os, oflags = byte(old, 39, 40)
      -- Most points: online before and after, same status, fleet and order (the tails are equal),
      -- so nothing to count or index.
      if oflags % 2 == 1 and sub(old, 41) == sub(v, 41) then
        if ns == os then
          rec = pack('<I4', rev) .. sub(v, 5)
        elseif ns == 0 then
          rec = pack('<I4', rev) .. sub(v, 5, 38) .. char(os) .. sub(v, 40)
        end
      end
      if not rec then rec = newRecord(v, old, rev, id) end
      out[n] = old
    else
      out[n] = 0
    end
  else
    rec = newRecord(v, nil, 1, id)
    out[n] = false
  end
  if rec then
    if seen < oldBefore then
      local bound = tonumber(call('HGET', bounds, bucket))
      if bound and bound > seen then call('HSET', bounds, bucket, seen) end
    end
    -- GEOADD once for the whole call (below): one command for many members costs less than many.
    gn = gn + 3
    geoArgs[gn - 2], geoArgs[gn - 1], geoArgs[gn] = lonText, latText, id
    local fl = byte(rec, 41)
    if fl > 0 then
      local fleet = sub(rec, 42, 41 + fl)
      local list = byFleet[fleet]
      if not list then
        list = {}
        byFleet[fleet], fleetN[fleet] = list, 0
      end
      local m = fleetN[fleet] + 3
      fleetN[fleet] = m
      list[m - 2], list[m - 1], list[m] = lonText, latText, id
    end
    call('HSET', key, id, rec)
    if channel ~= '' then call('PUBLISH', channel .. id, rec) end
  end
end
-- In chunks: Lua's unpack takes a few thousand values at most. A vehicle twice in the call: the later
-- GEOADD of the pair wins, as it should.
for i = 1, gn, 3000 do
  call('GEOADD', geo, unpack_table(geoArgs, i, math.min(gn, i + 2999)))
end
for fleet, list in pairs(byFleet) do
  local m = fleetN[fleet]
  if next(movedTo) then
    -- A vehicle that changed fleet within this call joins only the fleet of its last point.
    local kept, k = {}, 0
    for i = 1, m, 3 do
      local to = movedTo[list[i + 2]]
      if to == nil or to == fleet then
        kept[k + 1], kept[k + 2], kept[k + 3] = list[i], list[i + 1], list[i + 2]
        k = k + 3
      end
    end
    list, m = kept, k
  end
  for i = 1, m, 3000 do
    call('GEOADD', fleetGeo .. fleet, unpack_table(list, i, math.min(m, i + 2999)))
  end
end
return out
