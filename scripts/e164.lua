-- e164.lua — number normalisation for a carrier that takes E.164 only: the
-- PBX dials and presents national (0…) and international (00…) numbers,
-- the carrier wants +<country code><number> in the Request-URI and in From.
--
-- A call from the PBX goes to the carrier (then its backup) with both
-- numbers rewritten; numbers already in E.164 pass unchanged. Short codes
-- (emergency, service numbers) and calls from other trunks get no decision:
-- the configured routes apply.

local COUNTRY_CODE = "49"
local FROM = "pbx"
local TRUNKS = { "carrier", "carrier-backup" }

--- `number` in E.164, or nil if it is not a national or international
--- number (a short code, a name).
local function e164(number)
  if number:match("^%+%d+$") then
    return number
  end
  local international = number:match("^00(%d+)$")
  if international then
    return "+" .. international
  end
  local national = number:match("^0(%d+)$")
  if national then
    return "+" .. COUNTRY_CODE .. national
  end
  return nil
end

function route(call)
  if call.trunk_in ~= FROM then
    return nil
  end
  local callee = e164(call.callee)
  if callee == nil then
    return nil
  end
  return { trunks = TRUNKS, callee = callee, caller = e164(call.caller) }
end
