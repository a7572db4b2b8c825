-- common.lua — helpers shared by the example scripts.
--
-- Loaded with `local common = require("common")`: a module is a Lua file in
-- the same directory as the script that requires it. It runs once per Lua
-- state (each worker has its own) and what it returns is cached, so keep it
-- free of per-call state.

local M = {}

--- Whether `s` starts with `prefix` (plain text, no Lua patterns).
function M.has_prefix(s, prefix)
  return s:sub(1, #prefix) == prefix
end

--- The first of `prefixes` that `number` starts with, or nil.
function M.matching_prefix(number, prefixes)
  for _, prefix in ipairs(prefixes) do
    if M.has_prefix(number, prefix) then
      return prefix
    end
  end
  return nil
end

-- Dialled-number ranges by route class, most specific first. A German
-- numbering plan as the example; adapt to yours.
local CLASSES = {
  { class = "emergency", prefixes = { "110", "112" } },
  { class = "premium", prefixes = { "0900", "0137", "0138", "49900", "49137", "49138" } },
  { class = "mobile", prefixes = { "015", "016", "017", "4915", "4916", "4917" } },
  { class = "international", prefixes = { "00" } },
}

--- The route class of a dialled number: emergency, premium, mobile,
--- international or national.
function M.route_class(number)
  for _, range in ipairs(CLASSES) do
    if M.matching_prefix(number, range.prefixes) then
      return range.class
    end
  end
  return "national"
end

return M
