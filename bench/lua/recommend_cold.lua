-- POST /v1/recommend, every request a cache miss: a user id never seen before, with a session
-- history of 10 items, so each request runs history parsing + user tower + search.
package.path = os.getenv("DUET_BENCH_LUA") .. "/?.lua;" .. package.path
local duet = require("duet")
setup, done, delay = duet.setup, duet.done, duet.delay
local items
local run = tostring(os.time())
local n = 0

function init(args)
  duet.seed()
  items = duet.read_lines("DUET_BENCH_ITEMS")
end

function request()
  n = n + 1
  local user = "bench-cold-" .. run .. "-" .. (thread_id or 0) .. "-" .. n
  return duet.new_user_request(user, items)
end
