//! The Lua scripts: one round trip per operation; the server's clock alone decides expiry
//! (C4, C5).
//!
//! A lease is the key `lease:<len>:<app><unit>`, holding the term's fence, with the lease's
//! expiry as its TTL (`SET … PX`, `PEXPIRE … GT`), so Redis's own expiry ends it: a token
//! check is a plain `GET`, and a holder's renewal is `GET` + `PEXPIRE GT` inside the claim
//! script (or a bare `PEXPIRE GT` from a handle that read the fence moments ago).
//! While an application is pinned its lease key has no TTL and the claimed expiry waits in
//! `pinexp` (P1, P3). Redis 7 replicates script effects, so `TIME` may precede writes.
//! Durations are whole milliseconds (rounded up by the caller).

use std::sync::LazyLock;

use redis::Script;

/// The scripts that publish on the namespace's channel, in one flavour per deployment.
pub(crate) struct Publishing {
    /// See [`CLAIM_LUA`].
    pub(crate) claim: Script,
    /// See [`REVOKE_LUA`].
    pub(crate) revoke: Script,
    /// See [`UNPIN_LUA`].
    pub(crate) unpin: Script,
}

impl Publishing {
    fn new(publish: &str) -> Self {
        let flavour = |lua: &str| Script::new(&lua.replace("redis.call('PUBLISH'", publish));
        Publishing {
            claim: flavour(CLAIM_LUA),
            revoke: flavour(REVOKE_LUA),
            unpin: flavour(UNPIN_LUA),
        }
    }
}

/// `PUBLISH`: one server and Sentinel.
pub(crate) static PLAIN: LazyLock<Publishing> =
    LazyLock::new(|| Publishing::new("redis.call('PUBLISH'"));

/// `SPUBLISH` (Redis 7): a cluster. The channel carries the namespace's hash tag, so it is in
/// the slot of the keys the script writes, and the message goes only to that slot's shard
/// (plain `PUBLISH` would be broadcast over the whole cluster bus).
pub(crate) static SHARDED: LazyLock<Publishing> =
    LazyLock::new(|| Publishing::new("redis.call('SPUBLISH'"));

/// KEYS: lease(app, unit), owners. ARGV: duration ms, namespace key prefix, app, unit, and the
/// highest fence the client has seen (a new term's fence is above it, F1).
/// A new term publishes `E<fence>:<ttl ms, -1 if pinned>:<unit length>:<unit><app>` on the
/// namespace's channel; an extension publishes nothing (the hot path stays one `PEXPIRE`).
/// Returns the fence (> 0) if granted or extended, 0 if another unit holds the lease.
///
/// The holder's renewal, the hot path, touches only its lease key (`GET`, `PEXPIRE GT`) and
/// takes two keys and few arguments, because the per-call cost of a script grows with them.
/// `owners` is declared so a claim during a cluster slot migration is never run on a master
/// without it (see `claim_script`); the other keys, all under the namespace's hash tag, are
/// named in the script.
const CLAIM_LUA: &str = r#"
local fence = redis.call('GET', KEYS[1])
if fence then
  -- C2: the holder extends to max(old expiry, now + duration); GT never shortens. A pinned
  -- lease has no TTL (GT leaves it so): remember the longer claim for the last unpin (P3).
  if redis.call('PEXPIRE', KEYS[1], ARGV[1], 'GT') == 0 and redis.call('PTTL', KEYS[1]) == -1 then
    local pinexp = ARGV[2] .. 'pinexp'
    local t = redis.call('TIME')
    local target = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
    local old = tonumber(redis.call('HGET', pinexp, ARGV[3]) or '0')
    if target > old then
      redis.call('HSET', pinexp, ARGV[3], string.format('%.0f', target))
    end
  end
  return tonumber(fence)
end
local prefix, app, unit = ARGV[2], ARGV[3], ARGV[4]
local owners = KEYS[2]
local owner = redis.call('HGET', owners, app)
if owner and redis.call('EXISTS', prefix .. 'lease:' .. #app .. ':' .. app .. owner) == 1 then
  return 0
end
-- C1, F1: a new term. Seeding from server time (µs) keeps fences increasing even when the
-- counter was lost with an unpersisted restart; the client's highest fence seen keeps them
-- increasing after a failover to a replica that missed the last term or whose clock is behind.
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local fences = prefix .. 'fences'
local last = tonumber(redis.call('HGET', fences, app) or '0')
local f = string.format('%.0f', math.max(last + 1, now_us, tonumber(ARGV[5] or '0') + 1))
redis.call('HSET', fences, app, f)
redis.call('HSET', owners, app, unit)
local ttl = ARGV[1]
if redis.call('SCARD', prefix .. 'pins:' .. app) > 0 then
  -- P4: a pin waiting on a vacant application pins the new lease.
  redis.call('SET', KEYS[1], f)
  local expiry = math.floor(now_us / 1000) + tonumber(ARGV[1])
  redis.call('HSET', prefix .. 'pinexp', app, string.format('%.0f', expiry))
  ttl = '-1'
else
  redis.call('SET', KEYS[1], f, 'PX', ARGV[1])
end
-- O1: watchers learn of the new term, and when it expires unless extended (see watch.rs).
redis.call('PUBLISH', prefix .. 'released', 'E' .. f .. ':' .. ttl .. ':' .. #unit .. ':' .. unit .. app)
return tonumber(f)
"#;

/// KEYS: lease(app, unit), owners, pinexp. ARGV: app, lease prefix of app, channel.
/// Publishes `V<fence>:<app>` when it ends a term. Returns 1 if the application is now vacant, 0 if another unit holds it (R2).
/// `GET` then `DEL`, not `GETDEL` (one call fewer): operators grant the store's commands by
/// name (leadership-testkit/tests/security_redis.rs lists them), so a command the store did
/// not send before would fail every revoke under such an ACL after an upgrade.
const REVOKE_LUA: &str = r#"
local fence = redis.call('GET', KEYS[1])
if fence then
  redis.call('DEL', KEYS[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('PUBLISH', ARGV[3], 'V' .. fence .. ':' .. ARGV[1])
  return 1
end
local owner = redis.call('HGET', KEYS[2], ARGV[1])
if owner and redis.call('EXISTS', ARGV[2] .. owner) == 1 then return 0 end
return 1
"#;

/// KEYS: owners. ARGV: app, lease prefix of app.
/// Returns -2 if vacant, -1 if held and pinned, else the ms left until expiry.
pub(crate) static INSPECT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local owner = redis.call('HGET', KEYS[1], ARGV[1])
if not owner then return -2 end
return redis.call('PTTL', ARGV[2] .. owner)
"#,
    )
});

/// KEYS: pins(app), pinned, owners, pinexp. ARGV: app, entity, lease prefix of app.
pub(crate) static PIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local added = redis.call('SADD', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
if added == 1 and redis.call('SCARD', KEYS[1]) == 1 then
  -- The first pin stops the clock, keeping the claimed expiry for the last unpin (P1, P3).
  local owner = redis.call('HGET', KEYS[3], ARGV[1])
  if owner then
    local lease = ARGV[3] .. owner
    local at = redis.call('PEXPIRETIME', lease)
    if at > 0 then
      redis.call('HSET', KEYS[4], ARGV[1], string.format('%.0f', at))
      redis.call('PERSIST', lease)
    end
  end
end
return 1
"#,
    )
});

/// KEYS: pins(app), pinned, owners, pinexp. ARGV: app, entity, lease prefix of app, channel.
/// Publishes `V<fence>:<app>` if the last unpin ended the term (its claimed expiry had
/// passed), `C<app>` if it restarted its expiry.
const UNPIN_LUA: &str = r#"
if redis.call('SREM', KEYS[1], ARGV[2]) == 0 then return 1 end
if redis.call('SCARD', KEYS[1]) > 0 then return 1 end
redis.call('SREM', KEYS[2], ARGV[1])
local at = redis.call('HGET', KEYS[4], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
local owner = redis.call('HGET', KEYS[3], ARGV[1])
if not owner then return 1 end
local lease = ARGV[3] .. owner
local fence = redis.call('GET', lease)
if not fence then return 1 end
-- P3: expiry resumes at the claimed expiry; a time already past deletes the key at once.
if at then redis.call('PEXPIREAT', lease, at) else redis.call('DEL', lease) end
if redis.call('EXISTS', lease) == 1 then
  redis.call('PUBLISH', ARGV[4], 'C' .. ARGV[1])
else
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('PUBLISH', ARGV[4], 'V' .. fence .. ':' .. ARGV[1])
end
return 1
"#;

/// KEYS: owners. ARGV: lease prefix. Returns `[server time µs, app, holder, fence, pttl
/// ms (-1 while pinned), …]` of held leases at one instant (O1): the watch's snapshot and the
/// expiry times its timer starts from. Every term that starts later has a fence at or above
/// the server time (F1's seed), which makes it the snapshot's floor.
pub(crate) static SNAPSHOT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local out = {string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]))}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local app, owner = all[i], all[i + 1]
  local lease = ARGV[1] .. #app .. ':' .. app .. owner
  local fence = redis.call('GET', lease)
  if fence then
    out[#out + 1] = app
    out[#out + 1] = owner
    out[#out + 1] = fence
    out[#out + 1] = tostring(redis.call('PTTL', lease))
  end
end
return out
"#,
    )
});

/// KEYS: pinned. ARGV: pins prefix. Returns `[app, [entity…], …]`.
pub(crate) static PINNED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
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

/// KEYS: owners. ARGV: lease prefix. Returns `[app, holder, …]` of held leases (L1), and
/// forgets owners whose lease has ended.
pub(crate) static LEADERS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local app, owner = all[i], all[i + 1]
  if redis.call('EXISTS', ARGV[1] .. #app .. ':' .. app .. owner) == 1 then
    out[#out + 1] = app
    out[#out + 1] = owner
  else
    redis.call('HDEL', KEYS[1], app)
  end
end
return out
"#,
    )
});

/// A guarded script (F2): `body` runs only while the lease key `KEYS[1]` holds the fence
/// `ARGV[1]`, i.e. while that unit leads with that fence. The user's keys and arguments follow;
/// the body sees only its own `KEYS` and `ARGV`.
/// Returns `{0}` if the unit does not lead with that fence, else `{1, result}`.
pub(crate) fn guarded(body: &str) -> Script {
    Script::new(&format!(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {{0}} end
local user_keys, user_argv = {{}}, {{}}
for i = 2, #KEYS do user_keys[#user_keys + 1] = KEYS[i] end
for i = 2, #ARGV do user_argv[#user_argv + 1] = ARGV[i] end
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
