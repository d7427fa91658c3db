-- wrk script: POST GraphQL bodies read from a file and print a JSON summary line.
--
--   wrk -t1 -c32 -d10s -s post.lua URL -- BODIES_FILE
--
-- Each thread sends the file's lines (one JSON body each) in turn, so a one-line file repeats
-- one query and a long file keeps concurrent requests distinct. The requests are formatted once
-- in init(), so request() only picks the next one.
-- done() prints one line starting with "WRK_JSON " that the harness parses; latencies are in
-- microseconds.

local requests = {}
local sent = 0
local headers = { ["Content-Type"] = "application/json" }

local function read_lines(file_name)
  local lines = {}
  for line in io.lines(file_name) do
    if line ~= "" then
      lines[#lines + 1] = line
    end
  end
  if #lines == 0 then
    error("no request bodies in " .. file_name)
  end
  return lines
end

function init(args)
  if args[1] == nil then
    error("pass the bodies file after --, e.g. wrk ... URL -- bodies.txt")
  end
  for i, body in ipairs(read_lines(args[1])) do
    requests[i] = wrk.format("POST", nil, headers, body)
  end
end

function request()
  sent = sent + 1
  return requests[(sent - 1) % #requests + 1]
end

function done(summary, latency, _)
  local errors = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"mean_us":%.1f,' ..
    '"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"max_us":%.0f,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, summary.bytes, latency.mean,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout))
end
