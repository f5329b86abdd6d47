//! The proxy as an HTTP/1.1 intermediary, spoken to byte for byte: bodies
//! stream both ways with their framing, connections are kept alive on both
//! sides, and the corners of RFC 9112 (HEAD, 204, HTTP/1.0, answers
//! delimited by close, 1xx, 100-continue, upgrades, malformed requests)
//! come out right. Backends are real TCP servers started by the tests;
//! some are actix-web, some are scripted byte for byte.

mod common;

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use common::{TestServer, PATIENCE};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// Starts a server and a service whose one instance is `backend`; answers
/// the server and the service's FQDN.
async fn routed_to(backend: &str) -> (TestServer, String) {
    routed_with(backend, |_| {}).await
}

/// The same, with a tweak of the server's configuration.
async fn routed_with(backend: &str, tweak: fn(&mut tenure::server::ServerConfig)) -> (TestServer, String) {
    let server = TestServer::start_with(tweak).await;
    let local = server.session_with_header(None);
    let fqdn = local.create_service("web", json!(["443:8080/tls+http"])).await;
    local.attach("web-1", "web", backend, 600).await;
    (server, fqdn)
}

/// A backend of raw TCP: `serve` handles each connection. Answers its
/// address and how many connections it accepted.
async fn raw_backend<F, Fut>(serve: F) -> (String, Arc<AtomicUsize>)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a backend");
    let address = listener.local_addr().expect("address").to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream));
        }
    });
    (address, accepted)
}

/// Reads one request or response head (up to its blank line) from
/// `stream`, keeping what follows in `buf`. `None` at end of stream.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = buf.drain(..end + 4).collect();
            return Some(String::from_utf8_lossy(&head).into_owned());
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut chunk))
            .await
            .expect("the peer goes on")
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A backend that reads one request per connection, writes `answer`, and
/// closes the connection.
async fn answer_once(answer: &'static [u8]) -> (String, Arc<AtomicUsize>) {
    raw_backend(move |mut stream| async move {
        let mut buf = Vec::new();
        if read_head(&mut stream, &mut buf).await.is_some() {
            let _ = stream.write_all(answer).await;
        }
    })
    .await
}

/// A backend that answers every request on a connection with its request
/// line as the body (kept alive, `Content-Length`).
async fn echo_request_lines() -> (String, Arc<AtomicUsize>) {
    raw_backend(|mut stream| async move {
        let mut buf = Vec::new();
        while let Some(head) = read_head(&mut stream, &mut buf).await {
            let line = head.lines().next().unwrap_or_default().to_owned();
            let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{line}", line.len());
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// An answer as a client sees it.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection to the proxy that writes bytes as given and reads
/// answers with their framing.
struct Client {
    rd: OwnedReadHalf,
    /// Lent out while a test writes from another task.
    wr: Option<OwnedWriteHalf>,
    buf: Vec<u8>,
}

impl Client {
    async fn to(server: &TestServer) -> Client {
        let addr = server.running().proxy_addr.expect("the proxy runs");
        let stream = TcpStream::connect(addr).await.expect("connect to the proxy");
        let (rd, wr) = stream.into_split();
        Client {
            rd,
            wr: Some(wr),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        let wr = self.wr.as_mut().expect("the writing half is here");
        wr.write_all(bytes).await.expect("write to the proxy");
    }

    async fn get(&mut self, host: &str, path: &str) -> Answer {
        self.send(format!("GET {path} HTTP/1.1\r\nhost: {host}\r\n\r\n").as_bytes())
            .await;
        self.answer(false).await
    }

    /// Reads more, failing the test on end of stream.
    async fn fill(&mut self) {
        assert!(self.fill_or_eof().await, "the proxy closed the connection");
    }

    async fn fill_or_eof(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        let n = tokio::time::timeout(PATIENCE, self.rd.read(&mut chunk))
            .await
            .expect("the proxy answers in time")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Reads until `needle` has arrived; answers everything up to it.
    async fn read_until(&mut self, needle: &[u8]) -> Vec<u8> {
        loop {
            if let Some(at) = self.buf.windows(needle.len()).position(|w| w == needle) {
                return self.buf.drain(..at + needle.len()).collect();
            }
            self.fill().await;
        }
    }

    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            self.fill().await;
        }
        self.buf.drain(..n).collect()
    }

    /// Reads an answer's head.
    async fn head(&mut self) -> Answer {
        let head = self.read_until(b"\r\n\r\n").await;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut res = httparse::Response::new(&mut headers);
        assert!(res.parse(&head).expect("a valid answer head").is_complete());
        Answer {
            status: res.code.expect("status"),
            headers: res
                .headers
                .iter()
                .map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned()))
                .collect(),
            body: Vec::new(),
        }
    }

    /// Reads an answer: head, then the body as its head frames it (none
    /// after a HEAD request).
    async fn answer(&mut self, head_only: bool) -> Answer {
        let mut answer = self.head().await;
        if head_only || answer.status == 204 || answer.status == 304 {
            return answer;
        }
        if answer.header("transfer-encoding") == Some("chunked") {
            loop {
                let line = self.read_until(b"\r\n").await;
                let size = usize::from_str_radix(String::from_utf8_lossy(&line).trim(), 16).expect("chunk size");
                if size == 0 {
                    self.read_until(b"\r\n").await;
                    break;
                }
                let data = self.take(size + 2).await;
                answer.body.extend_from_slice(&data[..size]);
            }
        } else if let Some(length) = answer.header("content-length") {
            answer.body = self.take(length.parse().expect("length")).await;
        } else {
            while self.fill_or_eof().await {}
            answer.body = std::mem::take(&mut self.buf);
        }
        answer
    }

    /// Whether the proxy closed the connection (after what was read).
    async fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill_or_eof().await
    }
}

#[actix_rt::test]
async fn a_chunked_answer_streams_through_as_the_backend_writes_it() {
    let (release, released) = tokio::sync::watch::channel(false);
    let (backend, accepted) = raw_backend(move |mut stream| {
        let mut released = released.clone();
        async move {
            let mut buf = Vec::new();
            while read_head(&mut stream, &mut buf).await.is_some() {
                let first = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n";
                stream.write_all(first).await.expect("write");
                let _ = released.wait_for(|r| *r).await;
                stream.write_all(b"6\r\nsecond\r\n0\r\n\r\n").await.expect("write");
            }
        }
    })
    .await;
    let (server, fqdn) = routed_to(&backend).await;
    let mut client = Client::to(&server).await;
    client
        .send(format!("GET /stream HTTP/1.1\r\nhost: {fqdn}\r\n\r\n").as_bytes())
        .await;
    // The first chunk arrives while the backend still holds the rest.
    let head = client.head().await;
    assert_eq!(head.header("transfer-encoding"), Some("chunked"), "{head:?}");
    assert_eq!(client.read_until(b"first\r\n").await, b"5\r\nfirst\r\n");
    release.send(true).expect("release");
    assert_eq!(client.read_until(b"0\r\n\r\n").await, b"6\r\nsecond\r\n0\r\n\r\n");
    // The connection carries another request, over the same backend connection.
    let again = client.get(&fqdn, "/stream").await;
    assert_eq!(again.text(), "firstsecond");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the backend connection was kept alive"
    );
}

/// A backend that streams each request body back as it reads it.
async fn echo_bodies() -> String {
    common::actix_backend(move |config| {
        config.default_service(web::to(|payload: web::Payload| async move {
            HttpResponse::Ok().streaming(payload)
        }));
    })
    .await
}

/// Bytes that are not all the same, so that a misplaced block shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 4096) as u8).collect()
}

#[actix_rt::test]
async fn a_large_body_goes_up_while_its_echo_comes_down() {
    let backend = echo_bodies().await;
    let (server, fqdn) = routed_to(&backend).await;
    // 16 MiB: far more than the socket buffers on the way hold, so the
    // echo only completes if the proxy moves both directions at once.
    let body = pattern(16 << 20);
    let mut client = Client::to(&server).await;
    let head = format!(
        "PUT /echo HTTP/1.1\r\nhost: {fqdn}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let mut wr = client.wr.take().expect("the writing half");
    let upload = {
        let body = body.clone();
        tokio::spawn(async move {
            wr.write_all(head.as_bytes()).await.expect("head");
            wr.write_all(&body).await.expect("body");
            wr
        })
    };
    // The echo is read as it comes, while the upload goes on.
    let echo = client.answer(false).await;
    client.wr = Some(upload.await.expect("the upload ends"));
    assert_eq!(echo.status, 200);
    assert!(
        echo.body == body,
        "the echo differs ({} bytes for {})",
        echo.body.len(),
        body.len()
    );
    // A chunked upload, in pieces, comes back whole too.
    client
        .send(format!("POST /echo HTTP/1.1\r\nhost: {fqdn}\r\ntransfer-encoding: chunked\r\n\r\n").as_bytes())
        .await;
    client.send(b"4\r\nabcd\r\n").await;
    client.send(b"3;ext=1\r\nefg\r\n0\r\n\r\n").await;
    assert_eq!(client.answer(false).await.text(), "abcdefg");
}

#[actix_rt::test]
async fn requests_in_a_row_and_pipelined_share_one_backend_connection() {
    let (backend, accepted) = echo_request_lines().await;
    let (server, fqdn) = routed_to(&backend).await;
    let mut client = Client::to(&server).await;
    for i in 0..5 {
        let answer = client.get(&fqdn, &format!("/seq/{i}")).await;
        assert_eq!(answer.text(), format!("GET /seq/{i} HTTP/1.1"));
    }
    let pipelined: String = (0..3)
        .map(|i| format!("GET /pipe/{i} HTTP/1.1\r\nhost: {fqdn}\r\n\r\n"))
        .collect();
    client.send(pipelined.as_bytes()).await;
    for i in 0..3 {
        assert_eq!(client.answer(false).await.text(), format!("GET /pipe/{i} HTTP/1.1"));
    }
    // A head that trickles in, a byte at a time, is still read whole.
    for byte in format!("GET /slow HTTP/1.1\r\nhost: {fqdn}\r\n\r\n").bytes() {
        client.send(&[byte]).await;
    }
    assert_eq!(client.answer(false).await.text(), "GET /slow HTTP/1.1");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}

#[actix_rt::test]
async fn a_backend_connection_closed_while_idle_is_replaced_without_an_error() {
    // Answers one request per connection as if it would keep it, then closes.
    let (backend, accepted) = answer_once(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
    let (server, fqdn) = routed_to(&backend).await;
    let mut client = Client::to(&server).await;
    for _ in 0..10 {
        let answer = client.get(&fqdn, "/").await;
        assert_eq!((answer.status, answer.text().as_str()), (200, "ok"));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 10);
}

#[actix_rt::test]
async fn head_and_no_content_answers_have_no_body_and_the_connection_goes_on() {
    let (backend, _) = raw_backend(|mut stream| async move {
        let mut buf = Vec::new();
        while let Some(head) = read_head(&mut stream, &mut buf).await {
            let answer: &[u8] = if head.starts_with("HEAD") {
                b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n"
            } else if head.starts_with("GET /empty") {
                b"HTTP/1.1 204 No Content\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nbody"
            };
            if stream.write_all(answer).await.is_err() {
                return;
            }
        }
    })
    .await;
    let (server, fqdn) = routed_to(&backend).await;
    let mut client = Client::to(&server).await;
    client
        .send(format!("HEAD / HTTP/1.1\r\nhost: {fqdn}\r\n\r\n").as_bytes())
        .await;
    let head = client.answer(true).await;
    assert_eq!((head.status, head.header("content-length")), (200, Some("1000")));
    assert_eq!(client.get(&fqdn, "/empty").await.status, 204);
    client.send(b"HEAD / HTTP/1.1\r\nhost: nobody.example\r\n\r\n").await;
    let refused = client.answer(true).await;
    assert_eq!(refused.status, 404);
    assert!(refused.header("content-length").is_some());
    let last = client.get(&fqdn, "/").await;
    assert_eq!(
        (last.status, last.text().as_str()),
        (200, "body"),
        "no stray body came before"
    );
}

#[actix_rt::test]
async fn an_http10_client_gets_a_chunked_answer_decoded_then_the_connection_closes() {
    let (backend, _) = raw_backend(|mut stream| async move {
        let mut buf = Vec::new();
        if let Some(head) = read_head(&mut stream, &mut buf).await {
            assert!(
                head.starts_with("GET /old HTTP/1.1\r\n"),
                "the backend is spoken to in 1.1: {head}"
            );
            let _ = stream
                .write_all(
                    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nold\r\n7\r\n school\r\n0\r\n\r\n",
                )
                .await;
        }
    })
    .await;
    let (server, fqdn) = routed_to(&backend).await;
    let mut client = Client::to(&server).await;
    client
        .send(format!("GET /old HTTP/1.0\r\nhost: {fqdn}\r\n\r\n").as_bytes())
        .await;
    let answer = client.answer(false).await;
    assert_eq!(answer.header("transfer-encoding"), None, "{answer:?}");
    assert_eq!(answer.header("connection"), Some("close"));
    assert_eq!(answer.text(), "old school");
    assert!(client.closed().await);
}

#[actix_rt::test]
async fn an_answer_without_a_length_ends_with_the_connection() {
    let (backend, _) = answer_once(b"HTTP/1.1 200 OK\r\n\r\nuntil the end").await;
    let (server, fqdn) = routed_to(&backend).await;
    let mut client = Client::to(&server).await;
    let answer = client.get(&fqdn, "/").await;
    assert_eq!(answer.header("connection"), Some("close"));
    assert_eq!(answer.text(), "until the end");
}

#[actix_rt::test]
async fn an_answer_cut_short_by_the_backend_closes_the_client_connection() {
    let (backend, _) = answer_once(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b").await;
    let (server, fqdn) = routed_to(&backend).await;
    let mut client = Client::to(&server).await;
    client
        .send(format!("GET / HTTP/1.1\r\nhost: {fqdn}\r\n\r\n").as_bytes())
        .await;
    let head = client.head().await;
    assert_eq!(head.header("content-length"), Some("100"));
    assert_eq!(client.take(10).await, b"only ten b");
    assert!(
        client.closed().await,
        "the client must not wait for 90 bytes that will never come"
    );
}

#[actix_rt::test]
async fn an_upgrade_joins_the_two_connections() {
    let (backend, _) = raw_backend(|mut stream| async move {
        let mut buf = Vec::new();
        if let Some(head) = read_head(&mut stream, &mut buf).await {
            let lower = head.to_ascii_lowercase();
            assert!(lower.contains("upgrade: websocket\r\n"), "{head}");
            assert!(lower.contains("connection: upgrade\r\n"), "{head}");
            let _ = stream
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n")
                .await;
            // Echo whatever comes, byte for byte.
            let (mut rd, mut wr) = stream.split();
            let _ = wr.write_all(&buf).await;
            let _ = tokio::io::copy(&mut rd, &mut wr).await;
        }
    })
    .await;
    let (server, fqdn) = routed_to(&backend).await;
    let mut client = Client::to(&server).await;
    client
        .send(
            format!("GET /ws HTTP/1.1\r\nhost: {fqdn}\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\r\nearly")
                .as_bytes(),
        )
        .await;
    let head = client.head().await;
    assert_eq!(
        (head.status, head.header("upgrade")),
        (101, Some("websocket")),
        "{head:?}"
    );
    assert_eq!(client.take(5).await, b"early", "bytes sent with the request go through");
    client.send(b"ping").await;
    assert_eq!(client.take(4).await, b"ping");
}

/// A backend that answers with what it was sent: headers and body.
async fn mirror() -> String {
    common::actix_backend(move |config| {
        config.default_service(web::to(|req: HttpRequest, body: web::Bytes| async move {
            let headers: serde_json::Map<String, Value> = req
                .headers()
                .iter()
                .map(|(n, v)| (n.to_string(), json!(v.to_str().unwrap_or_default())))
                .collect();
            HttpResponse::Ok().json(json!({ "headers": headers, "body": String::from_utf8_lossy(&body) }))
        }));
    })
    .await
}

#[actix_rt::test]
async fn expect_continue_is_answered_by_the_proxy_and_hop_by_hop_headers_stay_behind() {
    let backend = mirror().await;
    let (server, fqdn) = routed_to(&backend).await;
    let mut client = Client::to(&server).await;
    client
        .send(
            format!(
                "POST /form HTTP/1.1\r\nhost: {fqdn}\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\
                 connection: keep-alive, x-private\r\nx-private: secret\r\nkeep-alive: timeout=5\r\n\
                 te: trailers\r\nproxy-authorization: Basic eDp5\r\nx-public: shown\r\n\
                 x-forwarded-for: 203.0.113.9\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
    assert_eq!(client.read_until(b"\r\n\r\n").await, b"HTTP/1.1 100 Continue\r\n\r\n");
    client.send(b"hello").await;
    let answer = client.answer(false).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let seen: Value = serde_json::from_slice(&answer.body).expect("JSON");
    assert_eq!(seen["body"], "hello");
    let headers = &seen["headers"];
    for gone in ["x-private", "keep-alive", "te", "proxy-authorization", "expect"] {
        assert!(headers.get(gone).is_none(), "{gone} reached the backend: {headers}");
    }
    assert_eq!(headers["x-public"], "shown");
    assert_eq!(headers["host"], backend.as_str());
    assert_eq!(headers["x-forwarded-host"], fqdn.as_str());
    assert_eq!(headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
}

#[actix_rt::test]
async fn interim_answers_are_not_passed_on() {
    let (backend, _) = raw_backend(|mut stream| async move {
        let mut buf = Vec::new();
        while read_head(&mut stream, &mut buf).await.is_some() {
            let answer = b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal";
            if stream.write_all(answer).await.is_err() {
                return;
            }
        }
    })
    .await;
    let (server, fqdn) = routed_to(&backend).await;
    let mut client = Client::to(&server).await;
    let answer = client.get(&fqdn, "/").await;
    assert_eq!((answer.status, answer.text().as_str()), (200, "final"));
}

#[actix_rt::test]
async fn malformed_requests_are_refused_and_their_connection_closed() {
    let (backend, accepted) = echo_request_lines().await;
    let (server, fqdn) = routed_to(&backend).await;
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            format!("POST / HTTP/1.1\r\nhost: {fqdn}\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n")
                .into_bytes(),
            400,
            "both Transfer-Encoding and Content-Length",
        ),
        (
            format!("POST / HTTP/1.1\r\nhost: {fqdn}\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n").into_bytes(),
            400,
            "two Content-Length headers",
        ),
        (
            format!("POST / HTTP/1.1\r\nhost: {fqdn}\r\ntransfer-encoding: gzip\r\n\r\n").into_bytes(),
            400,
            "must end with chunked",
        ),
        (b"NOT HTTP AT ALL\r\n\r\n".to_vec(), 400, "not valid HTTP/1.1"),
        (
            format!(
                "GET / HTTP/1.1\r\nhost: {fqdn}\r\nx-big: {}\r\n\r\n",
                "a".repeat(70_000)
            )
            .into_bytes(),
            431,
            "too large",
        ),
    ];
    for (request, status, says) in cases {
        let mut client = Client::to(&server).await;
        client.send(&request).await;
        let answer = client.answer(false).await;
        assert_eq!(answer.status, status, "{}", answer.text());
        assert!(answer.text().contains(says), "{}", answer.text());
        assert_eq!(answer.header("connection"), Some("close"));
        assert!(client.closed().await);
    }
    let mut client = Client::to(&server).await;
    client
        .send(format!("CONNECT {fqdn}:443 HTTP/1.1\r\nhost: {fqdn}\r\n\r\n").as_bytes())
        .await;
    assert_eq!(client.answer(false).await.status, 405);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "nothing malformed reached the backend"
    );
}

#[actix_rt::test]
async fn an_invalid_answer_is_a_502_naming_the_host() {
    let (backend, _) = raw_backend(|mut stream| async move {
        let mut buf = Vec::new();
        if let Some(head) = read_head(&mut stream, &mut buf).await {
            let answer: &[u8] = if head.starts_with("GET /garbage") {
                b"SURPRISE\r\n\r\n"
            } else if head.starts_with("GET /two-lengths") {
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc"
            } else {
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n"
            };
            let _ = stream.write_all(answer).await;
        }
    })
    .await;
    let (server, fqdn) = routed_to(&backend).await;
    for path in ["/garbage", "/two-lengths", "/bad-chunk"] {
        let mut client = Client::to(&server).await;
        let answer = client.get(&fqdn, path).await;
        assert_eq!(answer.status, 502, "{path}: {}", answer.text());
        assert_eq!(
            answer.text(),
            format!("the backend of host '{fqdn}' sent an invalid answer\n")
        );
    }
}

#[actix_rt::test]
async fn a_backend_that_stalls_in_the_middle_of_an_answer_has_it_cut() {
    // Sends half of the answer, then nothing, without closing.
    let (backend, _) = raw_backend(|mut stream| async move {
        let mut buf = Vec::new();
        if read_head(&mut stream, &mut buf).await.is_some() {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf!")
                .await;
            let _ = read_head(&mut stream, &mut buf).await;
        }
    })
    .await;
    let (server, fqdn) = routed_with(&backend, |config| {
        config.proxy_backend_timeout = std::time::Duration::from_millis(300);
    })
    .await;
    let mut client = Client::to(&server).await;
    client
        .send(format!("GET / HTTP/1.1\r\nhost: {fqdn}\r\n\r\n").as_bytes())
        .await;
    assert_eq!(client.head().await.status, 200);
    assert_eq!(client.take(5).await, b"half!");
    assert!(
        client.closed().await,
        "the proxy gives up on a silent backend and tells the client by closing"
    );
}
