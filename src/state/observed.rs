//! The Redis connection with every command watched: a command that times out or cannot
//! reach Redis is logged (warn, with the command and the server), counted, and reported
//! into readiness (check `redis`); the next command that gets an answer clears it.

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

use crate::health::Health;
use crate::metrics;

#[derive(Clone)]
pub struct Observed {
    pub(super) inner: ConnectionManager,
    pub(super) health: Health,
    /// `host:port` of the server, for logs (never the password).
    pub(super) server: String,
}

impl Observed {
    fn watch<T>(&self, what: &str, result: Result<T, RedisError>) -> Result<T, RedisError> {
        match &result {
            // A server-side answer (WRONGTYPE, a script error) is not Redis being down.
            Err(e)
                if e.is_timeout()
                    || e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal() =>
            {
                let timed_out = e.is_timeout();
                metrics::dependency_error(metrics::Dependency::Redis, timed_out);
                tracing::warn!(
                    dependency = "redis",
                    op = what,
                    target = %self.server,
                    timed_out,
                    error = %e,
                    "Redis command failed (deadline: redis.response_timeout_ms); the connection reconnects on its own"
                );
                self.health
                    .report("redis", Some(format!("{what} on {}: {e}", self.server)));
            }
            _ => self.health.report("redis", None),
        }
        result
    }
}

/// The command's name (`HGETALL`, `EVALSHA`), for logs: never its arguments (keys and specs).
fn command_name(cmd: &Cmd) -> String {
    cmd.args_iter()
        .next()
        .and_then(|arg| match arg {
            redis::Arg::Simple(bytes) => std::str::from_utf8(bytes).ok().map(str::to_uppercase),
            _ => None,
        })
        .unwrap_or_else(|| "command".into())
}

impl ConnectionLike for Observed {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = self.inner.req_packed_command(cmd).await;
            self.watch(&command_name(cmd), result)
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = self
                .inner
                .req_packed_commands(pipeline, offset, count)
                .await;
            self.watch("pipeline", result)
        })
    }

    fn get_db(&self) -> i64 {
        self.inner.get_db()
    }
}

/// `host:port` of a Redis URL, without credentials.
pub fn server_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.split('/').next().unwrap_or(rest).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn servers_are_named_without_credentials() {
        assert_eq!(
            super::server_of("rediss://:s3cret@cache:6380/0"),
            "cache:6380"
        );
        assert_eq!(
            super::server_of("redis://127.0.0.1:6379/"),
            "127.0.0.1:6379"
        );
    }
}
