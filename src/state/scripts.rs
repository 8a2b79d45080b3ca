//! Lua scripts that make each multi-key state change atomic in Redis.

use std::sync::LazyLock;

use redis::Script;

/// Appends one job event to the events stream (the outbox the relay publishes from), as a
/// snapshot of the job at this moment, numbered per job. Runs inside the script that changes
/// the state, so a state change and its event are one atomic step and never disagree.
const EMIT_EVENT: &str = r#"
local function emit_event(job_key, stream, event, now)
  local seq = redis.call('HINCRBY', job_key, 'event_seq', 1)
  local f = redis.call('HMGET', job_key, 'id', 'name', 'source', 'kind', 'output', 'status',
    'shards_total', 'shards_done', 'rows_total', 'rows_done', 'rows_failed', 'error',
    'correlation_id', 'reply_to')
  local body = {
    event = event, seq = seq, job_id = f[1], name = f[2] or '', source = f[3] or '',
    kind = f[4] or '', output = f[5] or '', status = f[6], at_ms = tonumber(now),
    counts = {
      shards_total = tonumber(f[7] or 0), shards_done = tonumber(f[8] or 0),
      rows_total = tonumber(f[9] or 0), rows_done = tonumber(f[10] or 0),
      rows_failed = tonumber(f[11] or 0),
    },
  }
  if f[12] and f[12] ~= '' then body.error = f[12] end
  if f[13] and f[13] ~= '' then body.correlation_id = f[13] end
  return redis.call('XADD', stream, '*', 'event', event, 'job', f[1], 'seq', seq,
    'reply_to', f[14] or '', 'body', cjson.encode(body))
end
"#;

fn with_events(body: &str) -> Script {
    Script::new(&format!("{EMIT_EVENT}{body}"))
}

/// KEYS: job hash, jobs index, idempotency key ('' for none), output-folder claim,
/// active-jobs set, events stream.
/// ARGV: id, created_ms, idempotency ttl, job key prefix, then field/value pairs.
/// Returns {1, id} when created, {0, existing id} when the idempotency key was taken,
/// {2, other id} when a job that has not ended writes to the same output folder.
pub static CREATE_JOB: LazyLock<Script> = LazyLock::new(|| {
    with_events(
        r#"
if KEYS[3] ~= '' then
  local existing = redis.call('GET', KEYS[3])
  if existing then return {0, existing} end
end
local holder = redis.call('GET', KEYS[4])
if holder then
  local status = redis.call('HGET', ARGV[4] .. holder, 'status')
  if status == 'queued' or status == 'planning' or status == 'running' then
    return {2, holder}
  end
end
redis.call('SET', KEYS[4], ARGV[1])
if KEYS[3] ~= '' then
  redis.call('SET', KEYS[3], ARGV[1], 'EX', tonumber(ARGV[3]))
end
for i = 5, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[1], 'id', ARGV[1])
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]), ARGV[1])
redis.call('SADD', KEYS[5], ARGV[1])
emit_event(KEYS[1], KEYS[6], 'job.submitted', ARGV[2])
return {1, ARGV[1]}
"#,
    )
});

/// KEYS: job hash, active-jobs set, events stream. ARGV: to, comma-separated allowed
/// from-states, job id, now (ms), then field/value pairs. A job that ends leaves the active
/// set. Emits `job.started` on planning, `job.progress` on running (the plan's counts) and
/// `job.<status>` when the job ends.
/// Returns {1, previous} when moved, {0, current} when refused, {-1, ''} when no such job.
pub static TRANSITION: LazyLock<Script> = LazyLock::new(|| {
    with_events(
        r#"
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return {-1, ''} end
for allowed in string.gmatch(ARGV[2], '[^,]+') do
  if allowed == current then
    redis.call('HSET', KEYS[1], 'status', ARGV[1])
    for i = 5, #ARGV, 2 do
      redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    end
    if ARGV[1] == 'succeeded' or ARGV[1] == 'failed' or ARGV[1] == 'cancelled' then
      redis.call('SREM', KEYS[2], ARGV[3])
      emit_event(KEYS[1], KEYS[3], 'job.' .. ARGV[1], ARGV[4])
    elseif current == ARGV[1] then
      -- A repeated move (a redelivered plan task re-entering planning) is no new event.
    elseif ARGV[1] == 'planning' then
      emit_event(KEYS[1], KEYS[3], 'job.started', ARGV[4])
    elseif ARGV[1] == 'running' then
      redis.call('HSET', KEYS[1], 'progress_event_ms', ARGV[4])
      emit_event(KEYS[1], KEYS[3], 'job.progress', ARGV[4])
    end
    return {1, current}
  end
end
return {0, current}
"#,
    )
});

/// KEYS: job hash, shards hash, live-progress hash, events stream.
/// ARGV: shard, record json, rows, failed rows, now (ms), progress event interval (ms),
/// truncated rows, input bytes.
/// Counts the shard once (only while the job runs), emits `job.progress` at most once per
/// interval (and always for the last shard), and returns
/// {newly committed 0/1, shards_done, shards_total, status}.
pub static COMMIT_SHARD: LazyLock<Script> = LazyLock::new(|| {
    with_events(
        r#"
local status = redis.call('HGET', KEYS[1], 'status')
-- The first word of an error reply is its code: redis clients read NOTFOUND as such.
if not status then return redis.error_reply('NOTFOUND no such job') end
local newly = 0
if status == 'running' and redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 1 then
  newly = 1
  redis.call('HINCRBY', KEYS[1], 'shards_done', 1)
  redis.call('HINCRBY', KEYS[1], 'rows_done', tonumber(ARGV[3]))
  redis.call('HINCRBY', KEYS[1], 'rows_failed', tonumber(ARGV[4]))
  redis.call('HINCRBY', KEYS[1], 'rows_truncated', tonumber(ARGV[7] or '0'))
  redis.call('HINCRBY', KEYS[1], 'bytes_done', tonumber(ARGV[8] or '0'))
  redis.call('HSET', KEYS[1], 'progress_ms', ARGV[5])
end
redis.call('HDEL', KEYS[3], ARGV[1])
local done = tonumber(redis.call('HGET', KEYS[1], 'shards_done') or '0')
local total = tonumber(redis.call('HGET', KEYS[1], 'shards_total') or '0')
if newly == 1 then
  local last = tonumber(redis.call('HGET', KEYS[1], 'progress_event_ms') or '0')
  if done >= total or tonumber(ARGV[5]) - last >= tonumber(ARGV[6]) then
    redis.call('HSET', KEYS[1], 'progress_event_ms', ARGV[5])
    emit_event(KEYS[1], KEYS[4], 'job.progress', ARGV[5])
  end
end
return {newly, done, total, status}
"#,
    )
});

/// KEYS: lease. ARGV: owner, ttl (ms). Takes a free lease or renews one's own; {1} when
/// held by `owner` afterwards, {0} when someone else holds it.
pub static HOLD_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
  return 1
end
return 0
"#,
    )
});

/// KEYS: lease. ARGV: owner. Deletes the lease only if `owner` holds it.
pub static RELEASE_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#,
    )
});

/// KEYS: relay lease, cursor, events stream. ARGV: owner, last published entry id.
/// Moves the cursor and trims published entries, only while `owner` holds the lease.
pub static ADVANCE_EVENT_CURSOR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('XTRIM', KEYS[3], 'MINID', ARGV[2])
redis.call('XDEL', KEYS[3], ARGV[2])
return 1
"#,
    )
});

/// KEYS: job hash, jobs index, output-folder claim, idempotency key ('' for none),
/// active-jobs set, events stream. ARGV: id, now (ms), reason.
/// Ends a job that was never queued with `job.failed`, then removes every trace of it (the
/// claim and the idempotency key only while they still name it).
pub static DISCARD_JOB: LazyLock<Script> = LazyLock::new(|| {
    with_events(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[3], 'finished_ms', ARGV[2])
emit_event(KEYS[1], KEYS[6], 'job.failed', ARGV[2])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('SREM', KEYS[5], ARGV[1])
if redis.call('GET', KEYS[3]) == ARGV[1] then redis.call('DEL', KEYS[3]) end
if KEYS[4] ~= '' and redis.call('GET', KEYS[4]) == ARGV[1] then redis.call('DEL', KEYS[4]) end
return 1
"#,
    )
});

/// KEYS: job lease, job fencing counter. ARGV: owner, ttl (ms).
/// Takes a free lease with a new fencing token (strictly greater than every earlier one);
/// returns the token, or 0 when someone holds the lease.
pub static ACQUIRE_JOB_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. token, 'PX', tonumber(ARGV[2]))
return token
"#,
    )
});

/// KEYS: job lease. ARGV: holder (`owner token`), ttl (ms). Extends the lease while the
/// holder still holds it; 1 when extended, 0 when it was lost.
pub static RENEW_JOB_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"#,
    )
});

/// KEYS: job lease, checkpoint pointer. ARGV: holder (`owner token`), pointer.
/// Records a checkpoint only while the holder holds the lease (fencing): a stale owner's
/// checkpoint is refused. 1 when recorded, 0 when refused.
pub static COMMIT_CHECKPOINT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"#,
    )
});

/// KEYS: shard lease, the job's shard fencing counters (hash), the job's shard owners
/// (hash). ARGV: owner, ttl (ms), shard. Takes a free shard lease with a fencing token
/// greater than every earlier one of that shard, and records the token as the shard's owner
/// (kept until the owner commits or hands the shard back, so the sweeper can tell a shard
/// whose owner died from one that is waiting in the queue). Returns the token, or 0 when
/// the lease is held.
pub static ACQUIRE_SHARD_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local token = redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. token, 'PX', tonumber(ARGV[2]))
redis.call('HSET', KEYS[3], ARGV[3], token)
return token
"#,
    )
});

/// KEYS: shard lease, the job's shard owners (hash). ARGV: holder (`owner token`), shard,
/// token, disown (`1`/`0`). Deletes the lease while the holder holds it and, with disown,
/// the shard's owner record while it still names this token. 1 when the lease was released.
pub static RELEASE_SHARD_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local released = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  released = 1
end
if ARGV[4] == '1' and redis.call('HGET', KEYS[2], ARGV[2]) == ARGV[3] then
  redis.call('HDEL', KEYS[2], ARGV[2])
end
return released
"#,
    )
});
