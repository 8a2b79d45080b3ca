//! Drives a shard's stages: one after another (`worker.pipeline_depth = 0`), or overlapped
//! through bounded channels so the next chunks are read and the last ones written while the
//! engine runs. Both write the same chunks in the same order, so the parts are identical.

use tokio::sync::mpsc;

use super::TaskError;
use super::output::Writer;
use super::shard::ShardRun;
use super::shard_stages::{Chunk, Halt, InFlight, ShardReader};

impl ShardRun<'_> {
    /// Reads, embeds and writes every row; false when the job stopped running meanwhile.
    /// Every non-blank record ends written or failed, every blank line skipped: the counts
    /// per piece are what the finisher reconciles with the plan.
    pub(super) async fn process(&self, writer: &mut Writer) -> Result<bool, TaskError> {
        let mut reader = ShardReader::new(self);
        let depth = self.ctx.settings.worker.pipeline_depth;
        let ended = if depth == 0 {
            self.serial(&mut reader, writer).await
        } else {
            self.overlapped(&mut reader, writer, depth).await
        };
        // The read side's counts and ids join the write side's.
        for (counts, read) in writer.counts.iter_mut().zip(&reader.counts) {
            counts.read += read.read;
            counts.skipped += read.skipped;
            counts.failed += read.failed;
        }
        writer.ids = std::mem::take(&mut reader.ids);
        match ended {
            Ok(()) => Ok(true),
            Err(Halt::Stopped) => Ok(false),
            Err(Halt::Failed(e)) => Err(e),
        }
    }

    /// Rows per engine request: whole chunks up to `sort_window_rows`, at least one.
    fn window_rows(&self) -> usize {
        self.ctx.settings.worker.sort_window_rows.max(1)
    }

    /// Read a window, embed it, write it; again.
    async fn serial(
        &self,
        reader: &mut ShardReader<'_, '_>,
        writer: &mut Writer,
    ) -> Result<(), Halt> {
        let mut live_rows = 0;
        loop {
            let mut window = Vec::new();
            let mut rows = 0;
            while rows < self.window_rows() {
                let Some(chunk) = reader.next_chunk().await? else {
                    break;
                };
                rows += chunk.len();
                window.push(chunk);
            }
            if window.is_empty() {
                return Ok(());
            }
            let sent = self.send_window(window, &mut live_rows).await?;
            for (chunk, outputs) in self.answers(sent).await? {
                self.write_chunk(writer, chunk, outputs).await?;
            }
        }
    }

    /// The three stages at once, `depth` chunks between reading and the engine, one window
    /// queued behind the engine's, and the writer a window behind. The first stage to fail
    /// or stop ends the others (their futures are dropped).
    async fn overlapped(
        &self,
        reader: &mut ShardReader<'_, '_>,
        writer: &mut Writer,
        depth: usize,
    ) -> Result<(), Halt> {
        let (read_to, mut read_from) = mpsc::channel::<Chunk>(depth);
        let (sent_to, mut sent_from) = mpsc::channel::<InFlight>(1);
        let read = async move {
            while let Some(chunk) = reader.next_chunk().await? {
                if read_to.send(chunk).await.is_err() {
                    break;
                }
            }
            Ok::<(), Halt>(())
        };
        let send = async move {
            let mut live_rows = 0;
            let mut done = false;
            while !done {
                let mut window = Vec::new();
                let mut rows = 0;
                while rows < self.window_rows() {
                    let Some(chunk) = read_from.recv().await else {
                        done = true;
                        break;
                    };
                    rows += chunk.len();
                    window.push(chunk);
                }
                if window.is_empty() {
                    break;
                }
                let sent = self.send_window(window, &mut live_rows).await?;
                if sent_to.send(sent).await.is_err() {
                    break;
                }
            }
            Ok::<(), Halt>(())
        };
        let write = async move {
            while let Some(sent) = sent_from.recv().await {
                for (chunk, outputs) in self.answers(sent).await? {
                    self.write_chunk(writer, chunk, outputs).await?;
                }
            }
            Ok::<(), Halt>(())
        };
        tokio::try_join!(read, send, write).map(|_| ())
    }
}
