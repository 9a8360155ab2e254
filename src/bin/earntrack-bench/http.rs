//! A minimal HTTP/1.1 client over tokio `TcpStream`s: enough for the bench's
//! REST calls (JSON bodies with `Content-Length`, keep-alive connections in a
//! small pool) and for reading SSE response bodies (chunked or close-delimited).
//! Every socket may be bound to a chosen source address before it connects,
//! so one client can hold more streams than one address has ports.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Largest response head the client accepts.
const MAX_HEAD: usize = 64 * 1024;
/// Largest REST response body the client accepts.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// Where the bench connects: the one URL it was given, resolved once.
#[derive(Debug)]
pub struct Target {
    pub url: String,
    pub addr: SocketAddr,
    /// The `Host` header value (`host:port` as written in the URL).
    pub host_header: String,
    /// Path prefix of the URL without a trailing slash (usually empty).
    pub base_path: String,
}

impl Target {
    pub async fn resolve(url: &str) -> anyhow::Result<Target> {
        let rest = url
            .strip_prefix("http://")
            .context("--url must start with http:// (the bench speaks plain HTTP/1.1)")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            bail!("--url needs a host (and no credentials)");
        }
        let has_port = if authority.starts_with('[') {
            authority.contains("]:")
        } else {
            authority.contains(':')
        };
        let with_port = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = tokio::net::lookup_host(&with_port)
            .await
            .with_context(|| format!("resolving {with_port}"))?
            .next()
            .with_context(|| format!("{with_port} resolves to no address"))?;
        Ok(Target {
            url: url.trim_end_matches('/').to_owned(),
            addr,
            host_header: authority.to_owned(),
            base_path: path.to_owned(),
        })
    }

    pub fn path(&self, p: &str) -> String {
        format!("{}{p}", self.base_path)
    }
}

/// Connect to `target`, from `source` (port chosen by the kernel) when given.
pub async fn connect(target: &Target, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = if target.addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(target.addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A parsed response head.
#[derive(Debug, Default)]
pub struct Head {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    pub fn content_length(&self) -> Option<usize> {
        self.header("content-length")?.trim().parse().ok()
    }

    fn keep_alive(&self) -> bool {
        !self
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// Parse a response head at the start of `buf`; `None` until it is complete.
/// Returns the head and the number of bytes it took.
pub fn parse_head(buf: &[u8]) -> anyhow::Result<Option<(Head, usize)>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            bail!("response head larger than {MAX_HEAD} bytes");
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).context("response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        bail!("not an HTTP/1.x response: {status_line:?}");
    }
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Ok(Some((Head { status, headers }, end + 4)))
}

/// Incremental decoder of `Transfer-Encoding: chunked`.
#[derive(Debug, Default)]
pub struct Chunked {
    remaining: usize,
    need_crlf: bool,
    pub done: bool,
}

impl Chunked {
    /// Decode what `raw` holds into `out`; returns how many bytes of `raw`
    /// were consumed (a partial chunk-size line is left in place).
    pub fn decode(&mut self, raw: &[u8], out: &mut Vec<u8>) -> anyhow::Result<usize> {
        let mut i = 0;
        while !self.done {
            if self.remaining > 0 {
                let n = self.remaining.min(raw.len() - i);
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&raw[i..i + n]);
                i += n;
                self.remaining -= n;
                self.need_crlf = self.remaining == 0;
                continue;
            }
            if self.need_crlf {
                if raw.len() - i < 2 {
                    break;
                }
                if &raw[i..i + 2] != b"\r\n" {
                    bail!("bad chunk terminator");
                }
                i += 2;
                self.need_crlf = false;
                continue;
            }
            let Some(nl) = raw[i..].iter().position(|&b| b == b'\n') else {
                if raw.len() - i > 1024 {
                    bail!("chunk size line too long");
                }
                break;
            };
            let line = std::str::from_utf8(&raw[i..i + nl]).context("chunk size is not UTF-8")?;
            let hex = line.trim_end_matches('\r').split(';').next().unwrap_or("");
            let size = usize::from_str_radix(hex.trim(), 16)
                .with_context(|| format!("bad chunk size {hex:?}"))?;
            i += nl + 1;
            if size == 0 {
                // The last chunk; trailers (if any) are not read.
                self.done = true;
            }
            self.remaining = size;
        }
        Ok(i)
    }
}

/// A REST response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "status {} with a body that is not JSON: {:?}",
                self.status,
                String::from_utf8_lossy(&self.body[..self.body.len().min(200)])
            )
        })
    }

    /// `error.code` of an error body, if any.
    pub fn error_code(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v.get("error")?.get("code")?.as_str().map(str::to_owned)
    }
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// Keep-alive connections to the target, reused one request at a time.
pub struct Rest {
    target: Arc<Target>,
    sources: Vec<IpAddr>,
    next_source: AtomicUsize,
    idle: Mutex<Vec<Conn>>,
    timeout: Duration,
}

/// A request about to be written.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub token: Option<&'a str>,
}

impl Rest {
    pub fn new(target: Arc<Target>, sources: Vec<IpAddr>, timeout: Duration) -> Rest {
        Rest {
            target,
            sources,
            next_source: AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
            timeout,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> anyhow::Result<Response> {
        let req = Request {
            method: "GET",
            path,
            token,
        };
        self.send(req, || None).await
    }

    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> anyhow::Result<Response> {
        let req = Request {
            method: "POST",
            path,
            token,
        };
        self.send(req, || Some(body.to_string().into_bytes())).await
    }

    /// Send a request whose body is built by `body` just before it is
    /// written (after a connection is at hand), so a timestamp inside it is
    /// taken as late as possible.
    pub async fn send(
        &self,
        req: Request<'_>,
        mut body: impl FnMut() -> Option<Vec<u8>>,
    ) -> anyhow::Result<Response> {
        tokio::time::timeout(self.timeout, async {
            // A reused connection may have been closed by the server while
            // idle: try once more on a fresh one when it fails before any
            // response byte arrived.
            for attempt in 0..2 {
                let (mut conn, reused) = match self.take_idle() {
                    Some(c) if attempt == 0 => (c, true),
                    _ => (self.open().await?, false),
                };
                match self.exchange(&mut conn, &req, body()).await {
                    Ok((resp, keep)) => {
                        if keep {
                            self.put_idle(conn);
                        }
                        return Ok(resp);
                    }
                    Err(Exchange::BeforeResponse(_)) if reused => continue,
                    Err(Exchange::BeforeResponse(e)) | Err(Exchange::During(e)) => return Err(e),
                }
            }
            bail!("request failed twice")
        })
        .await
        .with_context(|| format!("{} {} timed out", req.method, req.path))?
    }

    fn take_idle(&self) -> Option<Conn> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn put_idle(&self, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < 1024 {
            idle.push(conn);
        }
    }

    async fn open(&self) -> anyhow::Result<Conn> {
        let source = if self.sources.is_empty() {
            None
        } else {
            let i = self.next_source.fetch_add(1, Ordering::Relaxed);
            Some(self.sources[i % self.sources.len()])
        };
        let stream = connect(&self.target, source)
            .await
            .with_context(|| format!("connecting to {}", self.target.addr))?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    async fn exchange(
        &self,
        conn: &mut Conn,
        req: &Request<'_>,
        body: Option<Vec<u8>>,
    ) -> Result<(Response, bool), Exchange> {
        conn.stream
            .write_all(&self.request_bytes(req, body.as_deref()))
            .await
            .map_err(|e| Exchange::BeforeResponse(e.into()))?;
        let head = read_head(conn).await?;
        let mut keep = head.keep_alive();
        let rest = &mut conn.buf;
        let body = if head.status == 204 || head.status == 304 || req.method == "HEAD" {
            Vec::new()
        } else if head.chunked() {
            // Not expected from the server's JSON answers; decode, then
            // drop the connection rather than parse trailers.
            keep = false;
            read_chunked(&mut conn.stream, rest).await?
        } else if let Some(len) = head.content_length() {
            read_sized(&mut conn.stream, rest, len).await?
        } else {
            keep = false;
            read_to_close(&mut conn.stream, rest).await?
        };
        Ok((
            Response {
                status: head.status,
                body,
            },
            keep,
        ))
    }

    /// The request head (and body) as written on the wire.
    fn request_bytes(&self, req: &Request<'_>, body: Option<&[u8]>) -> Vec<u8> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nUser-Agent: earntrack-bench\r\n",
            req.method,
            self.target.path(req.path),
            self.target.host_header
        );
        if let Some(token) = req.token {
            head.push_str("Authorization: Bearer ");
            head.push_str(token);
            head.push_str("\r\n");
        }
        let mut bytes = head.into_bytes();
        match body {
            Some(b) => {
                bytes.extend_from_slice(
                    format!(
                        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        b.len()
                    )
                    .as_bytes(),
                );
                bytes.extend_from_slice(b);
            }
            None => bytes.extend_from_slice(b"\r\n"),
        }
        bytes
    }
}

/// Read the response head; `conn.buf` keeps the body bytes read with it.
async fn read_head(conn: &mut Conn) -> Result<Head, Exchange> {
    conn.buf.clear();
    let (head, used) = loop {
        if let Some(parsed) = parse_head(&conn.buf).map_err(Exchange::During)? {
            break parsed;
        }
        let n = read_more(&mut conn.stream, &mut conn.buf)
            .await
            .map_err(|e| Exchange::During(e.into()))?;
        if n == 0 {
            let e = anyhow::anyhow!("connection closed before a response");
            return Err(if conn.buf.is_empty() {
                Exchange::BeforeResponse(e)
            } else {
                Exchange::During(e)
            });
        }
    };
    conn.buf.drain(..used);
    Ok(head)
}

/// Read more of the body into `buf`; an error once the response began.
async fn read_body(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<usize, Exchange> {
    read_more(stream, buf)
        .await
        .map_err(|e| Exchange::During(e.into()))
}

/// A chunked body, `rest` being what was read of it so far.
async fn read_chunked(stream: &mut TcpStream, rest: &mut Vec<u8>) -> Result<Vec<u8>, Exchange> {
    let mut dec = Chunked::default();
    let mut out = Vec::new();
    loop {
        let used = dec.decode(rest, &mut out).map_err(Exchange::During)?;
        rest.drain(..used);
        if dec.done {
            return Ok(out);
        }
        if out.len() > MAX_BODY {
            return Err(Exchange::During(anyhow::anyhow!("response body too large")));
        }
        if read_body(stream, rest).await? == 0 {
            return Err(Exchange::During(anyhow::anyhow!("body cut short")));
        }
    }
}

/// A body of `len` bytes (`Content-Length`).
async fn read_sized(
    stream: &mut TcpStream,
    rest: &mut Vec<u8>,
    len: usize,
) -> Result<Vec<u8>, Exchange> {
    if len > MAX_BODY {
        return Err(Exchange::During(anyhow::anyhow!("response body too large")));
    }
    while rest.len() < len {
        if read_body(stream, rest).await? == 0 {
            return Err(Exchange::During(anyhow::anyhow!("body cut short")));
        }
    }
    rest.truncate(len);
    Ok(std::mem::take(rest))
}

/// A body that ends when the server closes the connection.
async fn read_to_close(stream: &mut TcpStream, rest: &mut Vec<u8>) -> Result<Vec<u8>, Exchange> {
    loop {
        let n = read_body(stream, rest).await?;
        if n == 0 || rest.len() > MAX_BODY {
            return Ok(std::mem::take(rest));
        }
    }
}

enum Exchange {
    /// Nothing came back: the request may be retried on a fresh connection.
    BeforeResponse(anyhow::Error),
    During(anyhow::Error),
}

/// Read whatever is available into `buf` (at least 4 KiB of room).
pub async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    buf.reserve(4096);
    stream.read_buf(buf).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_decoding_is_incremental() {
        let raw = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
        let mut dec = Chunked::default();
        let mut out = Vec::new();
        let mut buf = Vec::new();
        for &b in raw.iter() {
            buf.push(b);
            let used = dec.decode(&buf, &mut out).unwrap();
            buf.drain(..used);
        }
        assert_eq!(out, b"hello world");
        assert!(dec.done);
    }

    #[test]
    fn head_parsing() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\nabc";
        let (head, used) = parse_head(raw).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert!(head.chunked());
        assert_eq!(&raw[used..], b"abc");
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n").unwrap().is_none());
    }
}
