-- POST /v1/events: a view or click by a random known user on a popular-weighted item.
package.path = os.getenv("DUET_BENCH_LUA") .. "/?.lua;" .. package.path
local duet = require("duet")
setup, done, delay = duet.setup, duet.done, duet.delay
local next_request
local TYPES = {"view", "view", "click"}

function init(args)
  duet.seed()
  local users = duet.read_lines("DUET_BENCH_USERS")
  local items = duet.read_lines("DUET_BENCH_ITEMS")
  next_request = duet.pool(5000, function(i)
    return duet.post("/v1/events", '{"user_id": ' .. duet.quote(duet.pick(users)) ..
      ', "item_id": ' .. duet.quote(duet.popular(items)) .. ', "type": "' ..
      duet.pick(TYPES) .. '"}')
  end)
end

function request()
  return next_request()
end
