-- PUT /v1/keys?key=bench/N: a durable key put per request, over a rotating
-- set of 10,000 keys (each thread counts on its own).
local counter = 0
local body = '{"value": "some value of about forty bytes, like etcd"}'
request = function()
  counter = (counter + 1) % 10000
  return wrk.format("PUT", "/v1/keys?key=bench/" .. counter, {["Content-Type"] = "application/json"}, body)
end
