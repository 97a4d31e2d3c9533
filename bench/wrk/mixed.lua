-- wrk script for the soak: alternates a non-streamed and a streamed request on each connection.
-- $BENCH_UNARY_FILE / $BENCH_STREAM_FILE hold the two bodies; both go to the URL's path (the model in
-- the body picks the route). Prints the same BENCH_JSON summary line as post.lua.
local function slurp(name)
  local fh = assert(io.open(os.getenv(name), "rb"))
  local data = fh:read("*a")
  fh:close()
  return data
end
local headers = {
  ["Content-Type"] = "application/json",
  ["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY"),
  ["Accept-Encoding"] = "identity",
}
local bodies = { slurp("BENCH_UNARY_FILE"), slurp("BENCH_STREAM_FILE") }
local n = 0

request = function()
  n = n + 1
  return wrk.format("POST", nil, headers, bodies[(n % 2) + 1])
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,'
      .. '"write_errors":%d,"status_errors":%d,"timeouts":%d,"latency_p50_us":%d,"latency_p99_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
