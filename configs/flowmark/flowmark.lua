-- flowmark.lua: registers nginx transfers that carry a SciTag with the
-- flowmark daemon (its JSON API on a Unix socket), so their packets get the
-- SciTags IPv6 flow label and fireflies go out at start and end.
--
-- It FAILS OPEN: every call is wrapped in pcall, uses a short timeout, and
-- only logs when flowmark is slow, stopped or missing. A transfer never
-- fails because of marking.
--
-- nginx passes the raw SciTag, TransferHeaderSciTag and query string;
-- flowmark applies the precedence and range rules itself (one
-- implementation for every producer).
local cjson = require "cjson.safe"

local M = {
  socket = "unix:/run/flowmark.sock",
  timeout_ms = 100,
  methods = { GET = true, PUT = true, COPY = true },
  application = "nginx " .. ngx.config.nginx_version,
}

function M.configure(opts)
  for k, v in pairs(opts or {}) do
    M[k] = v
  end
end

local function first(v)
  if type(v) == "table" then
    return v[1]
  end
  return v
end

local function call_once(req)
  local sock = ngx.socket.tcp()
  sock:settimeout(M.timeout_ms)
  local ok, err = sock:connect(M.socket)
  if not ok then
    return nil, "connect " .. M.socket .. ": " .. tostring(err)
  end
  local payload = cjson.encode(req)
  if not payload then
    sock:close()
    return nil, "cannot encode request"
  end
  ok, err = sock:send(payload .. "\n")
  if not ok then
    sock:close()
    return nil, "send: " .. tostring(err)
  end
  local line, rerr = sock:receive("*l")
  if not line then
    sock:close()
    return nil, "receive: " .. tostring(rerr)
  end
  sock:setkeepalive(30000, 16)
  return cjson.decode(line)
end

-- One retry: a pooled connection may have been closed by flowmark (e.g. a
-- restart) since its last use.
local function call(req)
  local res, err = call_once(req)
  if not res and err and not err:find("^connect") then
    res, err = call_once(req)
  end
  return res, err
end

local function five_tuple()
  return {
    proto = "tcp",
    src = ngx.var.server_addr,
    sport = tonumber(ngx.var.server_port),
    dst = ngx.var.remote_addr,
    dport = tonumber(ngx.var.remote_port),
  }
end

-- access_by_lua: register the flow when the request carries a SciTag.
function M.start()
  local ok, err = pcall(function()
    if not M.methods[ngx.req.get_method()] then
      return
    end
    local h = ngx.req.get_headers(64)
    local scitag, transfer = first(h["scitag"]), first(h["transferheaderscitag"])
    local args = ngx.var.args
    if not scitag and not transfer and not (args and args:find("scitag.flow=", 1, true)) then
      return
    end
    local req = five_tuple()
    req.op = "start"
    req.headers = { SciTag = scitag, TransferHeaderSciTag = transfer }
    req.query = args
    req.application = M.application
    local res, cerr = call(req)
    if not res then
      ngx.log(ngx.WARN, "flowmark (transfer goes on unmarked): ", cerr)
    elseif res.ok and res.value then
      ngx.ctx.flowmark = five_tuple()
    elseif res.reason then
      ngx.log(ngx.INFO, "flowmark: not marked: ", res.reason)
    end
  end)
  if not ok then
    ngx.log(ngx.ERR, "flowmark start: ", err)
  end
end

local function finish_flow(premature, req)
  if premature then
    return
  end
  local res, err = call(req)
  if not res then
    ngx.log(ngx.WARN, "flowmark end: ", err)
  end
end

-- log_by_lua: end the flow. Cosockets are not allowed in the log phase, so
-- the call runs in a zero-delay timer.
function M.finish()
  local ok, err = pcall(function()
    local req = ngx.ctx.flowmark
    if not req then
      return
    end
    req.op = "end"
    -- The request's own byte counts: exact per request, even on a kept-alive
    -- connection, and known after the client has gone.
    req.sent = tonumber(ngx.var.bytes_sent)
    req.received = tonumber(ngx.var.request_length)
    local tok, terr = ngx.timer.at(0, finish_flow, req)
    if not tok then
      ngx.log(ngx.WARN, "flowmark: cannot end flow: ", terr)
    end
  end)
  if not ok then
    ngx.log(ngx.ERR, "flowmark finish: ", err)
  end
end

return M
