//! The command line: role commands (`api`, `worker`, `ingest`, `serve`), `schema`, and the
//! client commands (`submit`, `status`, `jobs`, `cancel`, `results`, `model push`) that talk
//! to the HTTP API.

mod bench;
mod bench_accounting;
mod bench_ceiling;
mod bench_job;
mod bench_texts;
pub mod client;
mod model_config;
mod model_push;
mod progress;
pub mod results;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

pub use bench::{BenchOptions, Report};
pub use client::{Client, ClientError};
pub use model_push::{PushOptions, Pushed, push};

use crate::app::{self, Roles};
use crate::job::{Pool, parse_json_spec, parse_toml_spec};
use crate::settings::Settings;
use crate::storage::Storage;
use crate::uri::S3Uri;

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Batch inference jobs on ONNX Runtime, queued on RabbitMQ"
)]
pub struct Cli {
    /// Settings file (default: ./sluice.toml when present). `SLUICE__SECTION__KEY`
    /// environment variables override it.
    #[arg(long, global = true, env = "SLUICE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// HTTP API: submit, status, cancel, list, health, metrics.
    Api,
    /// Take tasks of one pool and run them.
    Worker {
        #[arg(long)]
        pool: Option<Pool>,
    },
    /// Watch the S3 drop folder: files dropped under `<inbox><pipeline>/` become jobs.
    Ingest,
    /// Print a JSON Schema: `job-spec` (what to submit), `job-event` (the events exchange)
    /// or `submission-reply` (replies to AMQP submitters); or `openapi`, the OpenAPI 3.1
    /// description of the HTTP API (as served at `/openapi.json`).
    Schema {
        #[arg(default_value = "job-spec")]
        name: String,
    },
    /// API, worker and drop-folder watcher in one process, for a single machine.
    Serve {
        #[arg(long)]
        pool: Option<Pool>,
    },
    /// Submit a job spec (TOML or JSON file).
    Submit {
        file: PathBuf,
        /// Follow the job with a progress bar until it ends; exit status 0 only on success.
        #[arg(long)]
        wait: bool,
        /// Resubmitting with the same key returns the same job instead of a new one.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Show a job.
    Status {
        id: String,
        /// Keep showing progress until the job ends.
        #[arg(long)]
        follow: bool,
        /// Print the job as one JSON document (the API's `JobView`; with --follow, once it
        /// ends), and nothing else on stdout.
        #[arg(long)]
        json: bool,
    },
    /// List jobs, newest first.
    Jobs {
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print one JSON document, the API's `JobList`: `{"jobs": [JobView…],
        /// "unreadable": [{"id", "reason"}…]}`.
        #[arg(long)]
        json: bool,
    },
    /// Download a succeeded job's output parts (the ones its `_manifest.json` lists) through
    /// the API, with `_manifest.json` last; parts already there with the right size are
    /// skipped, so running it again resumes. Prints the folder.
    Results {
        id: String,
        /// Folder to download into (default: ./<ID>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only proceed if the parts are in this format (jsonl covers .jsonl.gz and
        /// .jsonl.zst); parts are never converted.
        #[arg(long, value_enum)]
        format: Option<results::ResultFormat>,
        /// Also download a failed job's parts: incomplete, or with more failed rows than
        /// the job allowed.
        #[arg(long)]
        partial: bool,
        /// Also download the error parts (failed rows and why) into `errors/`.
        #[arg(long)]
        errors: bool,
    },
    /// Cancel a job: running shards stop within one batch.
    Cancel { id: String },
    /// Texts/s of raw ONNX Runtime, the engine, whole jobs (1 and 2 workers) and the usual
    /// Python pipeline on the same news sentences, as ratios to raw ONNX Runtime. The whole
    /// jobs need the services (scripts/services.sh up).
    Bench(BenchOptions),
    /// Model packages.
    Model {
        #[command(subcommand)]
        command: ModelCommand,
    },
    /// API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a new random token; prints it once, and the `[[api.tokens]]` entry (with its
    /// sha256, never the token) to add to the settings or the tokens file.
    New {
        #[arg(long)]
        name: String,
        /// Comma-separated: submit, read, cancel, admin.
        #[arg(long, default_value = "submit,read")]
        scopes: String,
        /// Comma-separated S3 prefixes its jobs may use (`s3://bucket/prefix/`), or `*`.
        #[arg(long)]
        allow: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Upload DIR (model.onnx + tokenizer.json [+ sluice-model.toml]) as a package at URI.
    /// Settings left out are read from the model's own files (config.json, modules.json,
    /// 1_Pooling/config.json, tokenizer files); the model runs one text before upload.
    Push {
        dir: PathBuf,
        uri: String,
        #[arg(long)]
        name: Option<String>,
        /// Tokens per row after truncation; default: the model's position limit.
        #[arg(long)]
        max_length: Option<usize>,
        /// Embedding size; default: config.json's hidden_size or the graph's output.
        #[arg(long)]
        dimension: Option<usize>,
        /// mean, cls, last_token or none; default: the sentence-transformers pooling config.
        #[arg(long)]
        pooling: Option<crate::job::Pooling>,
        /// L2-normalise embeddings (true/false); default: whether modules.json has a
        /// Normalize module (true without a modules.json).
        #[arg(long)]
        normalize: Option<bool>,
        /// Weight precision of model.onnx: fp32, fp16 or int8.
        #[arg(long, default_value = "fp32")]
        precision: String,
    },
}

/// Runs one command; the exit status is the returned code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let mut settings = Settings::load(cli.config.as_deref())?;
    match cli.command {
        Command::Api => run_roles(settings, Roles::API).await,
        Command::Ingest => run_roles(settings, Roles::INGEST).await,
        Command::Schema { name } if name == "openapi" => {
            print!("{}", crate::api::openapi::render());
            Ok(0)
        }
        Command::Schema { name } => match crate::job::schema::render(&name) {
            Some(text) => {
                print!("{text}");
                Ok(0)
            }
            None => {
                let known: Vec<&str> = crate::job::schema::SCHEMAS
                    .iter()
                    .map(|(n, _, _)| *n)
                    .chain(["openapi"])
                    .collect();
                bail!("no schema `{name}`; choose one of {}", known.join(", "))
            }
        },
        Command::Worker { pool } => {
            if let Some(pool) = pool {
                settings.worker.pool = pool;
            }
            run_roles(settings, Roles::WORKER).await
        }
        Command::Serve { pool } => {
            if let Some(pool) = pool {
                settings.worker.pool = pool;
            }
            run_roles(settings, Roles::SERVE).await
        }
        Command::Submit {
            file,
            wait,
            idempotency_key,
        } => {
            let spec = read_spec(&file)?;
            let client = Client::from_settings(&settings.api)?;
            let created = match client.submit(&spec, idempotency_key.as_deref()).await {
                Ok(created) => created,
                Err(ClientError::Api { message, .. }) => {
                    eprintln!("{}: rejected: {message}", file.display());
                    return Ok(2);
                }
                Err(e) => return Err(e.into()),
            };
            if created.created {
                eprintln!("submitted {} as job {}", file.display(), created.id);
            } else {
                eprintln!(
                    "already submitted with this idempotency key: job {}",
                    created.id
                );
            }
            println!("{}", created.id);
            if wait {
                let job = progress::follow(&client, &created.id).await?;
                progress::print_job(&job);
                return Ok(progress::exit_code(&job));
            }
            Ok(0)
        }
        Command::Status { id, follow, json } => {
            let client = Client::from_settings(&settings.api)?;
            let job = if follow {
                progress::follow(&client, &id).await?
            } else {
                client.job(&id).await?
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&job)?);
            } else {
                progress::print_job(&job);
            }
            Ok(if follow { progress::exit_code(&job) } else { 0 })
        }
        Command::Jobs {
            status,
            limit,
            json,
        } => {
            let client = Client::from_settings(&settings.api)?;
            let list = client.jobs(status.as_deref(), limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                progress::print_list(&list);
            }
            Ok(0)
        }
        Command::Results {
            id,
            out,
            format,
            partial,
            errors,
        } => {
            let client = Client::from_settings(&settings.api)?;
            let options = results::ResultsOptions {
                out: out.unwrap_or_else(|| PathBuf::from(&id)),
                format,
                partial,
                errors,
            };
            match results::download(&client, &id, &options).await {
                Ok(done) => {
                    eprintln!(
                        "job {id}: {} parts downloaded ({} bytes), {} already there; {} rows",
                        done.parts, done.bytes, done.skipped, done.rows
                    );
                    println!("{}", options.out.display());
                    Ok(0)
                }
                Err(results::ResultsError::Api(ClientError::Api { message, .. })) => {
                    eprintln!("job {id}: {message}");
                    Ok(1)
                }
                Err(e @ results::ResultsError::Format(_)) => {
                    eprintln!("{e}");
                    Ok(2)
                }
                Err(e) => Err(e.into()),
            }
        }
        Command::Cancel { id } => {
            let client = Client::from_settings(&settings.api)?;
            let job = client.cancel(&id).await?;
            eprintln!("job {} is {}", job.id, job.status);
            Ok(0)
        }
        Command::Token {
            command:
                TokenCommand::New {
                    name,
                    scopes,
                    allow,
                },
        } => {
            let token = crate::api::auth::new_token();
            let list = |text: &str| -> Vec<String> {
                text.split(',')
                    .map(|s| format!("\"{}\"", s.trim()))
                    .filter(|s| s.len() > 2)
                    .collect()
            };
            eprintln!("token (shown once; give it to the client as api.client_token):");
            println!("{token}");
            eprintln!("add to the API's settings (or to api.tokens_file):");
            eprintln!(
                "[[api.tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nscopes = [{}]\nallow = [{}]",
                crate::api::auth::hash_token(&token),
                list(&scopes).join(", "),
                list(&allow).join(", ")
            );
            Ok(0)
        }
        Command::Bench(options) => {
            bench::run(settings, options).await?;
            Ok(0)
        }
        Command::Model {
            command:
                ModelCommand::Push {
                    dir,
                    uri,
                    name,
                    max_length,
                    dimension,
                    pooling,
                    normalize,
                    precision,
                },
        } => {
            let target = S3Uri::parse(&uri).map_err(anyhow::Error::msg)?;
            let storage = Storage::connect(&settings.s3).await;
            storage
                .create_bucket(&target.bucket)
                .await
                .with_context(|| format!("making sure bucket {} exists", target.bucket))?;
            let options = PushOptions {
                name,
                max_length,
                dimension,
                pooling,
                normalize,
                precision,
                engine: settings.engine.clone(),
            };
            let Pushed { manifest, warnings } = push(&storage, &dir, &target, &options).await?;
            for warning in warnings {
                eprintln!("warning: {warning}");
            }
            eprintln!(
                "pushed {} (model sha256 {}) to {}",
                manifest.name,
                manifest.model_sha256(),
                target.as_prefix()
            );
            Ok(0)
        }
    }
}

async fn run_roles(settings: Settings, roles: Roles) -> anyhow::Result<i32> {
    let shutdown = app::shutdown_on_signals();
    let running = app::start(settings, roles, shutdown).await?;
    running.wait().await;
    Ok(0)
}

/// Reads a spec file: `.json` as JSON, anything else as TOML.
pub fn read_spec(path: &Path) -> anyhow::Result<crate::job::JobSpec> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let parsed = if path.extension().is_some_and(|e| e == "json") {
        parse_json_spec(text.as_bytes())
    } else {
        parse_toml_spec(&text)
    };
    match parsed {
        Ok(spec) => Ok(spec),
        Err(e) => bail!("{}: {e}", path.display()),
    }
}
