-- cdr_tags.lua — a wholesale customer's trunk:
--   * refuse calls whose caller ID is a premium-rate or mass-call number (in
--     Germany these may not be presented as caller ID; such calls are
--     almost always fraud or spoofing) with 403;
--   * refresh sessions towards the carrier every 7.5 minutes instead of the
--     configured interval, because its SBC forgets idle sessions after 20;
--   * tag every CDR with the route class of the dialled number, whether the
--     call was answered and the billed seconds.

local common = require("common")

-- Caller IDs to refuse, in national and in E.164 form (without "+").
local BLOCKED_CALLERS = { "0900", "0137", "0138", "49900", "49137", "49138" }

-- Session-Expires asked for on calls to the carrier: Vigil refreshes at half
-- of it (450 s), well within the carrier's 20 minutes.
local CARRIER_TRUNK = "carrier"
local CARRIER_TTL = 900

function call_start(call)
  local blocked = common.matching_prefix(call.caller, BLOCKED_CALLERS)
  if blocked then
    vigil.log("warn", string.format("call %s refused: caller %s is in blocked range %s",
      call.call_id, call.caller, blocked))
    return { reject = 403, reason = "Caller ID Not Allowed" }
  end
  if call.trunk_out == CARRIER_TRUNK then
    return { ttl = CARRIER_TTL }
  end
  return nil -- anything else: as configured
end

function hangup(call)
  local answered = call.since_answer ~= nil
  return {
    route_class = common.route_class(call.callee),
    answered = answered,
    -- The carrier bills started seconds.
    billsec = answered and math.ceil(call.since_answer) or 0,
  }
end
