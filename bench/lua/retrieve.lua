-- POST /v1/retrieve: nearest items to an item (two thirds) or to a short history (one third).
package.path = os.getenv("DUET_BENCH_LUA") .. "/?.lua;" .. package.path
local duet = require("duet")
setup, done, delay = duet.setup, duet.done, duet.delay
local next_request

function init(args)
  duet.seed()
  local items = duet.read_lines("DUET_BENCH_ITEMS")
  next_request = duet.pool(3000, function(i)
    if i % 3 == 0 then
      return duet.post("/v1/retrieve", '{"history": ' .. duet.id_list(items, 5) .. ', "k": 10}')
    end
    return duet.post("/v1/retrieve", '{"item_id": ' .. duet.quote(duet.popular(items)) ..
      ', "k": 10}')
  end)
end

function request()
  return next_request()
end
