//! HTTP/1.1 message framing (RFC 9112 §6): how long a body is, and where a
//! chunked body ends. The proxy passes bodies through as they arrive; it
//! only needs to know where each message ends, so that the connection can
//! carry the next one.

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// The chunked transfer coding, passed through as it is.
    Chunked,
    /// Everything until the sender closes the connection (responses only).
    UntilClose,
}

impl Framing {
    /// Whether the body still has bytes to come before anything is read.
    pub fn has_body(self) -> bool {
        !matches!(self, Framing::Empty | Framing::Length(0))
    }
}

/// A chunked body that does not follow RFC 9112 §7.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body")]
pub struct BadChunk;

/// The longest chunk extension accepted (they are unused, and unbounded
/// ones would let a peer keep a connection busy with no data).
const MAX_EXTENSION: u32 = 4096;
/// A chunk size has at most 16 hex digits (it must fit in a `u64`).
const MAX_SIZE_DIGITS: u32 = 16;

/// Finds the end of a chunked body from its bytes, given in pieces as they
/// arrive, and says which of them are data.
#[derive(Debug, Default)]
pub struct Chunked {
    state: State,
    /// The chunk size being read, then what is left of the chunk's data.
    size: u64,
    /// Digits of the size read, or bytes of the extension or trailer line.
    count: u32,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    TrailerLf,
    EndLf,
    Done,
}

impl Chunked {
    /// Whether the whole body (last chunk and trailers) has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Reads `input`, calling `data` with the range of each run of chunk
    /// data in it. Answers how many bytes belong to the body: all of
    /// `input`, unless the body ends inside it.
    pub fn scan(&mut self, input: &[u8], mut data: impl FnMut(std::ops::Range<usize>)) -> Result<usize, BadChunk> {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Data {
                let available = (input.len() - i) as u64;
                let n = self.size.min(available) as usize;
                data(i..i + n);
                i += n;
                self.size -= n as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let byte = input[i];
            i += 1;
            self.state = match (self.state, byte) {
                (State::Done, _) => {
                    return Ok(i - 1);
                }
                (State::Size, b) if b.is_ascii_hexdigit() => {
                    self.count += 1;
                    if self.count > MAX_SIZE_DIGITS {
                        return Err(BadChunk);
                    }
                    let digit = (b as char).to_digit(16).ok_or(BadChunk)?;
                    self.size = self.size * 16 + u64::from(digit);
                    State::Size
                }
                (State::Size, b';' | b' ' | b'\t') if self.count > 0 => {
                    self.count = 0;
                    State::Extension
                }
                (State::Size, b'\r') if self.count > 0 => State::SizeLf,
                (State::Extension, b'\r') => State::SizeLf,
                (State::Extension, b'\n') => return Err(BadChunk),
                (State::Extension, _) => {
                    self.count += 1;
                    if self.count > MAX_EXTENSION {
                        return Err(BadChunk);
                    }
                    State::Extension
                }
                (State::SizeLf, b'\n') => {
                    self.count = 0;
                    if self.size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data
                    }
                }
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataLf, b'\n') => State::Size,
                (State::TrailerStart, b'\r') => State::EndLf,
                (State::TrailerStart | State::Trailer, b'\n') => return Err(BadChunk),
                (State::TrailerStart | State::Trailer, b) => {
                    self.count += 1;
                    if self.count > MAX_EXTENSION {
                        return Err(BadChunk);
                    }
                    if b == b'\r' {
                        State::TrailerLf
                    } else {
                        State::Trailer
                    }
                }
                (State::TrailerLf, b'\n') => {
                    self.count = 0;
                    State::TrailerStart
                }
                (State::EndLf, b'\n') => State::Done,
                _ => return Err(BadChunk),
            };
            if self.state == State::Done {
                return Ok(i);
            }
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Scans `input` in pieces of the given sizes; answers the data, the
    /// bytes that belong to the body and whether it ended.
    fn scan_in_pieces(input: &[u8], pieces: &[usize]) -> Result<(Vec<u8>, usize, bool), BadChunk> {
        let mut scanner = Chunked::default();
        let mut data = Vec::new();
        let mut at = 0;
        let mut sizes = pieces.iter().copied().chain(std::iter::repeat(usize::MAX));
        while at < input.len() && !scanner.is_done() {
            let size = sizes.next().unwrap_or(usize::MAX).max(1);
            let end = at.saturating_add(size).min(input.len());
            let piece = &input[at..end];
            let used = scanner.scan(piece, |r| data.extend_from_slice(&piece[r]))?;
            at += used;
            if used < piece.len() {
                break;
            }
        }
        Ok((data, at, scanner.is_done()))
    }

    #[test]
    fn a_body_ends_after_the_last_chunk_and_its_empty_trailer() {
        let body = b"5\r\nhello\r\n7;name=value\r\n, world\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        let (data, used, done) = scan_in_pieces(body, &[]).expect("valid");
        assert_eq!(data, b"hello, world");
        assert!(done);
        assert_eq!(&body[used..], b"GET / HTTP/1.1\r\n", "the next message is left alone");
    }

    #[test]
    fn trailers_belong_to_the_body() {
        let body = b"3\r\nabc\r\n0\r\nExpires: never\r\nX-Sum: 1\r\n\r\nnext";
        let (data, used, done) = scan_in_pieces(body, &[]).expect("valid");
        assert_eq!((data.as_slice(), done), (&b"abc"[..], true));
        assert_eq!(&body[used..], b"next");
    }

    #[test]
    fn a_body_cut_short_is_not_done() {
        let (data, used, done) = scan_in_pieces(b"a\r\n01234", &[]).expect("valid so far");
        assert_eq!((data.as_slice(), used, done), (&b"01234"[..], 8, false));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for bad in [
            &b"\r\n"[..],
            b"g\r\n",
            b"5\nhello",
            b"5\r\nhelloX",
            b"5\r\nhello\rX",
            b"11111111111111111\r\n",
            b"0\r\nbroken\n",
            b"0\r\n\n",
            b";ext\r\n",
        ] {
            assert_eq!(
                scan_in_pieces(bad, &[]),
                Err(BadChunk),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    /// Encodes `chunks` (no empty ones: an empty chunk is the last) with
    /// optional extensions and trailers.
    fn encode(chunks: &[Vec<u8>], extension: bool, trailers: &[String]) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in chunks.iter().filter(|c| !c.is_empty()) {
            out.extend_from_slice(format!("{:x}", chunk.len()).as_bytes());
            if extension {
                out.extend_from_slice(b";x=1");
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n");
        for t in trailers {
            out.extend_from_slice(format!("{t}\r\n").as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    proptest! {
        #[test]
        fn any_split_of_any_body_yields_its_data_and_its_end(
            chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..8),
            extension in any::<bool>(),
            trailers in prop::collection::vec("[a-z]{1,8}: [a-z0-9]{0,8}", 0..3),
            pieces in prop::collection::vec(1usize..20, 0..50),
            after in prop::collection::vec(any::<u8>(), 0..10),
        ) {
            let body = encode(&chunks, extension, &trailers);
            let mut input = body.clone();
            input.extend_from_slice(&after);
            let (data, used, done) = scan_in_pieces(&input, &pieces).expect("a valid body");
            prop_assert!(done);
            prop_assert_eq!(used, body.len());
            prop_assert_eq!(data, chunks.concat());
        }
    }
}
