-- wrk script of the HTTP benchmark (bench/http/run.sh): POSTs signed 1 KiB Metigan events.
--
-- Every request carries its own messageId (so a deduplicating receiver processes each one
-- instead of answering "already processed"), hence its own HMAC-SHA256 signature, computed
-- here. The generator must stay well ahead of the servers it drives, so signing is cheap:
-- SHA-256 comes from OpenSSL's libcrypto (which wrk links for https) through LuaJIT's FFI,
-- and the message is `t.body` with the messageId at the end of the body: the hash states
-- after `ipad || t.prefix` and after `opad` are computed once, and a request only hashes its
-- last bytes and the 32-byte inner digest. The request text around the signature and the
-- messageId is built once too.
-- The timestamp is taken when wrk starts, well inside the receiver's 300 s tolerance.
--
-- Environment: WEBHOOK_SECRET (required), BODY_SIZE (default 1024).

local ffi = require("ffi")
local bit = require("bit")
local bxor = bit.bxor
local byte, char, rep, format = string.byte, string.char, string.rep, string.format

ffi.cdef [[
typedef struct { unsigned int h[8]; unsigned int Nl, Nh; unsigned int data[16]; unsigned int num, md_len; } SHA256_CTX;
int SHA256_Init(SHA256_CTX *c);
int SHA256_Update(SHA256_CTX *c, const void *data, size_t len);
int SHA256_Final(unsigned char *md, SHA256_CTX *c);
]]
-- wrk is linked against libcrypto, so its symbols are in the process already; load it by
-- name when they are not.
local C = ffi.C
if not pcall(function() return C.SHA256_Init end) then C = ffi.load("crypto") end

local function sha256(message)
  local ctx, md = ffi.new("SHA256_CTX"), ffi.new("unsigned char[32]")
  C.SHA256_Init(ctx); C.SHA256_Update(ctx, message, #message); C.SHA256_Final(md, ctx)
  return ffi.string(md, 32)
end

-- The hash states after `key xor ipad` and `key xor opad`.
local function hmac_key(key)
  if #key > 64 then key = sha256(key) end
  key = key .. rep("\0", 64 - #key)
  local ipad, opad = {}, {}
  for i = 1, 64 do
    local k = byte(key, i)
    ipad[i] = char(bxor(k, 0x36))
    opad[i] = char(bxor(k, 0x5c))
  end
  local inner, outer = ffi.new("SHA256_CTX"), ffi.new("SHA256_CTX")
  C.SHA256_Init(inner); C.SHA256_Update(inner, table.concat(ipad), 64)
  C.SHA256_Init(outer); C.SHA256_Update(outer, table.concat(opad), 64)
  return inner, outer
end

local HEX = {}
for i = 0, 255 do HEX[i] = format("%02x", i) end
local work, md = ffi.new("SHA256_CTX"), ffi.new("unsigned char[32]")
local hex = {}

-- Finishes the HMAC from the prepared states: `inner` already holds everything but `rest`.
local function hmac_finish_hex(inner, outer, rest)
  ffi.copy(work, inner, ffi.sizeof(work))
  C.SHA256_Update(work, rest, #rest)
  C.SHA256_Final(md, work)
  ffi.copy(work, outer, ffi.sizeof(work))
  C.SHA256_Update(work, md, 32)
  C.SHA256_Final(md, work)
  for i = 0, 31 do hex[i + 1] = HEX[md[i]] end
  return table.concat(hex)
end

local function hmac_hex(key, message)
  local inner, outer = hmac_key(key)
  return hmac_finish_hex(inner, outer, message)
end

-- RFC 4231 test case 2: if this fails, every request would be rejected.
assert(hmac_hex("Jefe", "what do ya want for nothing?")
  == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", "HMAC-SHA256 self-test failed")

-- The requests ---------------------------------------------------------------------------------

local secret = os.getenv("WEBHOOK_SECRET") or error("WEBHOOK_SECRET is not set")
local size = tonumber(os.getenv("BODY_SIZE") or "1024")
local t = tostring(os.time())
math.randomseed(os.time())
local run = format("%06x", math.random(0, 0xffffff))

-- A realistic email.clicked event; the user agent is grown to the exact size, the messageId
-- (msg_<run>_<9 digits>, fixed width) closes the body.
local head = '{"event":"email.clicked","data":{"emailId":"em_7d3a9c2e51f04b8a",'
  .. '"recipient":"jane.doe@example.com","from":"Acme Billing <billing@acme.example>",'
  .. '"subject":"Your invoice INV-2024-00042 is ready (\\u20ac 1,234.56 due on 15 Feb)",'
  .. '"status":"clicked","campaignId":"cmp_spring_sale_2024","tags":["invoice","transactional","eu-west"],'
  .. '"metadata":{"url":"https://acme.example/invoices/INV-2024-00042?utm_source=metigan",'
  .. '"ip":"203.0.113.42","country":"PT","device":"desktop","userAgent":"Mozilla/5.0 (X11; Linux x86_64) '
local middle = '","clickedAt":"2024-01-15T10:30:00.123Z"},"userId":"usr_01HM8Q3ZK5T6"},'
  .. '"timestamp":1705314600123,"messageId":"msg_' .. run .. '_'
local tail = '"}'
local ID = "%09d"
local id_width = 9
local filler = "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 "
local pad = size - #head - #middle - id_width - #tail
assert(pad >= 0, "BODY_SIZE is too small")
local prefix = head .. string.sub(rep(filler, math.ceil(pad / #filler)), 1, pad) .. middle

-- The HMAC state after `ipad || t.prefix`, computed once.
local inner, outer = hmac_key(secret)
local signed_prefix = t .. "." .. prefix
C.SHA256_Update(inner, signed_prefix, #signed_prefix)

-- A check of the fast path against an HMAC computed from scratch.
do
  local id = format(ID, 0)
  local body = prefix .. id .. tail
  assert(#body == size, "body size")
  assert(hmac_finish_hex(inner, outer, id .. tail) == hmac_hex(secret, t .. "." .. body),
    "fast HMAC differs")
end

-- The whole request lives in one buffer, formatted once by wrk with placeholders; a request
-- writes its messageId digits and its signature's hex in place, hashes the body's last bytes
-- straight from the buffer, and hands wrk one string copied out of it.
local buf, len, sig_at, id_at
local HEX_PAIRS = ffi.new("uint8_t[512]")
for i = 0, 255 do
  local h = HEX[i]
  HEX_PAIRS[2 * i], HEX_PAIRS[2 * i + 1] = byte(h, 1), byte(h, 2)
end
local counter = 0

function init(args)
  local sig_mark, id_mark = rep("S", 64), rep("I", id_width)
  local text = wrk.format("POST", nil, {
    ["Content-Type"] = "application/json",
    ["X-Webhook-Timestamp"] = t,
    ["X-Webhook-Id"] = "wh_benchmark",
    ["X-Webhook-Signature"] = "t=" .. t .. ",v1=" .. sig_mark,
  }, prefix .. id_mark .. tail)
  sig_at = assert(text:find(sig_mark, 1, true), "signature placeholder") - 1
  id_at = assert(text:find(id_mark, sig_at + 65, true), "messageId placeholder") - 1
  len = #text
  buf = ffi.new("uint8_t[?]", len)
  ffi.copy(buf, text, len)
end

function request()
  counter = counter + 1
  local n = counter
  for i = id_width - 1, 0, -1 do
    buf[id_at + i] = 48 + n % 10
    n = math.floor(n / 10)
  end
  ffi.copy(work, inner, ffi.sizeof(work))
  C.SHA256_Update(work, buf + id_at, id_width + #tail)
  C.SHA256_Final(md, work)
  ffi.copy(work, outer, ffi.sizeof(work))
  C.SHA256_Update(work, md, 32)
  C.SHA256_Final(md, work)
  for i = 0, 31 do
    local v = 2 * md[i]
    buf[sig_at + 2 * i], buf[sig_at + 2 * i + 1] = HEX_PAIRS[v], HEX_PAIRS[v + 1]
  end
  return ffi.string(buf, len)
end
