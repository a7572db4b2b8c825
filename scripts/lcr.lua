-- lcr.lua — least-cost routing: the dialled number's longest matching
-- prefix picks an ordered list of trunks, cheapest first. Vigil tries them
-- in that order (the next one when a trunk fails the call); a number no
-- prefix matches is routed as the config says (`routes:`, `route_to`).
--
-- The table is the operator's rate sheet: edit it and reload (SIGHUP). The
-- trunk names must be trunks of the config; a name Vigil does not know is
-- logged and counted as a policy error, and the configured routes apply.
-- A German numbering plan as the example.

local RATES = {
  ["0049"] = { "carrier-de", "carrier-intl" },
  ["0044"] = { "carrier-uk", "carrier-intl" },
  ["00"] = { "carrier-intl" },
  ["015"] = { "carrier-mobile", "carrier-de" },
  ["016"] = { "carrier-mobile", "carrier-de" },
  ["017"] = { "carrier-mobile", "carrier-de" },
  ["0"] = { "carrier-de", "carrier-intl" },
}

-- Longest prefixes first, once: no sorting per call.
local PREFIXES = {}
for prefix in pairs(RATES) do
  PREFIXES[#PREFIXES + 1] = prefix
end
table.sort(PREFIXES, function(a, b)
  return #a > #b or (#a == #b and a < b)
end)

function route(call)
  for _, prefix in ipairs(PREFIXES) do
    if call.callee:sub(1, #prefix) == prefix then
      return { trunks = RATES[prefix] }
    end
  end
  return nil -- the configured routes
end
