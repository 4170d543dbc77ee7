-- wrk script of the API load benchmark (driven by bench/api_load.py, not a benchmark itself).
--
-- Run with one thread per connection (`wrk -t N -c N`): each thread then holds ONE client, so
-- on turbofan routes each thread is one engine unit posting its cycles in order, as a real
-- client does. Environment:
--   MH_BENCH_TOKEN        bearer token
--   MH_BENCH_BODY_FILE    a static JSON body (echo and vibration routes), or
--   MH_BENCH_ROWS_FILE    turbofan: one `"settings": [...], "sensors": [...]` fragment per line
--   MH_BENCH_UNIT_PREFIX  turbofan: unit ids are PREFIX-<thread number>
--   MH_BENCH_FIRST_CYCLE  turbofan: the first cycle this run posts (earlier ones were warm-up)
--   MH_BENCH_RESULT       where `done` writes the figures as JSON

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  table.insert(threads, thread)
  next_id = next_id + 1
end

local function read_file(path)
  local handle = assert(io.open(path, "rb"))
  local text = handle:read("*a")
  handle:close()
  return text
end

function init(args)
  headers = {
    ["Authorization"] = "Bearer " .. os.getenv("MH_BENCH_TOKEN"),
    ["Content-Type"] = "application/json",
  }
  failures = 0
  local rows_file = os.getenv("MH_BENCH_ROWS_FILE")
  if rows_file and rows_file ~= "" then
    rows = {}
    for line in io.lines(rows_file) do
      table.insert(rows, line)
    end
    unit = os.getenv("MH_BENCH_UNIT_PREFIX") .. "-" .. id
    cycle = tonumber(os.getenv("MH_BENCH_FIRST_CYCLE")) - 1
  else
    body = read_file(os.getenv("MH_BENCH_BODY_FILE"))
  end
end

function request()
  if rows then
    cycle = cycle + 1
    local row = rows[(cycle - 1) % #rows + 1]
    local payload = string.format('{"unit_id": "%s", "cycle": %d, %s}', unit, cycle, row)
    return wrk.format("POST", nil, headers, payload)
  end
  return wrk.format("POST", nil, headers, body)
end

function response(status, headers, body)
  if status ~= 200 then
    failures = failures + 1
  end
end

function done(summary, latency, requests)
  local failed = 0
  for _, thread in ipairs(threads) do
    failed = failed + thread:get("failures")
  end
  local errors = summary.errors
  local transport = errors.connect + errors.read + errors.write + errors.timeout
  local out = assert(io.open(os.getenv("MH_BENCH_RESULT"), "w"))
  out:write(string.format(
    '{"requests": %d, "duration_us": %d, "failures": %d, "transport_errors": %d, '
      .. '"p50_us": %d, "p99_us": %d, "max_us": %d}',
    summary.requests, summary.duration, failed, transport,
    latency:percentile(50), latency:percentile(99), latency.max
  ))
  out:close()
end
