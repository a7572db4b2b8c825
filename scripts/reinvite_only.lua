-- reinvite_only.lua — for a carrier whose gateways list UPDATE in Allow but
-- answer it with 405/501 (or drop it). With `refresh_method: auto` Vigil would
-- pick UPDATE and the refresh would fail; refresh with re-INVITE instead.
--
-- Attach it to that carrier's trunk (`trunks[].policy.lua`): the script then
-- decides only for the legs towards the carrier. Every other decision is left
-- to the config (a missing hook function means "no decision").
--
-- The same effect for every call of the trunk could be had with
-- `refresh_method: reinvite` in its config; a script is the place when the
-- choice depends on the call (see cdr_tags.lua for per-call overrides).

function refresh_due(leg)
  return "reinvite"
end
