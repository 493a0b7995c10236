-- Online vehicles around a point, nearest first, with their records: one round trip for Nearby and
-- for an area watch's snapshot. Same keys and record layout as newer-wins.lua.
-- KEYS[1] GEO set. ARGV[1] prefix of the state buckets, ARGV[2] lon, ARGV[3] lat (clamped for
-- GEOSEARCH), ARGV[4] radius in metres, ARGV[5] how many matches are wanted (at least 1), ARGV[6]
-- status mask (bit s set: status s matches; 0: any), ARGV[7] the most candidates the call may look
-- at, ARGV[8...] fleets a match must be of (none: any fleet).
-- Returns {state, id, record, id, record, ...}, nearest first. state 0: every match in the circle is
-- there; 1: stopped at `wanted`, more may match; 2: stopped at the budget (ARGV[7]) with fewer than
-- `wanted`: the answer would need more work than a call may do. Distances are the caller's to
-- compute: WITHDIST made Redis build a table per candidate for this script, most of them turned away.
-- Why a budget: a token that grants a few vehicles among 40,000 in a 200 km circle made this script
-- widen until it had read every one of them (~0.5 s with Redis blocked). Now no call reads more
-- than the budget, whatever the caller asks.
local geo = KEYS[1]
local prefix, lon, lat, radius = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local wanted, mask, budget = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local BUCKETS = 4096
local fleets = nil
if #ARGV > 7 then
  fleets = {}
  for i = 8, #ARGV do fleets[ARGV[i]] = true end
end

-- FNV-1a over the id's bytes, as bucket.ts's bucketOf (lib/fnv1a.ts) computes it (exact in doubles:
-- below 2^42). The one hash in Lua: the ids come from GEOSEARCH, so no caller can pass their buckets;
-- tracker/test/store.test.ts proves it equal to the TypeScript one.
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
-- A circle is widened only while the next one, as dense as the last, would hold no more members than
-- the budget, so (where vehicles are spread evenly) a search looks at a few times the budget at most.
local full = tonumber(radius)
local r = math.min(full, 250)
-- A status or fleet filter drops most candidates: ask for more at once rather than search again.
local count = math.min(budget, wanted * ((mask == 0 and not fleets) and 2 or 8))
-- Candidates read over all the searches of this call: each widening reads the nearer ones again.
local spent = 0
while true do
  local hits = redis.call('GEOSEARCH', geo, 'FROMLONLAT', lon, lat, 'BYRADIUS', r, 'm', 'ASC', 'COUNT', count)
  local out = {0}
  local n = 0
  for i = 1, #hits do
    local id = hits[i]
    local rec = redis.call('HGET', prefix .. bucketOf(id), id)
    if rec and string.byte(rec, 40) % 2 == 1 and (mask == 0 or bit.band(mask, bit.lshift(1, string.byte(rec, 39))) ~= 0)
      and (not fleets or fleets[string.sub(rec, 42, 41 + string.byte(rec, 41))]) then
      out[#out + 1] = id
      out[#out + 1] = rec
      n = n + 1
      if n >= wanted then
        out[1] = 1
        return out
      end
    end
  end
  spent = spent + #hits
  if #hits >= count then
    -- More members in this circle than asked for: ask for more of them, within the budget.
    if count >= budget or spent >= 2 * budget then
      out[1] = 2
      return out
    end
    count = math.min(budget, count * 4)
  elseif r < full then
    -- Every member of this circle was read: widen it, if the next one (as dense) stays within the
    -- budget. GEOSEARCH looks at every member of the cells around a circle whatever its COUNT, so
    -- the circle itself must stay small enough.
    local next = math.min(full, r * 2)
    if #hits * (next / r) ^ 2 > budget or spent >= 2 * budget then
      out[1] = 2
      return out
    end
    -- Doubling, not quadrupling: a search a size too far examines 16 times the members, and
    -- those few searches were Nearby's tail (calls over 2 ms in Redis: 1.5% -> 0.2% on a probe).
    r = next
  else
    return out
  end
end
