-- storage-front glue for nginx (lua-nginx-module, Debian's
-- libnginx-mod-http-lua). Installed as /etc/storage-front/storage_front.lua;
-- see nginx-http.conf and nginx-location.conf beside it, and
-- docs/storage-front.md.
--
-- access():        a COPY that is a third-party copy (Source:, or a
--                  Destination: on another host, or neither) goes to the
--                  sidecar (named location @storage_front_tpc); a COPY
--                  within this server stays with the dav module. GET/HEAD:
--                  the file's adler32 from its xattr (FFI getxattr), else
--                  asked from the sidecar (it computes once and stores).
-- header_filter(): `Digest: adler32=<8 hex>` on 200 answers to GET/HEAD,
--                  asked for with Want-Digest or not (as StoRM-WebDAV).
-- log():           after a PUT that created or replaced a file, tells the
--                  sidecar to checksum it (a zero-delay timer: cosockets
--                  are not allowed in the log phase).
-- When flowmark.lua is installed too, its start()/finish() run from here
-- for GET and PUT (nginx allows one access_by_lua per location).
local ffi = require "ffi"

local M = {}

local XATTR = "user.storm.checksum.adler32"
local PREFIX = "/.storage-front/checksum"
local HEX8 = "^[0-9a-f]+$"

local cfg = { host = "127.0.0.1", port = 8091, timeout_ms = 60000 }
local flowmark = nil

ffi.cdef [[
long getxattr(const char *path, const char *name, void *value, size_t size);
]]
local xattr_buf = ffi.new("char[16]")

function M.configure(opts)
    for k, v in pairs(opts or {}) do
        cfg[k] = v
    end
    local ok, fm = pcall(require, "flowmark")
    if ok and opts.flowmark ~= false then
        flowmark = fm
    end
end

-- The stored value, or nil (no xattr, malformed, no file).
local function stored(path)
    if not path then
        return nil
    end
    local n = ffi.C.getxattr(path, XATTR, xattr_buf, 16)
    if n ~= 8 then
        return nil
    end
    local v = ffi.string(xattr_buf, 8)
    if not v:find(HEX8) then
        return nil
    end
    return v
end

-- Asks the sidecar for the checksum of `uri` (decoded, as ngx.var.uri).
local function ask(uri)
    local sock = ngx.socket.tcp()
    sock:settimeout(cfg.timeout_ms)
    local ok, err = sock:connect(cfg.host, cfg.port)
    if not ok then
        ngx.log(ngx.WARN, "storage-front: cannot reach the sidecar: ", err)
        return nil
    end
    local path = uri:gsub("[^/]+", function(seg) return ngx.escape_uri(seg) end)
    local _, err = sock:send("GET " .. PREFIX .. path ..
        " HTTP/1.0\r\nHost: storage-front\r\n\r\n")
    if err then
        ngx.log(ngx.WARN, "storage-front: ", err)
        sock:close()
        return nil
    end
    local status = sock:receive("*l")
    local body = nil
    if status and status:find("^HTTP/1%.%d 200") then
        while true do
            local line = sock:receive("*l")
            if not line or line == "" then
                break
            end
        end
        body = sock:receive(8)
    end
    sock:close()
    if body and #body == 8 and body:find(HEX8) then
        return body
    end
    return nil
end

-- flowmark.lua has the same helper: the two files ship in different
-- packages and each must load without the other, so neither requires a
-- module of the other's.
local function first(v)
    if type(v) == "table" then
        return v[1]
    end
    return v
end

-- Whether a Destination URL names this server (a local COPY).
local function is_local(dest)
    local authority = dest:match("^%a[%w+.-]*://([^/]+)")
    local host = ngx.var.http_host
    return authority ~= nil and host ~= nil and authority:lower() == host:lower()
end

function M.access()
    local method = ngx.req.get_method()
    if method == "COPY" then
        local h = ngx.req.get_headers(100)
        local dest = first(h["destination"])
        if h["source"] or not dest or not is_local(dest) then
            return ngx.exec("@storage_front_tpc")
        end
    elseif method == "GET" or method == "HEAD" then
        local v = stored(ngx.var.request_filename)
        if not v then
            v = ask(ngx.var.uri)
        end
        ngx.ctx.storage_front_adler32 = v
    end
    if flowmark then
        flowmark.start()
    end
end

function M.header_filter()
    local v = ngx.ctx.storage_front_adler32
    if v and ngx.status == ngx.HTTP_OK then
        ngx.header["Digest"] = "adler32=" .. v
    end
end

local function checksum_later(premature, uri)
    if not premature then
        ask(uri)
    end
end

function M.log()
    if ngx.req.get_method() == "PUT" and (ngx.status == 201 or ngx.status == 204) then
        local ok, err = ngx.timer.at(0, checksum_later, ngx.var.uri)
        if not ok then
            ngx.log(ngx.WARN, "storage-front: no timer for the checksum: ", err)
        end
    end
    if flowmark then
        flowmark.finish()
    end
end

return M
