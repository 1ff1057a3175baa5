-- wrk load for `python -m bench tracker`: BitTorrent announces from a fixed population.
--
--   wrk -t1 -c64 -d15s --latency -s bench/tracker_load.lua http://127.0.0.1:PORT \
--       -- LOAD_FILE THREADS
--
-- LOAD_FILE (written by bench/tracker.py) has one line per torrent, "T <info_hash>",
-- then one per peer, "P <peer_id> <torrent index> <passkey> <seeder 0|1> <port>", with
-- info_hash and peer_id already percent-encoded from their raw 20 bytes, as real
-- clients send them (mixed: some bytes left unescaped, upper- and lower-case hex).
--
-- Each request is a random peer's announce for its torrent: compact=1, numwant=50,
-- a key, its passkey; 10 % event=started (its session counters restart at 0), 5 %
-- event=stopped, otherwise no event. A seeder sends left=0; a leecher sends left>0,
-- except 1 % of its announces that report left=0 (a finished download: a snatch for
-- the tracker, and the peer counts as a seeder until its next announce).
-- uploaded/downloaded grow per peer, so the tracker's deltas are real. Threads split the
-- peers between them (peer i belongs to thread i mod threads), so every peer's counters
-- stay monotonic.
--
-- With BENCH_CHECK=1 in the environment, every response body is also checked: a body
-- with "failure reason", or without "interval", counts as a failure. That costs the load
-- generator time, so only the warm-up runs with it.
--
-- done() prints one line "BENCH_JSON {...}": requests, seconds, errors, latency
-- percentiles (microseconds) and, with BENCH_CHECK, the failures seen.

local threads = {}
local thread_count = 0

function setup(thread)
   thread:set("thread_index", thread_count)
   thread_count = thread_count + 1
   table.insert(threads, thread)
end

local torrents = {}
local peers = {}  -- this thread's peers: {peer_id, info_hash, passkey, seeder, port, up, down}
local n = 0
-- globals, not locals: done() reads them from each thread with thread:get()
failures = 0
checked = 0
first_failure = ""

function init(args)
   local path = args[1]
   local nthreads = tonumber(args[2] or "1")
   local index = thread_index or 0
   local fh = assert(io.open(path, "r"))
   local i = 0
   for line in fh:lines() do
      local kind, a, b, c, d, e = line:match("^(%S+) (%S+) ?(%S*) ?(%S*) ?(%S*) ?(%S*)$")
      if kind == "T" then
         torrents[#torrents + 1] = a
      elseif kind == "P" then
         if i % nthreads == index then
            peers[#peers + 1] = {
               id = a, ih = torrents[tonumber(b) + 1], pk = c,
               seeder = (d == "1"), port = e, up = 0, down = 0,
            }
         end
         i = i + 1
      end
   end
   fh:close()
   n = #peers
   math.randomseed(12345 + index)
end

function request()
   local p = peers[math.random(n)]
   local r = math.random(100)
   local event = ""
   if r <= 10 then
      event = "&event=started"
      p.up, p.down = 0, 0
   elseif r <= 15 then
      event = "&event=stopped"
   end
   local left
   if p.seeder then
      left = 0
      p.up = p.up + math.random(0, 1048576)
   else
      p.down = p.down + math.random(16384, 1048576)
      p.up = p.up + math.random(0, 65536)
      if math.random(100) == 1 then left = 0 else left = math.random(1, 734003200) end
   end
   local path = "/announce?passkey=" .. p.pk
      .. "&info_hash=" .. p.ih
      .. "&peer_id=" .. p.id
      .. "&port=" .. p.port
      .. "&uploaded=" .. p.up
      .. "&downloaded=" .. p.down
      .. "&left=" .. left
      .. "&corrupt=0&key=" .. string.format("%08X", math.random(0, 0x7fffffff))
      .. event
      .. "&numwant=50&compact=1&no_peer_id=1"
   return wrk.format("GET", path)
end

if os.getenv("BENCH_CHECK") == "1" then
   function response(status, headers, body)
      checked = checked + 1
      if status ~= 200 or body:find("failure reason", 1, true)
            or not body:find("8:interval", 1, true) then
         failures = failures + 1
         if first_failure == "" then
            first_failure = status .. " " .. body:sub(1, 200)
         end
      end
   end
end

local function json_string(s)
   s = s:gsub("\\", "\\\\"):gsub('"', '\\"')
   s = s:gsub("[%c\128-\255]", function(ch) return string.format("\\u%04x", ch:byte()) end)
   return '"' .. s .. '"'
end

function done(summary, latency, requests)
   local failed, seen, first = 0, 0, ""
   for _, thread in ipairs(threads) do
      failed = failed + (thread:get("failures") or 0)
      seen = seen + (thread:get("checked") or 0)
      local f = thread:get("first_failure")
      if first == "" and f then first = f end
   end
   local e = summary.errors
   local parts = {
      '"requests": ' .. summary.requests,
      '"seconds": ' .. summary.duration / 1e6,
      '"bytes": ' .. summary.bytes,
      '"errors": {"connect": ' .. e.connect .. ', "read": ' .. e.read .. ', "write": '
         .. e.write .. ', "status": ' .. e.status .. ', "timeout": ' .. e.timeout .. '}',
      '"latency_us": {"mean": ' .. latency.mean .. ', "max": ' .. latency.max
         .. ', "p50": ' .. latency:percentile(50) .. ', "p90": ' .. latency:percentile(90)
         .. ', "p99": ' .. latency:percentile(99) .. ', "p999": ' .. latency:percentile(99.9)
         .. '}',
      '"checked": ' .. seen,
      '"failures": ' .. failed,
      '"first_failure": ' .. json_string(first),
   }
   io.write("BENCH_JSON {" .. table.concat(parts, ", ") .. "}\n")
end
