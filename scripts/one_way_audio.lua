-- one_way_audio.lua — dead media on relayed calls (`media: relay`) for a
-- trunk whose calls often go quiet one way without being dead: a caller who
-- only listens to a conference, a gateway that suppresses silence. Vigil
-- asks `media_timeout` when a call's RTP has been silent for `media.timeout`
-- (one direction or both, per `timeout_mode`); by default it hangs up.
--
-- Here one-way silence is kept for up to ten minutes (the hook is asked again
-- after every further `media.timeout` of silence, with a longer `silent_for`),
-- a held call is kept (its session timer still proves the signalling alive),
-- and both directions silent ends the call, as the built-in policy does. The
-- CDR of a call that dead media ended says so, and which media had died.

local ONE_WAY_GRACE = 600 -- seconds

-- The silent direction per Call-ID, as last reported. A Lua state lives as
-- long as the worker, so the entry is removed when the call hangs up.
local silent = {}

function media_timeout(call)
  local first = silent[call.call_id] == nil
  silent[call.call_id] = call.direction
  local keep = call.on_hold
    or (call.direction ~= "both" and call.silent_for < ONE_WAY_GRACE)
  if not keep then
    return nil -- no decision: Vigil hangs up
  end
  if first then
    vigil.log("info", string.format("%s: %s media silent for %.0f s; keeping the call",
      call.call_id, call.direction, call.silent_for))
  end
  return "ignore"
end

function hangup(call)
  local direction = silent[call.call_id]
  silent[call.call_id] = nil
  if call.end_reason == "media-timeout" then
    return { media = "dead", silent = direction }
  end
  return nil
end
