-- POST /v1/recommend for warm known users, one random excluded item each: the page memo never
-- answers, so the search runs on every request (the user's embedding is cached).
package.path = os.getenv("DUET_BENCH_LUA") .. "/?.lua;" .. package.path
local duet = require("duet")
setup, done, delay = duet.setup, duet.done, duet.delay
local next_request

function init(args)
  duet.seed()
  next_request = duet.search_requests(duet.read_lines("DUET_BENCH_USERS"),
    duet.read_lines("DUET_BENCH_ITEMS"), nil)
end

function request()
  return next_request()
end
