-- wrk script of `make bench` (loadtests/bench.py): POSTs to the bare endpoint or POST /api/v1/orders.
--   wrk -s loadtests/bench.lua ... -- <bare|orders> <tokens file> <products> <key prefix>
-- Each order gets a fresh Idempotency-Key (prefix, thread, counter) and a customer token in turn; the
-- summary is printed as one JSON line for the driver.

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("id", #threads)
end

function init(args)
  kind = args[1]
  products = tonumber(args[3]) or 1
  prefix = args[4] or "bench"
  tokens = {}
  if kind ~= "bare" then
    for line in io.lines(args[2]) do
      if line ~= "" then tokens[#tokens + 1] = line end
    end
  end
  counter = 0
  overloaded = 0
  bare_body = '{"note": "bench"}'
  bare_headers = {["Content-Type"] = "application/json"}
end

function request()
  counter = counter + 1
  if kind == "bare" then
    return wrk.format("POST", "/api/bench/insert", bare_headers, bare_body)
  end
  local n = counter * 7 + id
  local sku = string.format("SKU-%04d", n % products + 1)
  local body = '{"lines": [{"sku": "' .. sku .. '", "quantity": 1}], "payment": {"token": "tok_ok"}, ' ..
    '"shipping_address": {"name": "Bench", "line1": "1 Main St", "city": "London", "postal_code": "N1", ' ..
    '"country": "GB"}}'
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Token " .. tokens[n % #tokens + 1],
    ["Idempotency-Key"] = prefix .. "-" .. id .. "-" .. counter,
  }
  return wrk.format("POST", "/api/v1/orders", headers, body)
end

-- 503s are backpressure (the shop refusing work it cannot finish), counted apart from other errors.
function response(status, headers, body)
  if status == 503 then overloaded = overloaded + 1 end
end

function done(summary, latency, requests)
  local e = summary.errors
  local refused = 0
  for _, thread in ipairs(threads) do refused = refused + (thread:get("overloaded") or 0) end
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "non2xx": %d, "overloaded": %d, "socket_errors": %d, ' ..
    '"p50_ms": %.2f, "p99_ms": %.2f}\n',
    summary.requests, summary.duration, e.status, refused, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
