//! A request head read from a client: what to do with it (`plan`: answer
//! here, or forward with the head rewritten: hop-by-hop headers out,
//! `Host` and `X-Forwarded-*` in), and an answer's head rewritten for
//! the client; the header rules both follow.

use std::net::SocketAddr;
use std::sync::Arc;

use super::framing::Framing;
use super::{Backend, Proxy, Refusal};

/// The largest request or response head accepted.
pub(super) const MAX_HEAD: usize = 64 * 1024;

/// What to do with a request, decided from its head.
pub(super) enum Plan {
    /// Answer it here.
    Answer(Refusal),
    /// Forward it: its head (rewritten) is in the head buffer.
    Forward(Forward),
}

pub(super) struct Forward {
    pub(super) backend: Arc<Backend>,
    /// The host asked for, for error messages.
    pub(super) host: Arc<str>,
    pub(super) body: Framing,
    /// A HEAD request: the answer has no body whatever its headers say.
    pub(super) head_only: bool,
    /// The client asked for an upgrade (WebSocket).
    pub(super) upgrade: bool,
    /// The client asked for a `100 Continue` before sending its body.
    pub(super) expect_continue: bool,
    pub(super) keep_alive: bool,
    pub(super) http10: bool,
}

/// Decides what to do with a request and, to forward it, writes its
/// rewritten head to `head`.
pub(super) fn plan(
    proxy: &Proxy,
    req: &httparse::Request<'_, '_>,
    peer: SocketAddr,
    scheme: &'static str,
    head: &mut Vec<u8>,
) -> Plan {
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Plan::Answer(Refusal::bad_request("the request is not valid HTTP/1.1"));
    };
    let http10 = version == 0;
    let mut keep_alive = !http10;
    let mut upgrade_token = false;
    let mut host_header = None;
    let mut length: Option<u64> = None;
    let mut transfer_encoding = None;
    let mut upgrade = None;
    let mut expect_continue = false;
    let mut forwarded_for = None;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            if host_header.is_some() {
                return Plan::Answer(Refusal::bad_request("the request has two Host headers"));
            }
            host_header = Some(h.value);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in tokens(h.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && http10 {
                    keep_alive = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    upgrade_token = true;
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let Some(n) = parse_length(h.value) else {
                return Plan::Answer(Refusal::bad_request("the Content-Length header is not a number"));
            };
            if length.is_some_and(|l| l != n) {
                return Plan::Answer(Refusal::bad_request("the request has two Content-Length headers"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding = Some(h.value);
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade = Some(h.value);
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = h.value.eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for = Some(h.value);
        }
    }
    let body = match (transfer_encoding, length) {
        (Some(_), Some(_)) => {
            return Plan::Answer(Refusal::bad_request(
                "the request has both Transfer-Encoding and Content-Length",
            ))
        }
        (Some(te), None) if tokens(te).last().is_some_and(|t| t.eq_ignore_ascii_case(b"chunked")) && !http10 => {
            Framing::Chunked
        }
        (Some(_), None) => {
            return Plan::Answer(Refusal {
                keep_alive: false,
                ..Refusal::bad_request("the request's Transfer-Encoding must end with chunked")
            })
        }
        (None, Some(n)) => Framing::Length(n),
        (None, None) => Framing::Empty,
    };
    let head_only = method.eq_ignore_ascii_case("HEAD");
    let refuse = |refusal: Refusal| {
        // An unread body would be taken for the next request.
        let keep_alive = refusal.keep_alive && keep_alive && !body.has_body();
        Plan::Answer(Refusal {
            keep_alive,
            head_only,
            ..refusal
        })
    };
    if method.eq_ignore_ascii_case("CONNECT") {
        return refuse(Refusal::method_not_allowed());
    }

    // The request target: origin form, or absolute form (whose authority
    // then names the host).
    let (authority, path) = match target.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") => {
            match rest.find('/') {
                Some(i) => (Some(&rest[..i]), &rest[i..]),
                None => (Some(rest), "/"),
            }
        }
        _ => (None, target),
    };
    let raw_host = match (authority, host_header.and_then(|h| std::str::from_utf8(h).ok())) {
        (Some(authority), _) => authority,
        (None, Some(host)) => host,
        (None, None) => return refuse(Refusal::bad_request("no Host header")),
    };
    let host = normalize_host(raw_host);
    let table = proxy.table();
    let Some(entry) = table.hosts.get(host.as_ref()) else {
        return refuse(Refusal::no_route(&host));
    };
    let (backend, prefix) = match entry.target.route(proxy, &entry.host, scheme, path, req.headers) {
        Ok(chosen) => chosen,
        Err(refusal) => return refuse(refusal),
    };

    head.clear();
    head.extend_from_slice(method.as_bytes());
    head.push(b' ');
    head.extend_from_slice(prefix.as_bytes());
    head.extend_from_slice(path.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    head.extend_from_slice(backend.address.as_bytes());
    head.extend_from_slice(b"\r\n");
    let upgrade = upgrade.filter(|_| upgrade_token);
    let names_others = connection_names_others(req.headers);
    for h in req.headers.iter() {
        if (is_hop_by_hop(h.name) && !(upgrade.is_some() && h.name.eq_ignore_ascii_case("upgrade")))
            || h.name.eq_ignore_ascii_case("host")
            || h.name.eq_ignore_ascii_case("expect")
            || h.name.eq_ignore_ascii_case("x-forwarded-for")
            || h.name.eq_ignore_ascii_case("x-forwarded-host")
            || h.name.eq_ignore_ascii_case("x-forwarded-proto")
            || (names_others && named_by_connection(req.headers, h.name))
        {
            continue;
        }
        write_header(head, h.name.as_bytes(), h.value);
    }
    if upgrade.is_some() {
        head.extend_from_slice(b"connection: upgrade\r\n");
    }
    head.extend_from_slice(b"x-forwarded-for: ");
    if let Some(earlier) = forwarded_for {
        head.extend_from_slice(earlier);
        head.extend_from_slice(b", ");
    }
    // An IP address: no allocation for the common cases worth one.
    let mut ip = [0u8; 64];
    let ip = {
        use std::io::Write as _;
        let mut cursor = std::io::Cursor::new(&mut ip[..]);
        let _ = write!(cursor, "{}", peer.ip());
        let n = cursor.position() as usize;
        &ip[..n]
    };
    head.extend_from_slice(ip);
    head.extend_from_slice(b"\r\nx-forwarded-host: ");
    head.extend_from_slice(raw_host.as_bytes());
    head.extend_from_slice(b"\r\nx-forwarded-proto: ");
    head.extend_from_slice(scheme.as_bytes());
    head.extend_from_slice(b"\r\n\r\n");
    Plan::Forward(Forward {
        backend,
        host: Arc::clone(&entry.host),
        body,
        head_only,
        upgrade: upgrade.is_some(),
        expect_continue,
        keep_alive,
        http10,
    })
}

/// Whether `buf` may hold a whole head: a line feed followed by an empty
/// line (httparse accepts bare line feeds). Looks only at what came after
/// `scanned`, and moves it on.
pub(super) fn may_hold_head(buf: &[u8], scanned: &mut usize) -> bool {
    let from = scanned.saturating_sub(2);
    *scanned = buf.len();
    if buf.len() > MAX_HEAD {
        // Too long to be a head: let the parser say so.
        return true;
    }
    buf[from..]
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .any(|(i, _)| matches!(&buf[from + i + 1..], [b'\n', ..] | [b'\r', b'\n', ..]))
}

/// How an answer's body is framed and whether the backend closes after it;
/// `None` when the head contradicts itself.
pub(super) fn response_meta(res: &httparse::Response<'_, '_>, plan: &Forward) -> Option<(Framing, bool)> {
    let status = res.code.unwrap_or(0);
    let mut close = res.version == Some(0);
    let mut length: Option<u64> = None;
    let mut chunked = None;
    for h in res.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            for token in tokens(h.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && res.version == Some(0) {
                    close = false;
                }
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_length(h.value)?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = Some(
                tokens(h.value)
                    .last()
                    .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked")),
            );
        }
    }
    let body = if plan.head_only || status == 204 || status == 304 || status == 101 {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) | (None, None) => Framing::UntilClose,
            (None, Some(n)) => Framing::Length(n),
        }
    };
    if body == Framing::UntilClose {
        close = true;
    }
    Some((body, close))
}

/// Writes the answer's head for the client: hop-by-hop headers out, and
/// `Connection` as this proxy means it.
pub(super) fn write_response_head(
    res: &httparse::Response<'_, '_>,
    out: &mut Vec<u8>,
    decode: bool,
    upgraded: bool,
    keep_alive: bool,
    http10: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    let mut code = [0u8; 3];
    let status = res.code.unwrap_or(502);
    code[0] = b'0' + (status / 100 % 10) as u8;
    code[1] = b'0' + (status / 10 % 10) as u8;
    code[2] = b'0' + (status % 10) as u8;
    out.extend_from_slice(&code);
    out.push(b' ');
    out.extend_from_slice(res.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let names_others = connection_names_others(res.headers);
    for h in res.headers.iter() {
        if (is_hop_by_hop(h.name) && !(upgraded && h.name.eq_ignore_ascii_case("upgrade")))
            || (decode && h.name.eq_ignore_ascii_case("transfer-encoding"))
            || (names_others && named_by_connection(res.headers, h.name))
        {
            continue;
        }
        write_header(out, h.name.as_bytes(), h.value);
    }
    if upgraded {
        out.extend_from_slice(b"connection: upgrade\r\n");
    } else if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if http10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn write_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Headers that concern one connection, not the message (RFC 9110 §7.6.1).
/// `Transfer-Encoding` is not among them here: bodies pass through with
/// their coding.
fn is_hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Whether a `Connection` header names a header to drop, beyond the usual
/// `close`, `keep-alive` and `upgrade` (rare: only then is each header
/// looked up in it).
fn connection_names_others(headers: &[httparse::Header<'_>]) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| tokens(h.value))
        .any(|t| {
            !(t.eq_ignore_ascii_case(b"close")
                || t.eq_ignore_ascii_case(b"keep-alive")
                || t.eq_ignore_ascii_case(b"upgrade"))
        })
}

/// Whether a `Connection` header of `headers` names `name`.
fn named_by_connection(headers: &[httparse::Header<'_>], name: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| tokens(h.value))
        .any(|token| token.eq_ignore_ascii_case(name.as_bytes()) && !token.eq_ignore_ascii_case(b"upgrade"))
}

/// The comma-separated tokens of a header value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

fn parse_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// A Host header's host: lowercase, without a port or a trailing dot.
fn normalize_host(raw: &str) -> std::borrow::Cow<'_, str> {
    let host = match raw.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => raw,
    };
    let host = host.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lose_their_port_case_and_trailing_dot() {
        assert_eq!(
            normalize_host("Web-AbC.Tenure.localhost.:8080"),
            "web-abc.tenure.localhost"
        );
        assert_eq!(normalize_host("web.tenure.localhost"), "web.tenure.localhost");
        assert_eq!(normalize_host("[::1]:80"), "[::1]");
    }

    #[test]
    fn a_head_is_parsed_once_its_blank_line_may_have_come() {
        let mut scanned = 0;
        let mut buf = b"GET / HTTP/1.1\r\nhost: a\r".to_vec();
        assert!(!may_hold_head(&buf, &mut scanned));
        buf.extend_from_slice(b"\n\r");
        assert!(!may_hold_head(&buf, &mut scanned));
        buf.extend_from_slice(b"\n");
        assert!(may_hold_head(&buf, &mut scanned), "the end spans three reads");
        let mut scanned = 0;
        assert!(may_hold_head(b"GET / HTTP/1.1\nhost: a\n\n", &mut scanned));
        let mut scanned = 0;
        assert!(!may_hold_head(b"", &mut scanned));
    }

    #[test]
    fn lengths_are_plain_decimal_numbers() {
        assert_eq!(parse_length(b" 42 "), Some(42));
        for bad in [&b""[..], b"-1", b"+1", b"1 2", b"0x10", b"99999999999999999999"] {
            assert_eq!(parse_length(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn connection_tokens_name_hop_by_hop_headers() {
        let headers = [httparse::Header {
            name: "Connection",
            value: b"keep-alive, X-Private ,upgrade",
        }];
        assert!(named_by_connection(&headers, "x-private"));
        assert!(!named_by_connection(&headers, "upgrade"), "upgrade is decided apart");
        assert!(!named_by_connection(&headers, "x-public"));
        assert!(connection_names_others(&headers));
        let usual = [httparse::Header {
            name: "connection",
            value: b"Keep-Alive, Upgrade",
        }];
        assert!(!connection_names_others(&usual));
    }
}
