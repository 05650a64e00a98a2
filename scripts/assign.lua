-- wrk script for `POST /v1/assign` (used by scripts/loadtest.sh).
--
-- Each request picks one of the three example experiments (experiments/*.toml) and a
-- storefront-like context, with unit ids drawn from a large population so sticky
-- experiments mostly see new units (a sticky insert per request) and some repeat ones:
--
--   checkout-offer   50%  user ids,    not sticky, every request logged
--   homepage-banner  35%  session ids, sticky,     every request logged
--   winback-offer    15%  user ids,    sticky, targeted (days_since_last_order >= 90 and
--                         country in DE/FR/GB/US) and on 50% of units: about a third
--                         of these requests are logged, the rest answered unlogged
--
-- Environment (read in each thread):
--   STRATEGIST_KEY   the API key with scope `assign` (required)
--   ASSIGN_IDS_DIR   if set, every returned exposure_id is written, with its experiment, to
--                    ASSIGN_IDS_DIR/ids-<thread>.txt as "ID EXPERIMENT" lines (the load
--                    test checks each id is stored, then reports rewards against them)
--   ASSIGN_READ      if set to 1 (or ASSIGN_IDS_DIR is set), each answer is parsed to count
--                    logged / unlogged answers. Otherwise no `response` callback is defined,
--                    so wrk hands no answer to Lua: the generator then costs about what it
--                    costs for the ceiling, and the counts come from the server's metrics.
--   ASSIGN_RESULT    if set, the summary line is appended to this file as well
--   ASSIGN_MIX       shares of checkout,homepage,winback [default: 50,35,15], e.g. 100,0,0
--                    for the non-sticky experiment alone
--   ASSIGN_DELAY_MS  if set, each connection waits this long before each request (wrk's
--                    `delay` hook): an offered rate of about connections / delay
--
-- The summary is one line starting with "RESULT", key=value pairs, latencies in µs.

local key = os.getenv("STRATEGIST_KEY") or error("STRATEGIST_KEY is not set")
local ids_dir = os.getenv("ASSIGN_IDS_DIR")

local mix = {}
for n in string.gmatch(os.getenv("ASSIGN_MIX") or "50,35,15", "[%d.]+") do
   table.insert(mix, tonumber(n))
end
assert(#mix == 3, "ASSIGN_MIX must be three numbers: checkout,homepage,winback")
local mix_total = mix[1] + mix[2] + mix[3]
local cut1, cut2 = mix[1] / mix_total, (mix[1] + mix[2]) / mix_total

local threads = {}
local counter = 0

function setup(thread)
   counter = counter + 1
   thread:set("tid", counter)
   table.insert(threads, thread)
end

local devices = { "mobile", "mobile", "mobile", "desktop", "desktop", "tablet" }
local countries = { "DE", "DE", "FR", "GB", "US", "US", "NL", "ES", "IT", "PL" }
local channels = { "organic", "paid_search", "email", "social", "direct" }
-- The request line and headers are the same for every request: built once, in init.
local prefix = nil

local function pick(t)
   return t[math.random(#t)]
end

-- Frequent visitors: a tenth of requests come from a small set of returning units.
local function unit(prefix, population)
   if math.random() < 0.1 then
      return string.format("%s-%d", prefix, math.random(1000))
   end
   return string.format("%s-%d", prefix, math.random(population))
end

local function checkout()
   return string.format(
      '{"experiment":"checkout-offer","unit_id":"%s","context":{"device":"%s","country":"%s","cart_value":%.2f,"items_in_cart":%d,"returning":%s}}',
      unit("user", 5000000), pick(devices), pick(countries), 5 + math.random() * 295, math.random(8),
      math.random() < 0.6 and "true" or "false")
end

local function homepage()
   return string.format(
      '{"experiment":"homepage-banner","unit_id":"%s","context":{"device":"%s","country":"%s","channel":"%s"}}',
      unit("session", 20000000), pick(devices), pick(countries), pick(channels))
end

local function winback()
   return string.format(
      '{"experiment":"winback-offer","unit_id":"%s","context":{"device":"%s","country":"%s","days_since_last_order":%d,"lifetime_orders":%d}}',
      unit("user", 5000000), pick(devices), pick(countries), math.random(0, 400), math.random(1, 30))
end

local ids_file = nil
logged = 0
unlogged = 0
other = 0

function init(args)
   local host = wrk.host .. (wrk.port and (":" .. wrk.port) or "")
   prefix = "POST /v1/assign HTTP/1.1\r\nHost: " .. host
      .. "\r\nContent-Type: application/json\r\nAuthorization: Bearer " .. key .. "\r\nContent-Length: "
   math.randomseed(os.time() * 1000 + (tid or 0))
   if ids_dir and ids_dir ~= "" then
      ids_file = assert(io.open(string.format("%s/ids-%d-%d.txt", ids_dir, os.time(), tid or 0), "w"))
   end
end

function request()
   local r = math.random()
   local body
   if r < cut1 then
      body = checkout()
   elseif r < cut2 then
      body = homepage()
   else
      body = winback()
   end
   return prefix .. #body .. "\r\n\r\n" .. body
end

local function read_answer(status, hdrs, body)
   if status ~= 200 then
      other = other + 1
      return
   end
   if ids_file then
      local id = string.match(body, '"exposure_id":"([^"]+)"')
      if id then
         logged = logged + 1
         ids_file:write(id, " ", string.match(body, '"experiment":"([^"]+)"') or "?", "\n")
      else
         unlogged = unlogged + 1
      end
   elseif string.find(body, '"logged":true', 1, true) then
      logged = logged + 1
   else
      unlogged = unlogged + 1
   end
end

local delay_ms = tonumber(os.getenv("ASSIGN_DELAY_MS") or "")
if delay_ms then
   function delay()
      return math.floor(delay_ms + 0.5)
   end
end

if (ids_dir and ids_dir ~= "") or os.getenv("ASSIGN_READ") == "1" then
   response = read_answer
end

function done(summary, latency, requests)
   local l, u, o = 0, 0, 0
   for _, t in ipairs(threads) do
      l = l + (t:get("logged") or 0)
      u = u + (t:get("unlogged") or 0)
      o = o + (t:get("other") or 0)
   end
   local e = summary.errors
   local line = string.format(
      "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d non2xx=%d socket_errors=%d logged=%d unlogged=%d other=%d",
      summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max,
      e.status, e.connect + e.read + e.write + e.timeout, l, u, o)
   io.write(line, "\n")
   local out = os.getenv("ASSIGN_RESULT")
   if out and out ~= "" then
      local f = assert(io.open(out, "a"))
      f:write(line, "\n")
      f:close()
   end
end
