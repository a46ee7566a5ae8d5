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
        // Header bytes of this document still to drop (the first document keeps its own),
        // and its last bytes held back until the document ends: they may be its footer,
        // whichever chunks it was cut into.
        let mut skip = if i == 0 { 0 } else { header };
        let mut held: Vec<u8> = Vec::new();
        let mut ended = false;
        while let Some(chunk) = doc.next().await {
            let chunk = chunk?;
            let cut = skip.min(chunk.xes.len());
            skip -= cut;
            held.extend_from_slice(&chunk.xes[cut..]);
            if chunk.last {
                if !held.ends_with(FOOTER) {
                    return Err(Status::internal(
                        "a partition's XES document did not end with </log>",
                    ));
                }
                held.truncate(held.len() - FOOTER.len());
                total.traces += chunk.traces;
                total.events += chunk.events;
                total.dropped_events += chunk.dropped_events;
                total.evicted_cases += chunk.evicted_cases;
            }
            let keep = if chunk.last { 0 } else { FOOTER.len() };
            if held.len() > keep {
                let rest = held.split_off(held.len() - keep);
                let part = XesChunk {
                    xes: std::mem::replace(&mut held, rest),
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// One document as an export sends it: `header`, the traces, `</log>`, cut into chunks of
    /// `cut` bytes (the header split across chunks when `cut` is small).
    fn doc(header: &str, traces: &[&str], cut: usize) -> Vec<Result<XesChunk, Status>> {
        let mut all = header.to_string();
        for t in traces {
            all.push_str(t);
        }
        all.push_str("</log>\n");
        let bytes = all.into_bytes();
        let pieces: Vec<&[u8]> = bytes.chunks(cut).collect();
        let n = pieces.len();
        pieces
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                Ok(XesChunk {
                    xes: p.to_vec(),
                    last: i + 1 == n,
                    traces: if i + 1 == n { traces.len() as u64 } else { 0 },
                    events: if i + 1 == n {
                        2 * traces.len() as u64
                    } else {
                        0
                    },
                    ..XesChunk::default()
                })
            })
            .collect()
    }

    async fn joined(docs: Vec<Vec<Result<XesChunk, Status>>>, header: usize) -> (String, XesChunk) {
        let streams = docs.into_iter().map(tokio_stream::iter).collect();
        let mut out = Vec::new();
        let mut last = None;
        let mut s = Box::pin(join(streams, header));
        while let Some(c) = s.next().await {
            let c = c.expect("chunk");
            out.extend_from_slice(&c.xes);
            if c.last {
                last = Some(c);
            }
        }
        (String::from_utf8(out).unwrap(), last.expect("a last chunk"))
    }

    #[tokio::test]
    async fn documents_join_into_one_whatever_the_chunk_boundaries() {
        let header = "<?xml?>\n<log name=\"x\">\n";
        for cut in [1, 3, 7, 24, 1000] {
            let (xml, last) = joined(
                vec![
                    doc(header, &["<trace>a</trace>\n"], cut),
                    doc(header, &[], cut),
                    doc(header, &["<trace>b</trace>\n", "<trace>c</trace>\n"], cut),
                ],
                header.len(),
            )
            .await;
            assert_eq!(
                xml,
                "<?xml?>\n<log name=\"x\">\n<trace>a</trace>\n<trace>b</trace>\n\
                 <trace>c</trace>\n</log>\n",
                "cut {cut}"
            );
            assert_eq!((last.traces, last.events), (3, 6), "cut {cut}");
        }
    }

    #[tokio::test]
    async fn a_document_cut_short_fails_the_join() {
        let header = "<log>\n";
        let mut short = doc(header, &["<trace>a</trace>\n"], 4);
        short.pop();
        let streams = vec![
            tokio_stream::iter(doc(header, &[], 4)),
            tokio_stream::iter(short),
        ];
        let mut s = Box::pin(join(streams, header.len()));
        let mut failed = None;
        while let Some(c) = s.next().await {
            if let Err(e) = c {
                failed = Some(e);
            }
        }
        assert_eq!(failed.expect("an error").code(), tonic::Code::Unavailable);
    }
}
