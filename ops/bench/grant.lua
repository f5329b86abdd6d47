-- POST /v1/leases: a durable lease grant per request.
wrk.method = "POST"
wrk.body = '{"ttl": 600}'
wrk.headers["Content-Type"] = "application/json"
