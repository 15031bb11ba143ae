//! The Lua scripts: one round trip per operation, the server's `TIME` decides expiry (C4, C5).
//!
//! Redis 7 replicates script effects, so `TIME` may precede writes. A lease is the hash field
//! `leases[app] = "<expiry µs>:<fence>:<holder>"`; it is held while `now < expiry` or while
//! the application has a pin (P1). Expired entries may linger until the next write touches
//! them; every reader treats them as vacant.

use std::sync::LazyLock;

use redis::Script;

/// Shared helpers, prepended to every script.
const PRELUDE: &str = r#"
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
-- expiry (number), fence (exact decimal string), holder (string)
local function parse(v)
  local a = string.find(v, ':', 1, true)
  local b = string.find(v, ':', a + 1, true)
  return tonumber(string.sub(v, 1, a - 1)), string.sub(v, a + 1, b - 1), string.sub(v, b + 1)
end
local function lease(exp, fence, holder)
  return string.format('%.0f', exp) .. ':' .. fence .. ':' .. holder
end
"#;

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
}

/// KEYS: leases, fences, pins(app). ARGV: app, unit, duration µs.
/// Returns the fence (> 0) if granted or extended, 0 if another unit holds the lease.
pub(crate) static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local app, unit, dur = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_us()
local v = redis.call('HGET', KEYS[1], app)
if v then
  local exp, fence, holder = parse(v)
  if exp > now or redis.call('SCARD', KEYS[3]) > 0 then
    if holder ~= unit then return 0 end
    -- C2: extend to max(old expiry, now + duration), keep the fence.
    if now + dur > exp then
      redis.call('HSET', KEYS[1], app, lease(now + dur, fence, unit))
    end
    return tonumber(fence)
  end
end
-- C1, F1: a new term. Seeding from server time keeps fences increasing even when the
-- counter was lost with an unpersisted restart.
local last = tonumber(redis.call('HGET', KEYS[2], app) or '0')
local fence = string.format('%.0f', math.max(last + 1, now))
redis.call('HSET', KEYS[2], app, fence)
redis.call('HSET', KEYS[1], app, lease(now + dur, fence, unit))
return tonumber(fence)
"#,
    )
});

/// KEYS: leases, pins(app). ARGV: app, unit. Returns the fence if `unit` holds the lease, else 0.
pub(crate) static CHECK: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local exp, fence, holder = parse(v)
if holder ~= ARGV[2] then return 0 end
if exp <= now_us() and redis.call('SCARD', KEYS[2]) == 0 then return 0 end
return tonumber(fence)
"#,
    )
});

/// KEYS: leases, pins(app). ARGV: app, unit, channel.
/// Returns 1 if the application is now vacant, 0 if another unit holds it (R2).
pub(crate) static REVOKE: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local app = ARGV[1]
local v = redis.call('HGET', KEYS[1], app)
if not v then return 1 end
local exp, fence, holder = parse(v)
if exp <= now_us() and redis.call('SCARD', KEYS[2]) == 0 then
  redis.call('HDEL', KEYS[1], app)
  return 1
end
if holder ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], app)
redis.call('PUBLISH', ARGV[3], 'R' .. app)
return 1
"#,
    )
});

/// KEYS: leases, pins(app). ARGV: app.
/// Returns -2 if vacant, -1 if held and pinned, else the µs left until expiry.
pub(crate) static INSPECT: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return -2 end
local exp = parse(v)
if redis.call('SCARD', KEYS[2]) > 0 then return -1 end
local left = exp - now_us()
if left <= 0 then return -2 end
return left
"#,
    )
});

/// KEYS: leases, pins(app), pinned. ARGV: app, entity.
pub(crate) static PIN: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local app = ARGV[1]
local v = redis.call('HGET', KEYS[1], app)
-- An expired lease is vacant: a pin must not revive it (P4 pins the next claimant).
if v and redis.call('SCARD', KEYS[2]) == 0 then
  local exp = parse(v)
  if exp <= now_us() then redis.call('HDEL', KEYS[1], app) end
end
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], app)
return 1
"#,
    )
});

/// KEYS: leases, pins(app), pinned. ARGV: app, entity, channel.
pub(crate) static UNPIN: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local app = ARGV[1]
if redis.call('SREM', KEYS[2], ARGV[2]) == 0 then return 1 end
if redis.call('SCARD', KEYS[2]) > 0 then return 1 end
redis.call('SREM', KEYS[3], app)
local v = redis.call('HGET', KEYS[1], app)
if not v then return 1 end
-- P3: expiry resumes at the claimed expiry, at once if that has passed.
local exp = parse(v)
if exp <= now_us() then
  redis.call('HDEL', KEYS[1], app)
  redis.call('PUBLISH', ARGV[3], 'R' .. app)
else
  redis.call('PUBLISH', ARGV[3], 'C' .. app)
end
return 1
"#,
    )
});

/// KEYS: pinned. ARGV: pins prefix. Returns `[app, [entity…], …]`.
pub(crate) static PINNED: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local out = {}
for _, app in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  out[#out + 1] = app
  out[#out + 1] = redis.call('SMEMBERS', ARGV[1] .. app)
end
return out
"#,
    )
});

/// KEYS: leases. ARGV: pins prefix. Returns `[app, holder, …]` of held leases (L1).
pub(crate) static LEADERS: LazyLock<Script> = LazyLock::new(|| {
    script(
        r#"
local all = redis.call('HGETALL', KEYS[1])
local now = now_us()
local out = {}
for i = 1, #all, 2 do
  local app = all[i]
  local exp, fence, holder = parse(all[i + 1])
  if exp > now or redis.call('SCARD', ARGV[1] .. app) > 0 then
    out[#out + 1] = app
    out[#out + 1] = holder
  end
end
return out
"#,
    )
});

/// A guarded script (F2): `body` runs only while `ARGV[2]` leads `ARGV[1]` with fence
/// `ARGV[3]`. KEYS: leases, pins(app), then the user's keys; ARGV: app, unit, fence, then the
/// user's arguments. The body sees only its own `KEYS` and `ARGV`.
/// Returns `{0}` if the unit does not lead with that fence, else `{1, result}`.
pub(crate) fn guarded(body: &str) -> Script {
    script(&format!(
        r#"
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return {{0}} end
local exp, fence, holder = parse(v)
if holder ~= ARGV[2] or fence ~= ARGV[3] then return {{0}} end
if exp <= now_us() and redis.call('SCARD', KEYS[2]) == 0 then return {{0}} end
local user_keys, user_argv = {{}}, {{}}
for i = 3, #KEYS do user_keys[#user_keys + 1] = KEYS[i] end
for i = 4, #ARGV do user_argv[#user_argv + 1] = ARGV[i] end
local function user(KEYS, ARGV)
{body}
end
return {{1, user(user_keys, user_argv)}}
"#
    ))
}

/// Guarded `SET KEYS[1] ARGV[1]`.
pub(crate) static GUARDED_SET: LazyLock<Script> =
    LazyLock::new(|| guarded("return redis.call('SET', KEYS[1], ARGV[1])"));

/// Guarded `DEL KEYS[1]`.
pub(crate) static GUARDED_DEL: LazyLock<Script> =
    LazyLock::new(|| guarded("return redis.call('DEL', KEYS[1])"));
