//! Lua scripts that make each multi-key state change atomic in Redis.

use std::sync::LazyLock;

use redis::Script;

/// KEYS: job hash, jobs index, idempotency key ('' for none), output-folder claim,
/// active-jobs set.
/// ARGV: id, created_ms, idempotency ttl, job key prefix, then field/value pairs.
/// Returns {1, id} when created, {0, existing id} when the idempotency key was taken,
/// {2, other id} when a job that has not ended writes to the same output folder.
pub static CREATE_JOB: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
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
return {1, ARGV[1]}
"#,
    )
});

/// KEYS: job hash, active-jobs set. ARGV: to, comma-separated allowed from-states, job id,
/// then field/value pairs. A job that ends leaves the active set.
/// Returns {1, previous} when moved, {0, current} when refused, {-1, ''} when no such job.
pub static TRANSITION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local current = redis.call('HGET', KEYS[1], 'status')
if not current then return {-1, ''} end
for allowed in string.gmatch(ARGV[2], '[^,]+') do
  if allowed == current then
    redis.call('HSET', KEYS[1], 'status', ARGV[1])
    for i = 4, #ARGV, 2 do
      redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    end
    if ARGV[1] == 'succeeded' or ARGV[1] == 'failed' or ARGV[1] == 'cancelled' then
      redis.call('SREM', KEYS[2], ARGV[3])
    end
    return {1, current}
  end
end
return {0, current}
"#,
    )
});

/// KEYS: job hash, shards hash, live-progress hash.
/// ARGV: shard, record json, rows, failed rows, now (ms).
/// Counts the shard once (only while the job runs) and returns
/// {newly committed 0/1, shards_done, shards_total, status}.
pub static COMMIT_SHARD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return redis.error_reply('no such job') end
local newly = 0
if status == 'running' and redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 1 then
  newly = 1
  redis.call('HINCRBY', KEYS[1], 'shards_done', 1)
  redis.call('HINCRBY', KEYS[1], 'rows_done', tonumber(ARGV[3]))
  redis.call('HINCRBY', KEYS[1], 'rows_failed', tonumber(ARGV[4]))
  redis.call('HSET', KEYS[1], 'progress_ms', ARGV[5])
end
redis.call('HDEL', KEYS[3], ARGV[1])
local done = tonumber(redis.call('HGET', KEYS[1], 'shards_done') or '0')
local total = tonumber(redis.call('HGET', KEYS[1], 'shards_total') or '0')
return {newly, done, total, status}
"#,
    )
});
