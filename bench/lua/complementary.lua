-- GET /v1/items/{item_id}/complementary?k=10 for popular-weighted items (as similar.lua).
package.path = os.getenv("DUET_BENCH_LUA") .. "/?.lua;" .. package.path
local duet = require("duet")
setup, done, delay = duet.setup, duet.done, duet.delay
local next_request

function init(args)
  duet.seed()
  local items = duet.read_lines("DUET_BENCH_ITEMS")
  next_request = duet.pool(3000, function(i)
    return wrk.format("GET", "/v1/items/" .. duet.popular(items) .. "/complementary?k=10")
  end)
end

function request()
  return next_request()
end
