-- POST /v1/recommend, warm known users, one genre that about 1% of the catalog holds
-- (DUET_BENCH_GENRE_1, chosen by bench/run.py from the bundle), one random excluded item.
package.path = os.getenv("DUET_BENCH_LUA") .. "/?.lua;" .. package.path
local duet = require("duet")
setup, done, delay = duet.setup, duet.done, duet.delay
local next_request

function init(args)
  duet.seed()
  next_request = duet.search_requests(duet.read_lines("DUET_BENCH_USERS"),
    duet.read_lines("DUET_BENCH_ITEMS"), os.getenv("DUET_BENCH_GENRE_1"))
end

function request()
  return next_request()
end
