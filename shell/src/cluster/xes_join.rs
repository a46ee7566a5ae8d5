//! One XES document from several: the export of each partition (or owner) is a complete
//! document with the same header; the joined stream passes the first document's header, every
//! document's traces in turn, and one closing `</log>`, with the counts summed in the last
//! chunk. A document that ends without its last chunk fails the joined stream (as a single
//! node's export does).

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use crate::proto::XesChunk;

const FOOTER: &[u8] = b"</log>\n";

/// Joins `docs` (each a stream of one document, `header` bytes of header first) in order.
pub fn join<S>(docs: Vec<S>, header: usize) -> impl Stream<Item = Result<XesChunk, Status>>
where
    S: Stream<Item = Result<XesChunk, Status>> + Send + Unpin + 'static,
{
    // Two chunks in flight: the client's pace is the back-pressure, as on a single node.
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        if let Err(s) = pump(docs, header, &tx).await {
            let _ = tx.send(Err(s)).await;
        }
    });
    ReceiverStream::new(rx)
}

/// Sends the joined document; Ok also when the client went away (nothing more to send).
async fn pump<S>(
    docs: Vec<S>,
    header: usize,
    tx: &mpsc::Sender<Result<XesChunk, Status>>,
) -> Result<(), Status>
where
    S: Stream<Item = Result<XesChunk, Status>> + Unpin,
{
    if docs.is_empty() {
        return Err(Status::unavailable("no partition is served; retry"));
    }
    let n = docs.len();
    let mut total = XesChunk {
        last: true,
        ..XesChunk::default()
    };
    for (i, mut doc) in docs.into_iter().enumerate() {
        // Header bytes of this document still to drop (the first document keeps its own).
        let mut skip = if i == 0 { 0 } else { header };
        let mut ended = false;
        while let Some(chunk) = doc.next().await {
            let chunk = chunk?;
            let mut xes = chunk.xes;
            if chunk.last {
                if !xes.ends_with(FOOTER) {
                    return Err(Status::internal(
                        "a partition's XES document did not end with </log>",
                    ));
                }
                xes.truncate(xes.len() - FOOTER.len());
                total.traces += chunk.traces;
                total.events += chunk.events;
                total.dropped_events += chunk.dropped_events;
                total.evicted_cases += chunk.evicted_cases;
            }
            let cut = skip.min(xes.len());
            skip -= cut;
            if cut < xes.len() {
                let part = XesChunk {
                    xes: xes[cut..].to_vec(),
                    ..XesChunk::default()
                };
                if tx.send(Ok(part)).await.is_err() {
                    return Ok(());
                }
            }
            if chunk.last {
                ended = true;
                break;
            }
        }
        if !ended {
            return Err(Status::unavailable(format!(
                "the export of partition group {} of {n} ended before its last chunk; retry",
                i + 1
            )));
        }
    }
    total.xes = FOOTER.to_vec();
    let _ = tx.send(Ok(total)).await;
    Ok(())
}
