//! Times the engine alone (tokenize + batch + run + pool) on a JSONL file's "text" field, in
//! chunks like a worker sends them: `cargo run --example engine_speed -- MODEL_DIR FILE.jsonl`.
//! (`ORT_DYLIB_PATH` must point at the ONNX Runtime library.)

use std::time::Instant;

use sluice::engine::package::{FileDigest, IoNames, ModelTask, Pooling, digest_file};
use sluice::engine::{Embedder, ModelManifest};
use sluice::settings::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::Path::new(&args[1]);
    let texts: Vec<String> = std::fs::read_to_string(&args[2])?
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .map(|v| v["text"].as_str().unwrap_or_default().to_string())
        })
        .collect::<Result<_, _>>()?;
    let chunk: usize = args.get(3).map_or(256, |c| c.parse().unwrap());
    let files = [
        ("model.onnx", digest_file(&dir.join("model.onnx"))?),
        ("tokenizer.json", digest_file(&dir.join("tokenizer.json"))?),
    ]
    .into_iter()
    .map(|(n, d): (&str, FileDigest)| (n.to_string(), d))
    .collect();
    let manifest = ModelManifest {
        name: "bench".into(),
        task: ModelTask::Embed,
        precision: "int8".into(),
        max_length: 256,
        pooling: Pooling::Mean,
        normalize: true,
        dimension: 384,
        names: IoNames::default(),
        files,
    };
    let settings = Settings::load(None)?.engine;
    let embedder = Embedder::load(dir, &manifest, &settings)?;
    embedder.embed(texts[..64].to_vec()).await?;
    let started = Instant::now();
    for part in texts.chunks(chunk) {
        embedder.embed(part.to_vec()).await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{} texts in {seconds:.1} s = {:.1} texts/s (chunks of {chunk})",
        texts.len(),
        texts.len() as f64 / seconds
    );
    Ok(())
}
