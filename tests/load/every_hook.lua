-- every_hook.lua: a policy with a function for every hook, doing the kind of
-- work an operator's script does (number screening, a per-trunk choice, per-
-- call state, CDR tags). Used by the policy-hook benchmarks (criterion and
-- tests/load/cps.sh --sut vigil-lua) to measure what scripting costs.

local blocked = { "0900", "0137", "0138" }
local failures = {}

local function has_prefix(s, prefix)
  return s:sub(1, #prefix) == prefix
end

-- Least-cost routing by prefix, longest first.
local routes = {
  { prefix = "0049", trunks = { "carrier", "backup" } },
  { prefix = "00", trunks = { "backup" } },
}

function route(call)
  for _, prefix in ipairs(blocked) do
    if has_prefix(call.callee, prefix) then
      return { reject = 403, reason = "Premium Numbers Barred" }
    end
  end
  for _, r in ipairs(routes) do
    if has_prefix(call.callee, r.prefix) then
      return { trunks = r.trunks }
    end
  end
  return nil
end

function call_start(call)
  for _, prefix in ipairs(blocked) do
    if has_prefix(call.caller, prefix) then
      return { reject = 403, reason = "Caller ID Not Allowed" }
    end
  end
  if call.trunk_out == "carrier" then
    return { ttl = 1800 }
  end
  return "accept"
end

function refresh_due(leg)
  if leg.trunk == "carrier" and leg.refresh_count > 100 then
    return "reinvite"
  end
  return "default"
end

function refresh_failed(leg, failure)
  local n = (failures[leg.call_id] or 0) + 1
  failures[leg.call_id] = n
  if n < 2 and (failure.kind == "timeout" or failure.status == 408) then
    return "retry", 2
  end
  return "hangup"
end

function keepalive_tick(contact)
  if contact.sent % 2 == 1 then
    return "send"
  end
  return { payload = "\r\n\r\n" }
end

function hangup(call)
  failures[call.call_id] = nil
  return {
    answered = call.since_answer ~= nil,
    route = has_prefix(call.callee, "00") and "international" or "national",
  }
end

function media_timeout(call)
  if call.on_hold or (call.direction ~= "both" and call.silent_for < 60) then
    return "ignore"
  end
  return "hangup"
end
