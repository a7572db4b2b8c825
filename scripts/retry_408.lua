-- retry_408.lua — a carrier whose proxies answer a session refresh with
-- 408 Request Timeout (or not at all) while they fail over to a standby; a
-- moment later the same refresh goes through. Retry such a refresh once per
-- call, 2 s later; on anything else (or a second failure) hang up, as the
-- built-in policy does.
--
-- The core never retries past the session's expiry, so a late retry cannot
-- keep a dead call alive.

local RETRY_AFTER = 2 -- seconds

-- Call-IDs of calls that have used their retry. A Lua state lives as long as
-- the worker, so the entry is removed when the call hangs up (below);
-- otherwise the table would grow with every call.
local retried = {}

local function transient(failure)
  return failure.kind == "timeout" or (failure.kind == "status" and failure.status == 408)
end

function refresh_failed(leg, failure)
  if transient(failure) and not retried[leg.call_id] then
    retried[leg.call_id] = true
    vigil.log("info", string.format("refresh of %s (leg %s) failed (%s); retrying in %d s",
      leg.call_id, leg.leg, failure.status or failure.kind, RETRY_AFTER))
    return "retry", RETRY_AFTER
  end
  return "hangup"
end

function hangup(call)
  retried[call.call_id] = nil
  return nil -- no CDR fields
end
