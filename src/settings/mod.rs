//! Typed settings: built-in defaults → `sluice.toml` → `SLUICE__…` environment → `validate()`.

mod engine;
mod roles;
mod services;
#[cfg(test)]
mod tests;
mod validate;

use std::path::Path;

use serde::{Deserialize, Serialize};

pub use engine::{EngineSettings, ExecutionProvider};
pub use roles::{
    ApiSettings, ApiToken, IngestSettings, MetricsSettings, PlannerSettings, TrainingSettings,
    WorkerSettings,
};
pub use services::{AmqpSettings, RedisSettings, S3Settings};

/// Everything sluice can be configured with. One value is built at start and passed down.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Namespace for every queue, exchange and Redis key, so several deployments (or tests)
    /// can share one broker and one Redis without seeing each other.
    pub prefix: String,
    pub amqp: AmqpSettings,
    pub redis: RedisSettings,
    pub s3: S3Settings,
    pub api: ApiSettings,
    pub worker: WorkerSettings,
    pub engine: EngineSettings,
    pub planner: PlannerSettings,
    pub ingest: IngestSettings,
    pub training: TrainingSettings,
    pub metrics: MetricsSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            prefix: "sluice".into(),
            amqp: AmqpSettings::default(),
            redis: RedisSettings::default(),
            s3: S3Settings::default(),
            api: ApiSettings::default(),
            worker: WorkerSettings::default(),
            engine: EngineSettings::default(),
            planner: PlannerSettings::default(),
            ingest: IngestSettings::default(),
            training: TrainingSettings::default(),
            metrics: MetricsSettings::default(),
        }
    }
}

/// A setting that is missing or out of range.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("settings: {0}")]
    Load(#[from] config::ConfigError),
    #[error("setting {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl Settings {
    /// Defaults, then `file` (or `./sluice.toml` when it exists), then `SLUICE__SECTION__KEY`
    /// environment variables (e.g. `SLUICE__AMQP__URL`), then validation.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        let defaults = config::Config::try_from(&Settings::default())?;
        let mut builder = config::Config::builder().add_source(defaults);
        match file {
            Some(path) => builder = builder.add_source(config::File::from(path).required(true)),
            None => builder = builder.add_source(config::File::with_name("sluice").required(false)),
        }
        let mut settings: Settings = builder
            .add_source(
                config::Environment::with_prefix("SLUICE")
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("amqp.retry_delays_ms")
                    .with_list_parse_key("api.amqp_allow")
                    .try_parsing(true),
            )
            .build()?
            .try_deserialize()?;
        // The variable ONNX Runtime's own tools use, honoured when the setting is unset.
        if settings.engine.ort_dylib_path.is_empty()
            && let Ok(path) = std::env::var("ORT_DYLIB_PATH")
        {
            settings.engine.ort_dylib_path = path;
        }
        settings.validate()?;
        Ok(settings)
    }
}
