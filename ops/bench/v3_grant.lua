-- POST /v3/lease/grant: a durable lease grant per request (etcd's gateway shape).
wrk.method = "POST"
wrk.path = "/v3/lease/grant"
wrk.body = '{"TTL": 600}'
wrk.headers["Content-Type"] = "application/json"
