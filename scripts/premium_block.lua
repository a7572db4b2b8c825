-- premium_block.lua — bar calls to premium-rate numbers: they are refused
-- with 403 before any trunk is tried, and the CDR says `policy-rejected`.
-- Every other call gets no decision (the configured routes, or a script
-- later in the chain).
--
-- The ranges come from common.lua's German numbering plan (0900, 0137,
-- 0138), in national, international (0049…) and E.164 (+49…) form.

local common = require("common")

local PREMIUM = {}
for _, national in ipairs({ "0900", "0137", "0138" }) do
  local rest = national:sub(2)
  PREMIUM[#PREMIUM + 1] = national
  PREMIUM[#PREMIUM + 1] = "0049" .. rest
  PREMIUM[#PREMIUM + 1] = "+49" .. rest
end

function route(call)
  if common.matching_prefix(call.callee, PREMIUM) then
    vigil.log("info", call.call_id .. ": premium-rate number " .. call.callee .. " barred")
    return { reject = 403, reason = "Premium Numbers Barred" }
  end
  return nil
end
