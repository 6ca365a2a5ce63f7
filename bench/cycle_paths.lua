-- wrk script: cycle through request paths read from a file, one per line.
--
--   wrk -t1 -c8 -d15s --latency -s bench/cycle_paths.lua http://127.0.0.1:PORT -- PATHS [TOKEN]
--
-- Every thread starts at a different place in the list and then walks it in order, wrapping
-- around. With TOKEN, each request carries "Authorization: Bearer TOKEN". At the end, one line
-- "status CODE COUNT" is printed per HTTP status seen (summed over threads).

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("thread_id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

local paths = {}
local index = 0
statuses = {}

function init(args)
  local file = args[1]
  if file == nil then
    error("usage: ... -s cycle_paths.lua URL -- PATHS_FILE [TOKEN]")
  end
  for line in io.lines(file) do
    if #line > 0 then
      paths[#paths + 1] = line
    end
  end
  if #paths == 0 then
    error("no paths in " .. file)
  end
  local token = args[2]
  if token ~= nil and #token > 0 then
    wrk.headers["Authorization"] = "Bearer " .. token
  end
  -- Spread the threads' starting points over the list (thread_id is set by setup()).
  index = (thread_id * 7919) % #paths
end

function request()
  index = index % #paths + 1
  return wrk.format("GET", paths[index])
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    local counts = thread:get("statuses")
    if counts ~= nil then
      for code, n in pairs(counts) do
        total[code] = (total[code] or 0) + n
      end
    end
  end
  for code, n in pairs(total) do
    io.write(string.format("status %d %d\n", code, n))
  end
end
