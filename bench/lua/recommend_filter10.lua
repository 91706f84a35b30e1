-- POST /v1/recommend, warm known users, one genre that about 10% of the catalog holds
-- (DUET_BENCH_GENRE_10, chosen by bench/run.py from the bundle), one random excluded item.
package.path = os.getenv("DUET_BENCH_LUA") .. "/?.lua;" .. package.path
require("duet").search_scenario(os.getenv("DUET_BENCH_GENRE_10"))
