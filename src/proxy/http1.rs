//! One client connection of the proxy: HTTP/1.1 requests read with
//! `httparse`, routed, and passed through to a backend connection with
//! their bodies as they come; the backend's answers passed back the same
//! way. Heads are rewritten (hop-by-hop headers out, `Host` and
//! `X-Forwarded-*` in); bodies are never buffered whole nor re-encoded,
//! except a chunked answer to an HTTP/1.0 client, which is decoded.
//!
//! - Requests on a connection are handled in order (pipelined ones wait).
//! - A request's body goes up while the answer comes down (a backend may
//!   answer before it has read the whole body).
//! - `Expect: 100-continue` is answered by the proxy itself, as nginx does.
//! - `Upgrade` (WebSocket) is passed through: after a 101 the two
//!   connections are joined byte for byte.
//! - Backend connections are kept alive in the backend's idle list; a
//!   request without a body that meets a connection the backend closed
//!   while idle is sent again on a fresh one.

use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::framing::{Chunked, Framing};
use super::head::{may_hold_head, plan, response_meta, write_response_head, Forward, Plan, MAX_HEAD};
use super::{BackendConn, Proxy, Refusal};

/// The most headers a head may have.
const MAX_HEADERS: usize = 100;
/// How much is read at once.
const READ_SIZE: usize = 16 * 1024;
/// How much of a body is gathered behind a head before writing them out
/// together.
const COALESCE: usize = 64 * 1024;
/// How long, and how much, a closing connection is read and discarded.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;
/// How long a client connection may sit between requests (nginx's
/// `keepalive_timeout`).
const CLIENT_IDLE: Duration = Duration::from_secs(75);

/// A client connection: its two halves, what was read but not used yet,
/// and a buffer for what is written.
struct Client<R, W> {
    rd: R,
    wr: W,
    buf: BytesMut,
    out: Vec<u8>,
    peer: SocketAddr,
    scheme: &'static str,
}

/// Serves a client connection until it closes, fails or idles too long.
pub(super) async fn serve<R, W>(proxy: &Proxy, rd: R, wr: W, peer: SocketAddr, scheme: &'static str)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut client = Client {
        rd,
        wr,
        buf: BytesMut::with_capacity(READ_SIZE),
        out: Vec::with_capacity(4096),
        peer,
        scheme,
    };
    let mut head = Vec::with_capacity(1024);
    while let Ok(true) = client.exchange(proxy, &mut head).await {}
    // A lingering close (as nginx's): say we are done, then read what the
    // client still sends for a moment. Closing with unread bytes would
    // reset the connection and could destroy the last answer before the
    // client reads it (a 400 or 431 sent before the whole request arrived).
    let _ = client.wr.shutdown().await;
    let drain = async {
        let mut discarded = 0usize;
        while discarded < LINGER_BYTES {
            client.buf.clear();
            client.buf.reserve(READ_SIZE);
            match client.rd.read_buf(&mut client.buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Why forwarding failed.
enum Failure {
    /// Reading from or writing to the client failed: nothing more to say.
    Client,
    /// The backend failed before answering: the client gets this answer.
    Backend(Refusal),
    /// The backend failed after its answer started: the client connection
    /// must close, the answer being cut.
    Cut,
}

impl<R, W> Client<R, W>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    /// Reads, routes and answers one request. Answers whether the
    /// connection may carry another.
    async fn exchange(&mut self, proxy: &Proxy, head: &mut Vec<u8>) -> std::io::Result<bool> {
        // Where the search for the head's end goes on from: a head that
        // trickles in is parsed once its blank line may be there, not
        // again at every read.
        let mut scanned = 0;
        let plan = loop {
            if may_hold_head(&self.buf, &mut scanned) {
                let mut headers = [const { MaybeUninit::uninit() }; MAX_HEADERS];
                let mut req = httparse::Request::new(&mut []);
                match req.parse_with_uninit_headers(&self.buf, &mut headers) {
                    Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
                        break Plan::Answer(Refusal::too_large());
                    }
                    Ok(httparse::Status::Complete(len)) => {
                        let plan = plan(proxy, &req, self.peer, self.scheme, head);
                        self.buf.advance(len);
                        break plan;
                    }
                    Ok(httparse::Status::Partial) if self.buf.len() < MAX_HEAD => {}
                    Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                        break Plan::Answer(Refusal::too_large());
                    }
                    Err(_) => break Plan::Answer(Refusal::bad_request("the request is not valid HTTP/1.1")),
                }
            }
            self.buf.reserve(READ_SIZE);
            match tokio::time::timeout(CLIENT_IDLE, self.rd.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Err(_) => return Ok(false),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
            }
        };
        match plan {
            Plan::Answer(refusal) => {
                proxy.metrics.answered(refusal.status);
                self.answer(&refusal).await?;
                Ok(refusal.keep_alive)
            }
            Plan::Forward(forward) => {
                let _active = super::Active::new(&forward.backend);
                match self.forward(proxy, &forward, head).await {
                    Ok(keep_alive) => Ok(keep_alive),
                    Err(Failure::Backend(refusal)) => {
                        let keep_alive = refusal.keep_alive && forward.keep_alive && !forward.body.has_body();
                        let refusal = Refusal {
                            keep_alive,
                            head_only: forward.head_only,
                            ..refusal
                        };
                        proxy.metrics.answered(refusal.status);
                        self.answer(&refusal).await?;
                        Ok(keep_alive)
                    }
                    Err(Failure::Client | Failure::Cut) => Ok(false),
                }
            }
        }
    }

    /// Writes an answer made here.
    async fn answer(&mut self, refusal: &Refusal) -> std::io::Result<()> {
        self.out.clear();
        refusal.write(&mut self.out);
        self.wr.write_all(&self.out).await?;
        self.wr.flush().await
    }

    /// Forwards a planned request and passes the answer back. Answers
    /// whether the client connection may carry another request.
    async fn forward(&mut self, proxy: &Proxy, plan: &Forward, head: &[u8]) -> Result<bool, Failure> {
        let Client { rd, wr, buf, out, .. } = self;
        if plan.expect_continue && plan.body.has_body() {
            wr.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .map_err(|_| Failure::Client)?;
            wr.flush().await.map_err(|_| Failure::Client)?;
        }
        let (mut conn, mut reused) = match plan.backend.checkout() {
            Some(conn) => (conn, true),
            None => (connect(plan).await?, false),
        };
        loop {
            let outcome = exchange_with(&mut conn, proxy, plan, head, rd, buf, wr, out).await;
            match outcome {
                // A connection closed while idle: send again on a fresh one,
                // when nothing of a body was consumed.
                Err(Attempt::Stale) if reused && !plan.body.has_body() => {
                    conn = connect(plan).await?;
                    reused = false;
                }
                Err(Attempt::Stale) => return Err(Failure::Backend(Refusal::dropped(&plan.host))),
                Err(Attempt::Failed(failure)) => return Err(failure),
                Ok(Exchanged::Done {
                    backend_reusable,
                    client_keep_alive,
                }) => {
                    if backend_reusable {
                        plan.backend.checkin(conn);
                    }
                    return Ok(client_keep_alive);
                }
                Ok(Exchanged::Upgraded) => {
                    tunnel(conn, rd, buf, wr).await;
                    return Ok(false);
                }
            }
        }
    }
}

async fn connect(plan: &Forward) -> Result<BackendConn, Failure> {
    let backend = &plan.backend;
    match tokio::time::timeout(super::CONNECT_TIMEOUT, TcpStream::connect(backend.address.as_str())).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(BackendConn::new(stream))
        }
        Ok(Err(e)) => {
            tracing::debug!(backend = %backend.address, error = %e, "backend refused the connection");
            Err(Failure::Backend(Refusal::dropped(&plan.host)))
        }
        Err(_) => Err(Failure::Backend(Refusal::connect_timeout(&plan.host))),
    }
}

enum Attempt {
    /// The backend closed the connection before answering anything.
    Stale,
    Failed(Failure),
}

impl From<Failure> for Attempt {
    fn from(failure: Failure) -> Attempt {
        Attempt::Failed(failure)
    }
}

enum Exchanged {
    Done {
        backend_reusable: bool,
        client_keep_alive: bool,
    },
    /// The backend switched protocols: the connections are to be joined.
    Upgraded,
}

/// Sends the request on `conn` (its body as it comes from the client) and
/// passes the answer back to the client.
#[allow(clippy::too_many_arguments)]
async fn exchange_with<R, W>(
    conn: &mut BackendConn,
    proxy: &Proxy,
    plan: &Forward,
    head: &[u8],
    rd: &mut R,
    buf: &mut BytesMut,
    wr: &mut W,
    out: &mut Vec<u8>,
) -> Result<Exchanged, Attempt>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let BackendConn {
        stream,
        buf: backend_buf,
        ..
    } = conn;
    let (mut backend_rd, mut backend_wr) = stream.split();

    // The head and whatever of the body is already here, in one write.
    out.clear();
    out.extend_from_slice(head);
    let mut upload = Upload::new(plan.body);
    upload
        .take_buffered(buf, out)
        .map_err(|_| Failure::Backend(Refusal::bad_request("the request body is malformed")))?;
    // The backend's latency counts from the request's head sent.
    let asked = std::time::Instant::now();
    if let Err(e) = backend_wr.write_all(out).await {
        tracing::debug!(backend = %plan.backend.address, error = %e, "writing to the backend failed");
        return Err(Attempt::Stale);
    }

    let answer = async {
        let response = tokio::time::timeout(
            proxy.backend_timeout,
            read_response(&mut backend_rd, backend_buf, plan, out),
        )
        .await
        .map_err(|_| Attempt::Failed(Failure::Backend(Refusal::answer_timeout(&plan.host))))??;
        proxy.metrics.upstream.observe(asked.elapsed().as_secs_f64());
        proxy.metrics.answered(response.status);
        relay(
            response,
            &plan.host,
            proxy.backend_timeout,
            &mut backend_rd,
            backend_buf,
            wr,
            out,
        )
        .await
    };
    if upload.done() {
        return answer.await;
    }
    // The body goes up while the answer comes down.
    let sending = upload.send(rd, buf, &mut backend_wr);
    tokio::pin!(answer, sending);
    let mut sent = false;
    let mut backend_stopped_reading = false;
    loop {
        tokio::select! {
            result = &mut sending, if !sent && !backend_stopped_reading => match result {
                Ok(()) => sent = true,
                Err(Side::Client) => return Err(Attempt::Failed(Failure::Client)),
                Err(Side::Malformed) => {
                    return Err(Attempt::Failed(Failure::Backend(Refusal::bad_request(
                        "the request body is malformed",
                    ))))
                }
                // The backend may still answer (say, 413).
                Err(Side::Backend) => backend_stopped_reading = true,
            },
            result = &mut answer => {
                return match result {
                    Ok(Exchanged::Done { .. }) if !sent => Ok(Exchanged::Done {
                        // The rest of the body is still on the client connection.
                        backend_reusable: false,
                        client_keep_alive: false,
                    }),
                    Err(Attempt::Stale) => Err(Attempt::Failed(Failure::Backend(Refusal::dropped(&plan.host)))),
                    other => other,
                };
            }
        }
    }
}

/// Which side a body transfer failed on.
enum Side {
    Client,
    Backend,
    Malformed,
}

/// A request body on its way to the backend.
struct Upload {
    framing: Framing,
    /// Bytes left, for `Length`.
    left: u64,
    chunked: Chunked,
    done: bool,
}

impl Upload {
    fn new(framing: Framing) -> Upload {
        Upload {
            framing,
            left: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunked: Chunked::default(),
            done: !framing.has_body(),
        }
    }

    fn done(&self) -> bool {
        self.done
    }

    /// Moves the body's bytes that are in `buf` to `out`.
    fn take_buffered(&mut self, buf: &mut BytesMut, out: &mut Vec<u8>) -> Result<(), Side> {
        if self.done || buf.is_empty() {
            return Ok(());
        }
        let n = match self.framing {
            Framing::Length(_) => {
                let n = self.left.min(buf.len() as u64) as usize;
                self.left -= n as u64;
                self.done = self.left == 0;
                n
            }
            Framing::Chunked => {
                let n = self.chunked.scan(buf, |_| {}).map_err(|_| Side::Malformed)?;
                self.done = self.chunked.is_done();
                n
            }
            Framing::Empty | Framing::UntilClose => 0,
        };
        out.extend_from_slice(&buf[..n]);
        buf.advance(n);
        Ok(())
    }

    /// Reads the rest of the body from the client and writes it to the
    /// backend.
    async fn send<R, B>(&mut self, rd: &mut R, buf: &mut BytesMut, backend: &mut B) -> Result<(), Side>
    where
        R: AsyncRead + Unpin,
        B: AsyncWrite + Unpin,
    {
        let mut piece = Vec::with_capacity(READ_SIZE);
        while !self.done {
            buf.reserve(READ_SIZE);
            match rd.read_buf(buf).await {
                Ok(0) | Err(_) => return Err(Side::Client),
                Ok(_) => {}
            }
            piece.clear();
            self.take_buffered(buf, &mut piece)?;
            backend.write_all(&piece).await.map_err(|_| Side::Backend)?;
        }
        Ok(())
    }
}

/// A response head, parsed.
struct Response {
    status: u16,
    /// The head's length in the backend's buffer.
    len: usize,
    body: Framing,
    /// The backend will close the connection after this answer.
    close: bool,
    /// The backend switched protocols.
    upgraded: bool,
    /// The chunked body is decoded (for an HTTP/1.0 client).
    decode: bool,
    client_keep_alive: bool,
}

/// Reads the backend's answer head (skipping `1xx` interim answers other
/// than 101) and writes it, rewritten for the client, to `out`.
async fn read_response<B>(
    rd: &mut B,
    buf: &mut BytesMut,
    plan: &Forward,
    out: &mut Vec<u8>,
) -> Result<Response, Attempt>
where
    B: AsyncRead + Unpin,
{
    let mut received = false;
    loop {
        if !buf.is_empty() {
            received = true;
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut res = httparse::Response::new(&mut headers);
            match res.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = res.code.unwrap_or(0);
                    if (100..200).contains(&status) && status != 101 {
                        buf.advance(len);
                        continue;
                    }
                    let Some((body, close)) = response_meta(&res, plan) else {
                        return Err(Failure::Backend(Refusal::invalid_answer(&plan.host)).into());
                    };
                    if status == 101 && !plan.upgrade {
                        return Err(Failure::Backend(Refusal::invalid_answer(&plan.host)).into());
                    }
                    let upgraded = status == 101;
                    // A chunked answer to an HTTP/1.0 client is decoded and
                    // ends with the connection.
                    let decode = plan.http10 && body == Framing::Chunked;
                    let client_keep_alive = plan.keep_alive && !upgraded && !decode && body != Framing::UntilClose;
                    out.clear();
                    write_response_head(&res, out, decode, upgraded, client_keep_alive, plan.http10);
                    return Ok(Response {
                        status,
                        len,
                        body,
                        close,
                        upgraded,
                        decode,
                        client_keep_alive,
                    });
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
                _ => return Err(Failure::Backend(Refusal::invalid_answer(&plan.host)).into()),
            }
        }
        buf.reserve(READ_SIZE);
        match rd.read_buf(buf).await {
            Ok(0) | Err(_) if !received => return Err(Attempt::Stale),
            Ok(0) | Err(_) => return Err(Failure::Backend(Refusal::dropped(&plan.host)).into()),
            Ok(_) => {}
        }
    }
}

/// Writes the answer's head (in `out`) and passes its body to the client;
/// `idle` is the longest the backend may be silent in the middle of it.
async fn relay<B, W>(
    response: Response,
    host: &str,
    idle: Duration,
    rd: &mut B,
    buf: &mut BytesMut,
    wr: &mut W,
    out: &mut Vec<u8>,
) -> Result<Exchanged, Attempt>
where
    B: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let Response {
        len,
        body,
        close,
        upgraded,
        decode,
        client_keep_alive,
        ..
    } = response;
    buf.advance(len);

    let mut left = match body {
        Framing::Length(n) => n,
        _ => 0,
    };
    let mut chunked = Chunked::default();
    let mut done = !body.has_body();
    let mut eof = false;
    let mut written = false;
    loop {
        // Move what the buffer holds of the body to `out`.
        if !done && !buf.is_empty() {
            let n = match body {
                Framing::Length(_) => {
                    let n = left.min(buf.len() as u64) as usize;
                    out.extend_from_slice(&buf[..n]);
                    left -= n as u64;
                    done = left == 0;
                    n
                }
                Framing::Chunked => {
                    let input = &buf[..];
                    let n = if decode {
                        chunked.scan(input, |r| out.extend_from_slice(&input[r]))
                    } else {
                        chunked.scan(input, |_| {})
                    }
                    .map_err(|_| {
                        // Nothing reached the client yet: it can be told.
                        Attempt::Failed(if written {
                            Failure::Cut
                        } else {
                            Failure::Backend(Refusal::invalid_answer(host))
                        })
                    })?;
                    if !decode {
                        out.extend_from_slice(&input[..n]);
                    }
                    done = chunked.is_done();
                    n
                }
                Framing::UntilClose => {
                    out.extend_from_slice(buf);
                    buf.len()
                }
                Framing::Empty => 0,
            };
            buf.advance(n);
        }
        if done || eof || out.len() >= COALESCE || buf.is_empty() {
            if !out.is_empty() {
                wr.write_all(out).await.map_err(|_| Failure::Client)?;
                out.clear();
                written = true;
            }
            if done || eof {
                break;
            }
        }
        if buf.is_empty() {
            // Written out already: flush, so that a slow stream reaches the client.
            wr.flush().await.map_err(|_| Failure::Client)?;
        }
        buf.reserve(READ_SIZE);
        // A backend silent for this long between two reads has stalled
        // (nginx's proxy_read_timeout): the answer is cut.
        match tokio::time::timeout(idle, rd.read_buf(buf)).await {
            Ok(Ok(0)) if body == Framing::UntilClose => eof = true,
            Ok(Ok(0) | Err(_)) | Err(_) => return Err(Failure::Cut.into()),
            Ok(Ok(_)) => {}
        }
    }
    wr.flush().await.map_err(|_| Failure::Client)?;
    if upgraded {
        return Ok(Exchanged::Upgraded);
    }
    Ok(Exchanged::Done {
        backend_reusable: !close && !eof && buf.is_empty(),
        client_keep_alive,
    })
}

/// Joins the client and backend connections after a 101, until either
/// side closes.
async fn tunnel<R, W>(mut conn: BackendConn, rd: &mut R, buf: &mut BytesMut, wr: &mut W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (mut backend_rd, mut backend_wr) = conn.stream.split();
    let up = async {
        if !buf.is_empty() {
            backend_wr.write_all(buf).await?;
            buf.clear();
        }
        tokio::io::copy(rd, &mut backend_wr).await?;
        backend_wr.shutdown().await
    };
    let down = async {
        if !conn.buf.is_empty() {
            wr.write_all(&conn.buf).await?;
        }
        tokio::io::copy(&mut backend_rd, wr).await?;
        wr.flush().await
    };
    let _ = tokio::try_join!(up, down);
}
