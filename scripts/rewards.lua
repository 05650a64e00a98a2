-- wrk script for `POST /v1/rewards` (used by scripts/loadtest.sh): one reward per request
-- against exposures the server really logged, with the metric of each one's experiment.
--
-- Environment (read in each thread):
--   STRATEGIST_KEY   the API key with scope `assign` (required)
--   REWARD_IDS       a file of "EXPOSURE_ID EXPERIMENT" lines (required); requests cycle
--                    through it, each with a fresh idempotency key, so every reward is new
--
-- No answer is handed to Lua; the summary is one line starting with "RESULT".

local key = os.getenv("STRATEGIST_KEY") or error("STRATEGIST_KEY is not set")
local ids_path = os.getenv("REWARD_IDS") or error("REWARD_IDS is not set")

local threads = {}
local counter = 0

function setup(thread)
   counter = counter + 1
   thread:set("tid", counter)
   table.insert(threads, thread)
end

-- Each experiment's primary metric (experiments/*.toml) and a plausible value.
local metrics = {
   ["checkout-offer"] = function() return "profit", string.format("%.2f", 15 + math.random() * 185) end,
   ["homepage-banner"] = function() return "purchase", "1" end,
   ["winback-offer"] = function() return "reactivation", "1" end,
}

local ids, exps = {}, {}
local prefix = nil
local next_row, sent = 1, 0

function init(args)
   for line in io.lines(ids_path) do
      local id, exp = string.match(line, "^(%S+)%s+(%S+)")
      if id and metrics[exp] then
         table.insert(ids, id)
         table.insert(exps, exp)
      end
   end
   assert(#ids > 0, "no usable exposure ids in " .. ids_path)
   math.randomseed(os.time() * 1000 + (tid or 0))
   next_row = 1 + ((tid or 1) - 1) * 7919 % #ids
   local host = wrk.host .. (wrk.port and (":" .. wrk.port) or "")
   prefix = "POST /v1/rewards HTTP/1.1\r\nHost: " .. host
      .. "\r\nContent-Type: application/json\r\nAuthorization: Bearer " .. key .. "\r\nContent-Length: "
end

function request()
   local i = next_row
   next_row = next_row % #ids + 1
   sent = sent + 1
   local metric, value = metrics[exps[i]]()
   local body = string.format(
      '{"exposure_id":"%s","metric":"%s","value":%s,"idempotency_key":"load-%d-%d-%d"}',
      ids[i], metric, value, tid or 0, os.time(), sent)
   return prefix .. #body .. "\r\n\r\n" .. body
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d non2xx=%d socket_errors=%d logged=0 unlogged=0 other=0\n",
      summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max,
      e.status, e.connect + e.read + e.write + e.timeout))
end
