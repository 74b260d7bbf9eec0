-- wrk script of the HTTP benchmark (bench/http/run.sh): POSTs signed 1 KiB Metigan events.
--
-- Every request carries its own messageId (so a deduplicating receiver processes each one
-- instead of answering "already processed"), hence its own HMAC-SHA256 signature, computed
-- here. The message is `t.body` with the messageId at the end of the body: the HMAC state
-- after the fixed part is computed once, and a request only hashes its last block or two.
-- The timestamp is taken when wrk starts, well inside the receiver's 300 s tolerance.
--
-- Environment: WEBHOOK_SECRET (required), BODY_SIZE (default 1024).

local bit = require("bit")
local band, bor, bxor, bnot = bit.band, bit.bor, bit.bxor, bit.bnot
local rshift, lshift, ror, tobit, tohex = bit.rshift, bit.lshift, bit.ror, bit.tobit, bit.tohex
local byte, char, rep, sub, format = string.byte, string.char, string.rep, string.sub, string.format

-- SHA-256 (FIPS 180-4) on 32-bit words -------------------------------------------------------

local K = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
}
for i = 1, 64 do K[i] = tobit(K[i]) end

local IV = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 }
for i = 1, 8 do IV[i] = tobit(IV[i]) end

local W = {}

-- Compresses the block whose 16 words are `words[0..15]` into the state `H`.
local function compress_words(H, words)
  for i = 0, 15 do W[i] = words[i] end
  for i = 16, 63 do
    local w15, w2 = W[i - 15], W[i - 2]
    local s0 = bxor(ror(w15, 7), ror(w15, 18), rshift(w15, 3))
    local s1 = bxor(ror(w2, 17), ror(w2, 19), rshift(w2, 10))
    W[i] = tobit(W[i - 16] + s0 + W[i - 7] + s1)
  end
  local a, b, c, d, e, f, g, h = H[1], H[2], H[3], H[4], H[5], H[6], H[7], H[8]
  for i = 0, 63 do
    local S1 = bxor(ror(e, 6), ror(e, 11), ror(e, 25))
    local ch = bxor(band(e, f), band(bnot(e), g))
    local t1 = h + S1 + ch + K[i + 1] + W[i]
    local S0 = bxor(ror(a, 2), ror(a, 13), ror(a, 22))
    local maj = bxor(band(a, b), band(a, c), band(b, c))
    h, g, f, e, d, c, b, a = g, f, e, tobit(d + t1), c, b, a, tobit(t1 + S0 + maj)
  end
  H[1], H[2], H[3], H[4] = tobit(H[1] + a), tobit(H[2] + b), tobit(H[3] + c), tobit(H[4] + d)
  H[5], H[6], H[7], H[8] = tobit(H[5] + e), tobit(H[6] + f), tobit(H[7] + g), tobit(H[8] + h)
end

local block_words = {}

-- Compresses the 64-byte block of `s` starting at `at` (1-based) into the state `H`.
local function compress(H, s, at)
  for i = 0, 15 do
    local a, b, c, d = byte(s, at + 4 * i, at + 4 * i + 3)
    block_words[i] = bor(lshift(a, 24), lshift(b, 16), lshift(c, 8), d)
  end
  compress_words(H, block_words)
end

-- A hash in progress: state words, bytes not yet compressed, total length.
local function new_hash()
  return { H = { unpack(IV) }, pending = "", length = 0 }
end

local function copy(st)
  return { H = { unpack(st.H) }, pending = st.pending, length = st.length }
end

local function update(st, data)
  st.length = st.length + #data
  local s = st.pending .. data
  local full = #s - #s % 64
  for at = 1, full, 64 do compress(st.H, s, at) end
  st.pending = sub(s, full + 1)
end

local function be32(n)
  return char(band(rshift(n, 24), 255), band(rshift(n, 16), 255), band(rshift(n, 8), 255), band(n, 255))
end

-- The 32-byte digest; `st` is consumed.
local function finish(st)
  local bits = st.length * 8
  local zeros = (55 - st.length) % 64
  update(st, "\128" .. rep("\0", zeros) .. be32(math.floor(bits / 4294967296)) .. be32(bits % 4294967296))
  local out = {}
  for i = 1, 8 do out[i] = be32(st.H[i]) end
  return table.concat(out)
end

-- HMAC-SHA256 with the key states prepared once.
local function hmac_key(key)
  if #key > 64 then
    local st = new_hash(); update(st, key); key = finish(st)
  end
  key = key .. rep("\0", 64 - #key)
  local ipad, opad = {}, {}
  for i = 1, 64 do
    local k = byte(key, i)
    ipad[i] = char(bxor(k, 0x36))
    opad[i] = char(bxor(k, 0x5c))
  end
  local inner, outer = new_hash(), new_hash()
  update(inner, table.concat(ipad))
  update(outer, table.concat(opad))
  return inner, outer
end

local function hmac_finish(inner, outer)
  local o = copy(outer)
  update(o, finish(inner))
  local digest = finish(o)
  local hex = {}
  for i = 1, 32 do hex[i] = format("%02x", byte(digest, i)) end
  return table.concat(hex)
end

local function hmac_hex(key, message)
  local inner, outer = hmac_key(key)
  update(inner, message)
  return hmac_finish(inner, outer)
end

-- RFC 4231 test case 2: if this fails, every request would be rejected.
assert(hmac_hex("Jefe", "what do ya want for nothing?")
  == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", "SHA-256 self-test failed")

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
local prefix = head .. sub(rep(filler, math.ceil(pad / #filler)), 1, pad) .. middle

-- The HMAC state after `t.` and the fixed prefix of the body, computed once. A request then
-- only compresses its last inner block(s) (one for a 1 KiB body: the prefix ends on a block
-- boundary) and the one outer block, fed straight from the inner state's words.
local inner, outer = hmac_key(secret)
update(inner, t .. "." .. prefix)
local pending = inner.pending
local total = inner.length + id_width + #tail
local padding = tail .. "\128" .. rep("\0", (55 - total) % 64)
  .. be32(math.floor(total * 8 / 4294967296)) .. be32(total * 8 % 4294967296)
assert((#pending + id_width + #padding) % 64 == 0, "inner padding")
local H_inner, H_outer = inner.H, outer.H
local Hi, Ho = {}, {}
-- The outer message is the 32-byte inner digest: one block, padding and length fixed.
local outer_block = rep("\0", 32) .. "\128" .. rep("\0", 23) .. be32(0) .. be32((64 + 32) * 8)
local outer_words = {}
for i = 0, 15 do
  local a, b, c, d = byte(outer_block, 1 + 4 * i, 4 + 4 * i)
  outer_words[i] = bor(lshift(a, 24), lshift(b, 16), lshift(c, 8), d)
end
local digest = {}
local counter = 0

local function signature(id)
  local block = pending .. id .. padding
  for i = 1, 8 do Hi[i] = H_inner[i] end
  for at = 1, #block, 64 do compress(Hi, block, at) end
  -- The inner digest's words go into the outer block as they are.
  for i = 1, 8 do Ho[i] = H_outer[i]; outer_words[i - 1] = Hi[i] end
  compress_words(Ho, outer_words)
  for i = 1, 8 do digest[i] = tohex(Ho[i]) end
  return table.concat(digest)
end

local headers = {
  ["Content-Type"] = "application/json",
  ["X-Webhook-Timestamp"] = t,
  ["X-Webhook-Id"] = "wh_benchmark",
}

function request()
  counter = counter + 1
  local id = format(ID, counter)
  headers["X-Webhook-Signature"] = "t=" .. t .. ",v1=" .. signature(id)
  return wrk.format("POST", nil, headers, prefix .. id .. tail)
end

-- A check of the fast path against an HMAC computed from scratch.
do
  local id = format(ID, 0)
  local body = prefix .. id .. tail
  assert(#body == size, "body size")
  assert(signature(id) == hmac_hex(secret, t .. "." .. body), "fast HMAC differs")
end
