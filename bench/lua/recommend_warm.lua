-- POST /v1/recommend for random known users (the harness warms every user's cache first).
package.path = os.getenv("DUET_BENCH_LUA") .. "/?.lua;" .. package.path
local duet = require("duet")
setup, done, delay = duet.setup, duet.done, duet.delay
local next_request

function init(args)
  duet.seed()
  local users = duet.read_lines("DUET_BENCH_USERS")
  next_request = duet.pool(#users, function(i)
    return duet.post("/v1/recommend", '{"user_id": ' .. duet.quote(users[i]) .. ', "k": 10}')
  end)
end

function request()
  return next_request()
end
