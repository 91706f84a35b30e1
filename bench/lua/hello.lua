-- Baseline: GET /hello on the bare FastAPI app.
package.path = os.getenv("DUET_BENCH_LUA") .. "/?.lua;" .. package.path
local duet = require("duet")
setup, done, delay = duet.setup, duet.done, duet.delay
wrk.method = "GET"
wrk.path = "/hello"
