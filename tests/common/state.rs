//! Wiping a test's Redis key prefix, straight through the `redis` crate: the state store has
//! no "delete everything" of its own, so production code cannot wipe a namespace by mistake.

use redis::AsyncCommands;
use sluice::settings::RedisSettings;

/// Deletes every key under `prefix` (SCAN MATCH `prefix:*`, DEL in batches) on the Redis of
/// `redis`; returns how many keys went.
pub async fn wipe_prefix(redis: &RedisSettings, prefix: &str) -> redis::RedisResult<u64> {
    let client = match redis.tls_ca_file.as_str() {
        "" => redis::Client::open(redis.url.as_str())?,
        path => redis::Client::build_with_tls(
            redis.url.as_str(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(std::fs::read(path)?),
            },
        )?,
    };
    let mut conn = client.get_multiplexed_async_connection().await?;
    let keys: Vec<String> = {
        let mut iter: redis::AsyncIter<String> = conn.scan_match(format!("{prefix}:*")).await?;
        let mut keys = Vec::new();
        while let Some(key) = futures::StreamExt::next(&mut iter).await {
            keys.push(key?);
        }
        keys
    };
    for batch in keys.chunks(500) {
        let _: () = conn.del(batch).await?;
    }
    Ok(keys.len() as u64)
}
