-- POST /v3/lease/grant: a durable lease grant per request (etcd's gateway shape).
wrk.method = "POST"
wrk.path = "/v3/lease/grant"
wrk.body = '{"TTL": 600}'
wrk.headers["Content-Type"] = "application/json"
-- Under --auth: the account's bearer token from WRK_TOKEN.
local token = os.getenv("WRK_TOKEN")
if token and token ~= "" then wrk.headers["Authorization"] = "Bearer " .. token end
