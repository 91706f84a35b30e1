-- POST /v1/recommend for warm known users, one random excluded item each: the page memo never
-- answers, so the search runs on every request (the user's embedding is cached).
package.path = os.getenv("DUET_BENCH_LUA") .. "/?.lua;" .. package.path
require("duet").search_scenario(nil)
