-- POST /v3/kv/put: a durable put per request, over a rotating set of 10,000
-- keys (each wrk thread counts on its own). Keys and values are base64.
local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(data)
  return ((data:gsub(".", function(x)
    local bits, byte = "", x:byte()
    for i = 8, 1, -1 do bits = bits .. (byte % 2 ^ i - byte % 2 ^ (i - 1) > 0 and "1" or "0") end
    return bits
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return alphabet:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#data % 3 + 1])
end

local keys = {}
for i = 0, 9999 do keys[i] = base64("bench/" .. i) end
local value = base64("some value of about forty bytes, like etcd")
local counter = 0
-- Under --auth: the account's bearer token from WRK_TOKEN.
local headers = { ["Content-Type"] = "application/json" }
local token = os.getenv("WRK_TOKEN")
if token and token ~= "" then headers["Authorization"] = "Bearer " .. token end

request = function()
  counter = (counter + 1) % 10000
  local body = '{"key": "' .. keys[counter] .. '", "value": "' .. value .. '"}'
  return wrk.format("POST", "/v3/kv/put", headers, body)
end
