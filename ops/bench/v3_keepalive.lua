-- POST /v3/lease/keepalive: one keep-alive per request (etcd's gateway shape),
-- over the lease IDs in the file named after `--` (one decimal ID a line,
-- written by `keepalive-load --ids-out`). Each thread starts at its own
-- offset. Answers without a TTL (the lease was not found) are counted.
local ids = {}
local next_id = 1
local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("offset", counter * 7919)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do
    ids[#ids + 1] = line
  end
  next_id = (offset or 0) % #ids + 1
  lost = 0
end

request = function()
  local id = ids[next_id]
  next_id = next_id % #ids + 1
  return wrk.format("POST", "/v3/lease/keepalive", { ["Content-Type"] = "application/json" }, '{"ID": "' .. id .. '"}')
end

response = function(status, headers, body)
  if not body:find('"TTL"', 1, true) then
    lost = lost + 1
  end
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("lost")
  end
  io.write(string.format("LOST %d\n", total))
end
