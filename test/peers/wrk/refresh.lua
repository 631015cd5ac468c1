-- Refresh-token rotation under wrk (test/peers). Run with one thread (-t1)
-- and as many connections as TOKENS_FILE holds refresh tokens: each request
-- takes a token from the pool and each answer puts its successor (the JSON
-- member FIELD) back, so every connection always presents a current token.
-- BODY is a template whose %s is the token. An answer without a successor
-- loses its token; when the pool is empty the request carries "exhausted",
-- which the server refuses and wrk counts as non-2xx. Protobuf JSON may put
-- a space after the colon, so the pattern allows one.
local pool = {}
-- wrk calls request() once before the run to check the script (wrk.c,
-- script_verify_request, on thread 1's state): that request is never sent,
-- so it must not take a token.
local verified = false
local body = os.getenv("BODY")
local pattern = '"' .. os.getenv("FIELD") .. '":%s*"([^"]+)"'
local headers = { ["Content-Type"] = os.getenv("CONTENT_TYPE") }
local auth = os.getenv("AUTH")
if auth and auth ~= "" then
  headers["Authorization"] = auth
end

function init(args)
  for line in io.lines(os.getenv("TOKENS_FILE")) do
    if line ~= "" then
      pool[#pool + 1] = line
    end
  end
end

function request()
  if not verified then
    verified = true
    return wrk.format("POST", nil, headers, string.format(body, "verify"))
  end
  local t = table.remove(pool)
  if t == nil then
    t = "exhausted"
  end
  return wrk.format("POST", nil, headers, string.format(body, t))
end

function response(status, hdrs, resp)
  local t = resp:match(pattern)
  if t then
    pool[#pool + 1] = t
  end
end
