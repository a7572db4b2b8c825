-- time_of_day.lua — office hours: calls to the front desk (callee 100)
-- ring the office PBX on weekdays from 08:00 to 18:00 and go to the
-- answering service outside them. Other numbers get no decision.
--
-- `os.date("*t")` is the daemon's local time (its TZ), so the hours follow
-- daylight saving time; use `os.date("!*t")` for UTC. The sandbox keeps
-- only the clock of `os` (time, date, difftime, clock).

local FRONT_DESK = "100"
local OPEN, CLOSE = 8, 18 -- hours, local time
local OFFICE = { "office-pbx", "answering-service" }
local AFTER_HOURS = { "answering-service" }

--- Monday to Friday (`wday` counts from Sunday = 1), OPEN:00 to CLOSE:00.
local function office_open(now)
  local weekday = now.wday >= 2 and now.wday <= 6
  return weekday and now.hour >= OPEN and now.hour < CLOSE
end

function route(call)
  if call.callee ~= FRONT_DESK then
    return nil
  end
  if office_open(os.date("*t")) then
    return { trunks = OFFICE }
  end
  return { trunks = AFTER_HOURS }
end
