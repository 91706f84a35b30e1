-- POST /v1/recommend for random known users with genre or year filters and exclusions.
package.path = os.getenv("DUET_BENCH_LUA") .. "/?.lua;" .. package.path
local duet = require("duet")
setup, done, delay = duet.setup, duet.done, duet.delay
local next_request
local GENRES = {"Action", "Comedy", "Drama", "Thriller", "Romance", "Adventure", "Sci-Fi"}

local function filters()
  local kind = math.random(3)
  if kind == 1 then
    return '{"genres_any": [' .. duet.quote(duet.pick(GENRES)) .. ', ' ..
      duet.quote(duet.pick(GENRES)) .. ']}'
  elseif kind == 2 then
    return '{"genres_none": [' .. duet.quote(duet.pick(GENRES)) .. ']}'
  end
  local lo = math.random(1960, 2010)
  return '{"year_min": ' .. lo .. ', "year_max": ' .. (lo + math.random(5, 20)) .. '}'
end

function init(args)
  duet.seed()
  local users = duet.read_lines("DUET_BENCH_USERS")
  local items = duet.read_lines("DUET_BENCH_ITEMS")
  next_request = duet.pool(4 * #users, function(i)
    local user = users[(i - 1) % #users + 1]
    return duet.post("/v1/recommend", '{"user_id": ' .. duet.quote(user) .. ', "k": 10, ' ..
      '"filters": ' .. filters() .. ', "exclude_item_ids": ' .. duet.id_list(items, 3) .. '}')
  end)
end

function request()
  return next_request()
end
