-- route_bench.lua: the `route` hook of tests/load/cps.sh's `vigil-route` SUT
-- (issue 18's benchmark). It does on every call what a carrier's routing
-- script does: normalise the dialled number to E.164 (scripts/e164.lua's
-- way), refuse premium numbers, then pick the trunks of the longest
-- matching prefix of a rate sheet of about fifty prefixes (scripts/lcr.lua's
-- way: one sorted list, scanned longest first, so a number costs what it
-- would cost an operator who copied the example).
--
-- The benchmark's config has one outbound trunk, `carrier`, so every entry
-- routes there; the rates only order the sheet the way a real one would be
-- kept. The benchmark's caller dials London the international way
-- (0044 20…): the number is rewritten to +44…, and its entry, `+44`, is the
-- 45th of the 50 in scan order, so nearly the whole sheet is read per call.

local COUNTRY_CODE = "49"
local PREMIUM = { "+49900", "+49137", "+49138" }
local CARRIER = { "carrier" }

-- prefix -> { rate in cents per minute, trunks cheapest first }
local RATES = {
  ["+49"] = { 1.2, CARRIER }, ["+4930"] = { 0.8, CARRIER },
  ["+4940"] = { 0.8, CARRIER }, ["+4989"] = { 0.8, CARRIER },
  ["+49221"] = { 0.8, CARRIER }, ["+4969"] = { 0.8, CARRIER },
  ["+49711"] = { 0.8, CARRIER }, ["+49211"] = { 0.8, CARRIER },
  ["+49341"] = { 0.9, CARRIER }, ["+49351"] = { 0.9, CARRIER },
  ["+49511"] = { 0.9, CARRIER }, ["+49911"] = { 0.9, CARRIER },
  ["+49151"] = { 2.1, CARRIER }, ["+49152"] = { 2.1, CARRIER },
  ["+49157"] = { 2.3, CARRIER }, ["+49159"] = { 2.3, CARRIER },
  ["+49160"] = { 2.1, CARRIER }, ["+49162"] = { 2.1, CARRIER },
  ["+49170"] = { 2.0, CARRIER }, ["+49171"] = { 2.0, CARRIER },
  ["+49172"] = { 2.1, CARRIER }, ["+49175"] = { 2.0, CARRIER },
  ["+49176"] = { 2.2, CARRIER }, ["+49177"] = { 2.2, CARRIER },
  ["+49178"] = { 2.2, CARRIER }, ["+49179"] = { 2.2, CARRIER },
  ["+43"] = { 1.9, CARRIER }, ["+436"] = { 4.5, CARRIER },
  ["+41"] = { 2.4, CARRIER }, ["+417"] = { 9.8, CARRIER },
  ["+44"] = { 1.1, CARRIER }, ["+447"] = { 3.2, CARRIER },
  ["+33"] = { 1.0, CARRIER }, ["+336"] = { 2.9, CARRIER },
  ["+337"] = { 2.9, CARRIER }, ["+31"] = { 1.1, CARRIER },
  ["+316"] = { 4.1, CARRIER }, ["+32"] = { 1.3, CARRIER },
  ["+324"] = { 5.6, CARRIER }, ["+34"] = { 1.0, CARRIER },
  ["+346"] = { 2.4, CARRIER }, ["+39"] = { 1.1, CARRIER },
  ["+393"] = { 2.6, CARRIER }, ["+48"] = { 1.4, CARRIER },
  ["+485"] = { 1.9, CARRIER }, ["+1"] = { 0.6, CARRIER },
  ["+1212"] = { 0.5, CARRIER }, ["+7"] = { 6.5, CARRIER },
  ["+90"] = { 4.8, CARRIER }, ["+905"] = { 7.3, CARRIER },
}

-- Longest prefixes first, once at load: no sorting per call.
local PREFIXES = {}
for prefix in pairs(RATES) do
  PREFIXES[#PREFIXES + 1] = prefix
end
table.sort(PREFIXES, function(a, b)
  return #a > #b or (#a == #b and a < b)
end)

local function has_prefix(s, prefix)
  return s:sub(1, #prefix) == prefix
end

--- `number` in E.164, or nil if it is neither national nor international.
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
  local callee = e164(call.callee)
  if callee == nil then
    return nil -- a short code or a name: the configured routes
  end
  for _, prefix in ipairs(PREMIUM) do
    if has_prefix(callee, prefix) then
      return { reject = 403, reason = "Premium Numbers Barred" }
    end
  end
  for _, prefix in ipairs(PREFIXES) do
    if has_prefix(callee, prefix) then
      return { trunks = RATES[prefix][2], callee = callee, caller = e164(call.caller) }
    end
  end
  return nil
end
