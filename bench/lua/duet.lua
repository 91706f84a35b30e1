-- Shared by the bench scripts: id lists, per-thread seeding, optional pacing and a one-line JSON
-- summary that bench/run.py parses. Files and pacing come from the environment:
--   DUET_BENCH_USERS, DUET_BENCH_ITEMS  one id per line (items most popular first)
--   DUET_BENCH_DELAY_MS                 mean pause per connection between requests (paced runs)
local M = {}

function M.read_lines(var)
  local path = os.getenv(var)
  assert(path, var .. " is not set")
  local f = assert(io.open(path, "r"))
  local t = {}
  for line in f:lines() do
    if #line > 0 then t[#t + 1] = line end
  end
  f:close()
  assert(#t > 0, path .. " holds no ids")
  return t
end

function M.quote(s)
  return '"' .. s:gsub('\\', '\\\\'):gsub('"', '\\"') .. '"'
end

function M.pick(list)
  return list[math.random(#list)]
end

-- Popular items more often: the square of a uniform draw favours the head of the list.
function M.popular(list)
  local u = math.random()
  return list[math.floor(u * u * #list) + 1]
end

function M.id_list(list, n)
  local out = {}
  for i = 1, n do out[i] = M.quote(M.popular(list)) end
  return "[" .. table.concat(out, ",") .. "]"
end

local threads = 0
function M.setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

function M.seed()
  math.randomseed((thread_id or 0) * 1000003 + os.time())
end

-- A pre-built pool of requests: building bodies must not be what the bench measures.
function M.pool(n, build)
  local pool = {}
  for i = 1, n do pool[i] = build(i) end
  return function() return pool[math.random(#pool)] end
end

function M.post(path, body)
  return wrk.format("POST", path, {["Content-Type"] = "application/json"}, body)
end

-- The requests of the scenarios, shared by their scripts and the soak's mix.
function M.warm_requests(users)  -- recommend for a random known user
  return M.pool(#users, function(i)
    return M.post("/v1/recommend", '{"user_id": ' .. M.quote(users[i]) .. ', "k": 10}')
  end)
end

local EVENT_TYPES = {"view", "view", "click"}
function M.event_requests(users, items)  -- a view or click by a known user, popular items
  return M.pool(5000, function(i)
    return M.post("/v1/events", '{"user_id": ' .. M.quote(M.pick(users)) ..
      ', "item_id": ' .. M.quote(M.popular(items)) .. ', "type": "' ..
      M.pick(EVENT_TYPES) .. '"}')
  end)
end

-- A warm known user with one random excluded item (defeats the page memo), and a genre filter
-- when `genre` is given: the search runs every time.
function M.search_requests(users, items, genre)
  local filters = genre and (', "filters": {"genres_any": [' .. M.quote(genre) .. ']}') or ""
  return M.pool(4 * #users, function(i)
    return M.post("/v1/recommend", '{"user_id": ' .. M.quote(users[(i - 1) % #users + 1]) ..
      ', "k": 10, "exclude_item_ids": [' .. M.quote(M.pick(items)) .. ']' .. filters .. '}')
  end)
end

-- The whole search scenario (wrk's globals), optionally filtered on `genre`.
function M.search_scenario(genre)
  setup, done, delay = M.setup, M.done, M.delay
  local next_request
  init = function(args)
    M.seed()
    next_request = M.search_requests(M.read_lines("DUET_BENCH_USERS"),
      M.read_lines("DUET_BENCH_ITEMS"), genre)
  end
  request = function() return next_request() end
end

function M.new_user_request(user, items)  -- a user never seen before, 10-item session history
  return M.post("/v1/recommend", '{"user_id": ' .. M.quote(user) .. ', "k": 10, ' ..
    '"history": ' .. M.id_list(items, 10) .. '}')
end

function M.done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'DUET_BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, ' ..
    '"p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f, "errors": {"connect": %d, ' ..
    '"read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
    e.connect, e.read, e.write, e.status, e.timeout))
end

-- Paced runs: exponential pauses, so connections do not fire in lockstep.
local delay_ms = tonumber(os.getenv("DUET_BENCH_DELAY_MS") or "")
if delay_ms and delay_ms > 0 then
  function M.delay()
    return -delay_ms * math.log(1 - math.random())
  end
end

return M
