-- Online vehicles around a point, nearest first, with their records: one round trip for Nearby and
-- for an area watch's snapshot. Same keys and record layout as newer-wins.lua.
-- KEYS[1] GEO set. ARGV[1] prefix of the state buckets, ARGV[2] lon, ARGV[3] lat (clamped for
-- GEOSEARCH), ARGV[4] radius in metres, ARGV[5] how many matches are wanted (0: all), ARGV[6] status
-- mask (bit s set: status s matches; 0: any).
-- Returns {more, id, record, id, record, ...}, nearest first; more = 1 when the search stopped at
-- `wanted` and more candidates may exist. Distances are the caller's to compute: WITHDIST made
-- Redis build a table per candidate for this script, most of them turned away by status.
local geo = KEYS[1]
local prefix, lon, lat, radius = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local wanted, mask = tonumber(ARGV[5]), tonumber(ARGV[6])
local BUCKETS = 4096

-- FNV-1a over the id's bytes, as store.ts bucketOf computes it (exact in doubles: below 2^42).
local function bucketOf(s)
  local h = 2166136261
  for i = 1, #s do
    h = bit.bxor(h, string.byte(s, i))
    if h < 0 then h = h + 4294967296 end
    h = (h * 403 + (h % 256) * 16777216) % 4294967296
  end
  return h % BUCKETS
end

-- Start with a small circle and widen it: in a dense city the nearest matches are close, and
-- GEOSEARCH looks at every member inside the circle even with COUNT. Whatever matches inside a
-- circle is nearer than anything outside it, so the first circle holding enough matches answers.
local full = tonumber(radius)
local r = full
if wanted > 0 then r = math.min(full, 250) end
-- A status filter drops most candidates: ask for more at once rather than search again.
local count = wanted * ((mask == 0) and 2 or 8)
while true do
  local hits
  if wanted == 0 then
    hits = redis.call('GEOSEARCH', geo, 'FROMLONLAT', lon, lat, 'BYRADIUS', r, 'm', 'ASC')
  else
    hits = redis.call('GEOSEARCH', geo, 'FROMLONLAT', lon, lat, 'BYRADIUS', r, 'm', 'ASC', 'COUNT', count)
  end
  local out = {0}
  local n = 0
  for i = 1, #hits do
    local id = hits[i]
    local rec = redis.call('HGET', prefix .. bucketOf(id), id)
    if rec and string.byte(rec, 40) % 2 == 1 and (mask == 0 or bit.band(mask, bit.lshift(1, string.byte(rec, 39))) ~= 0) then
      out[#out + 1] = id
      out[#out + 1] = rec
      n = n + 1
      if wanted > 0 and n >= wanted then
        out[1] = 1
        return out
      end
    end
  end
  if wanted == 0 then return out end
  if #hits >= count then
    count = count * 4
  elseif r < full then
    -- Doubling, not quadrupling: a search a size too far examines 16 times the members, and
    -- those few searches were Nearby's tail (calls over 2 ms in Redis: 1.5% -> 0.2% on a probe).
    r = math.min(full, r * 2)
  else
    return out
  end
end
