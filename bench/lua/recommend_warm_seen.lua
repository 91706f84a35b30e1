-- POST /v1/recommend for random known users, each with a seen set (the harness posts it, then warms).
package.path = os.getenv("DUET_BENCH_LUA") .. "/?.lua;" .. package.path
local duet = require("duet")
setup, done, delay = duet.setup, duet.done, duet.delay
local next_request

function init(args)
  duet.seed()
  next_request = duet.warm_requests(duet.read_lines("DUET_BENCH_USERS"))
end

function request()
  return next_request()
end
