-- POST /v1/events: a view or click by a random known user on a popular-weighted item.
package.path = os.getenv("DUET_BENCH_LUA") .. "/?.lua;" .. package.path
local duet = require("duet")
setup, done, delay = duet.setup, duet.done, duet.delay
local next_request

function init(args)
  duet.seed()
  local users = duet.read_lines("DUET_BENCH_USERS")
  next_request = duet.event_requests(users, duet.read_lines("DUET_BENCH_ITEMS"))
end

function request()
  return next_request()
end
