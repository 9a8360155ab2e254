//! `Content-Encoding: gzip` for streams, event by event, with no compressor
//! per stream.
//!
//! A gzip body is a header, one DEFLATE stream and a trailer (CRC-32 and
//! length of the plain bytes). DEFLATE lets a stream be any sequence of
//! blocks, and a block that ends with a sync flush needs nothing from the
//! blocks before it. So each event's shared bytes (`Frame::sse`) are
//! compressed once, on their own, the first time a compressed stream
//! delivers them, and every compressed stream copies the same compressed
//! bytes, as plain streams share the plain ones. What differs per stream
//! (the `id:` line, the opening, `auth:expired`) is small and goes in
//! stored (uncompressed) blocks. A stream keeps only a CRC and a length:
//! an idle compressed stream costs what a plain one does, and each event
//! is decodable the moment its chunk arrives.
//!
//! The cost is the ratio: a compressor that kept a window across events
//! would also find what repeats between them. Measured figures are in the
//! README.

use std::cell::RefCell;

use axum::body::Bytes;
use axum::http::HeaderMap;
use flate2::{Compress, Compression, FlushCompress};

use super::sse::PING;
use crate::domain::frame::Frame;

/// A gzip header: magic, DEFLATE, no flags, no time, no extra flags,
/// OS unknown.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// An empty stored block marked final: the end of the DEFLATE stream.
const LAST_BLOCK: [u8; 5] = [0x01, 0x00, 0x00, 0xff, 0xff];

/// Whether the request's `Accept-Encoding` takes gzip (`gzip` or `*` with
/// a quality above zero).
pub fn accepted(headers: &HeaderMap) -> bool {
    headers
        .get_all("accept-encoding")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let quality = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok());
            (coding.eq_ignore_ascii_case("gzip") || coding == "*")
                && quality.is_some_and(|q| q > 0.0)
        })
}

/// The gzip state of one stream: what its trailer needs.
pub struct Gzip {
    crc: crc32fast::Hasher,
    len: u32,
}

impl Gzip {
    /// Start a body: the gzip header goes into `out`.
    pub fn start(out: &mut Vec<u8>) -> Gzip {
        out.extend_from_slice(&HEADER);
        Gzip {
            crc: crc32fast::Hasher::new(),
            len: 0,
        }
    }

    /// Bytes of this stream only, in stored blocks.
    pub fn private(&mut self, out: &mut Vec<u8>, plain: &[u8]) {
        self.count(plain);
        for block in plain.chunks(u16::MAX as usize) {
            let len = block.len() as u16;
            out.push(0x00);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&(!len).to_le_bytes());
            out.extend_from_slice(block);
        }
    }

    /// An event's shared bytes, compressed once for every stream.
    pub fn shared(&mut self, out: &mut Vec<u8>, frame: &Frame) {
        self.count(&frame.sse);
        out.extend_from_slice(frame.deflated.get_or_init(|| deflate(&frame.sse)));
    }

    /// The heartbeat (`sse::PING`), compressed once for every stream.
    pub fn ping(&mut self, out: &mut Vec<u8>) {
        static DEFLATED: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
        self.count(PING);
        out.extend_from_slice(DEFLATED.get_or_init(|| deflate(PING)));
    }

    /// End the body: the last block and the trailer.
    pub fn finish(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&LAST_BLOCK);
        out.extend_from_slice(&self.crc.finalize().to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
    }

    fn count(&mut self, plain: &[u8]) {
        self.crc.update(plain);
        // ISIZE is the length modulo 2^32.
        self.len = self.len.wrapping_add(plain.len() as u32);
    }
}

/// `plain` as DEFLATE blocks that need no earlier block and end on a byte
/// boundary (a sync flush), so they can go anywhere in any stream. One
/// compressor per thread, reset each time: its state is ~300 KiB, too much
/// to make per event.
fn deflate(plain: &[u8]) -> Bytes {
    thread_local! {
        static COMPRESS: RefCell<Compress> = RefCell::new(Compress::new(Compression::fast(), false));
    }
    COMPRESS.with(|c| {
        let mut c = c.borrow_mut();
        c.reset();
        // A sync flush of incompressible input may exceed it by a few bytes
        // per 16 KiB, plus the flush marker.
        let mut out = Vec::with_capacity(plain.len() + plain.len() / 1000 + 64);
        let mut input = plain;
        loop {
            let before_in = c.total_in();
            c.compress_vec(input, &mut out, FlushCompress::Sync)
                .expect("deflating into a growable buffer cannot fail");
            input = &input[(c.total_in() - before_in) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        Bytes::from(out)
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::domain::stream::StreamKey;

    fn gunzip(body: &[u8]) -> Vec<u8> {
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut plain)
            .expect("a valid gzip body");
        plain
    }

    #[test]
    fn pieces_from_shared_and_private_blocks_make_one_valid_gzip_body() {
        let frame = Frame::new(
            StreamKey::User(uuid::Uuid::nil()),
            1,
            "earnings:new".into(),
            r#"{"event":"earnings:new","data":{"amount":"12.50"}}"#.repeat(40),
        );
        let mut out = Vec::new();
        let mut gz = Gzip::start(&mut out);
        gz.private(&mut out, b"retry: 3000\n\n");
        gz.private(&mut out, b"id: u1\n");
        gz.shared(&mut out, &frame);
        gz.ping(&mut out);
        gz.private(&mut out, b"id: u2\n");
        gz.shared(&mut out, &frame);
        gz.private(&mut out, &vec![b'x'; 70_000]);
        gz.finish(&mut out);

        let mut expected = b"retry: 3000\n\nid: u1\n".to_vec();
        expected.extend_from_slice(&frame.sse);
        expected.extend_from_slice(b": ping\n\nid: u2\n");
        expected.extend_from_slice(&frame.sse);
        expected.extend_from_slice(&vec![b'x'; 70_000]);
        assert_eq!(gunzip(&out), expected);
        assert!(frame.deflated.get().unwrap().len() < frame.sse.len() / 5);
    }

    #[test]
    fn each_chunk_decodes_as_soon_as_it_arrives() {
        let frame = Frame::new(
            StreamKey::User(uuid::Uuid::nil()),
            1,
            "notification".into(),
            r#"{"title":"Payment received"}"#.into(),
        );
        let mut first = Vec::new();
        let mut gz = Gzip::start(&mut first);
        gz.shared(&mut first, &frame);
        // No trailer yet: a streaming decoder already yields the event.
        let mut decoder = flate2::write::GzDecoder::new(Vec::new());
        std::io::Write::write_all(&mut decoder, &first).unwrap();
        std::io::Write::flush(&mut decoder).unwrap();
        assert_eq!(decoder.get_ref().as_slice(), &frame.sse[..]);
    }

    #[test]
    fn accept_encoding_is_read_with_qualities() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("accept-encoding", v.parse().unwrap());
            accepted(&h)
        };
        assert!(with("gzip"));
        assert!(with("gzip, deflate, br, zstd"));
        assert!(with("br;q=1.0, GZIP;q=0.5"));
        assert!(with("*"));
        assert!(!with("gzip;q=0"));
        assert!(!with("identity"));
        assert!(!with("br"));
        assert!(!accepted(&HeaderMap::new()));
    }
}
