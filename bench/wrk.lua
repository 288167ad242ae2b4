-- wrk script for bench/run.sh.
--   BENCH_BODY_FILE     request body (the method becomes POST); unset: GET without a body
--   BENCH_HEADER_FILE   extra request headers, one "Name: value" per line
-- At the end it prints one line "WRKJSON {...}" with the counts and latency percentiles (microseconds), so the
-- driver does not have to parse wrk's human-readable summary.

local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local body_file = os.getenv("BENCH_BODY_FILE")
if body_file and body_file ~= "" then
  wrk.method = "POST"
  wrk.body = (slurp(body_file):gsub("[\r\n]+$", ""))
  wrk.headers["Content-Type"] = "application/json"
end

local header_file = os.getenv("BENCH_HEADER_FILE")
if header_file and header_file ~= "" then
  for line in slurp(header_file):gmatch("[^\r\n]+") do
    local k, v = line:match("^([^:]+):%s*(.*)$")
    if k then wrk.headers[k] = v end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"lat_us":{"p50":%.1f,"p90":%.1f,"p99":%.1f,' ..
    '"max":%.1f,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
