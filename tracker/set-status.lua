-- A dispatcher sets a vehicle's status and the order it serves. Same keys and record layout as
-- newer-wins.lua. ARGV[1] the vehicle's state bucket key, ARGV[2] vehicle id, ARGV[3] status,
-- ARGV[4] order id ("" clears it). Returns {new record, previous record}, or nil for an unknown vehicle.
local geo, counts, orders = KEYS[1], KEYS[2], KEYS[3]
local key, id, status, order = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local OFFLINE = 5

local function count(s, fleet, by)
  redis.call('HINCRBY', counts, 's' .. s, by)
  if fleet ~= '' then redis.call('HINCRBY', counts, 's' .. s .. '|' .. fleet, by) end
end

local old = redis.call('HGET', key, id)
if not old then return nil end
local orev = struct.unpack('<I4', old)
local oldStatus = string.byte(old, 39)
local flags = string.byte(old, 40)
local fl = string.byte(old, 41)
local fleet = string.sub(old, 42, 41 + fl)
local oldOrder = string.sub(old, 42 + fl)
local rec = struct.pack('<I4', (orev + 1) % 4294967296) .. string.sub(old, 5, 38) .. string.char(status, flags, fl) .. fleet .. order
if flags % 2 == 1 and oldStatus ~= status then
  count(oldStatus, fleet, -1)
  count(status, fleet, 1)
end
-- The order index is keyed "<fleet>/<order>" (newer-wins.lua): the order is one of the vehicle's fleet.
if order ~= oldOrder then
  if oldOrder ~= '' and redis.call('HGET', orders, fleet .. '/' .. oldOrder) == id then redis.call('HDEL', orders, fleet .. '/' .. oldOrder) end
  if order ~= '' then redis.call('HSET', orders, fleet .. '/' .. order, id) end
end
redis.call('HSET', key, id, rec)
return {rec, old}
