-- wrk script for bench/load: POSTs the AdmissionReview in $BODY_FILE as application/json and
-- prints one machine-readable RESULT line (latencies in microseconds).
local file = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.headers["Content-Type"] = "application/json"

-- With BODY_VARY set and not empty, each request's pod gets a generateName of its own (a number
-- put before the body's), so that no two reviews are the same pod and none is answered from a
-- remembered plan (numbered per wrk thread: bench/load runs one).
if (os.getenv("BODY_VARY") or "") ~= "" then
  local _, found = wrk.body:gsub('"generateName":"', "", 1)
  assert(found == 1, "BODY_VARY: the body has no generateName to number")
  local sent = 0
  function request()
    sent = sent + 1
    local body = wrk.body:gsub('"generateName":"', '"generateName":"' .. sent .. "-", 1)
    return wrk.format(nil, nil, nil, body)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d status_errors=%d socket_errors=%d p50=%d p99=%d p999=%d\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
