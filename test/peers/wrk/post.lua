-- One POST, the same for every request: BODY with CONTENT_TYPE, and
-- AUTH as the Authorization header when set (test/peers).
wrk.method = "POST"
wrk.body = os.getenv("BODY")
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE")
local auth = os.getenv("AUTH")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = auth
end
