-- The soak's traffic from one wrk: 80% recommend for known users (warm), 10% recommend for a
-- user never seen before with a 10-item history (user tower, cache writes), 10% events
-- (history appends, cache invalidation). One script, so the closed-loop capacity and the
-- paced half of it are measured on the same mix.
package.path = os.getenv("DUET_BENCH_LUA") .. "/?.lua;" .. package.path
local duet = require("duet")
setup, done, delay = duet.setup, duet.done, duet.delay
local warm, event, items
local run = tostring(os.time())
local n = 0

function init(args)
  duet.seed()
  local users = duet.read_lines("DUET_BENCH_USERS")
  items = duet.read_lines("DUET_BENCH_ITEMS")
  warm = duet.warm_requests(users)
  event = duet.event_requests(users, items)
end

function request()
  local u = math.random()
  if u < 0.8 then return warm() end
  if u < 0.9 then return event() end
  n = n + 1
  return duet.new_user_request("soak-new-" .. run .. "-" .. (thread_id or 0) .. "-" .. n, items)
end
