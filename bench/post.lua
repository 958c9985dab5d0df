-- wrk script for bench/load: POSTs the AdmissionReview in $BODY_FILE as application/json and
-- prints one machine-readable RESULT line (latencies in microseconds).
local file = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"

-- BODY_VARY makes each request's pod differ from the others' (numbered per wrk thread:
-- bench/load runs one):
--   name: a generateName of its own (a number put before the body's), so that no two reviews
--         are the same pod and none is answered from a remembered plan;
--   time: its managedFields entry's time a second after the one before, so that every object's
--         text is new but its kept fields are the same: a workload's pods created a second apart.
local function vary(pattern, replacement)
  local _, found = wrk.body:gsub(pattern, "", 1)
  assert(found == 1, "BODY_VARY: the body has no " .. pattern .. " to change")
  local sent = 0
  function request()
    sent = sent + 1
    local body = wrk.body:gsub(pattern, replacement(sent), 1)
    return wrk.format(nil, nil, nil, body)
  end
end

local mode = os.getenv("BODY_VARY") or ""
if mode == "name" then
  vary('"generateName":"', function(sent) return '"generateName":"' .. sent .. "-" end)
elseif mode == "time" then
  vary('"time":"[^"]*"', function(sent)
    return '"time":"' .. os.date("!%Y-%m-%dT%H:%M:%SZ", 1800000000 + sent) .. '"'
  end)
else
  assert(mode == "", "BODY_VARY: name, time or empty, not " .. mode)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d status_errors=%d socket_errors=%d p50=%d p99=%d p999=%d\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
