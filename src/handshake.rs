//! The HTTP side of a connection: parsing the upgrade request (RFC 6455 §4.2.1), extracting
//! the group key and `favored` from its target (docs/PROTOCOL.md §1).
//!
//! Pure functions over byte strings: no socket, no clock. The connection feeds the bytes read
//! so far; the answers are written by [`crate::http`].

/// Largest request head accepted (request line and headers), in bytes; more gets 431.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Most headers parsed in one request; more is answered like an oversized head.
const MAX_HEADERS: usize = 64;

/// What the bytes received so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse {
    /// The head is not complete yet.
    Partial,
    /// The head is complete; `consumed` bytes of the buffer belong to it (the rest, if any,
    /// are early WebSocket frames).
    Done {
        /// Bytes of the buffer taken by the request head.
        consumed: usize,
        /// What was asked.
        request: Request,
    },
    /// The head is longer than [`MAX_REQUEST_BYTES`] or has too many headers.
    TooLarge,
}

/// A complete request head, classified.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// A valid WebSocket upgrade.
    Upgrade(Upgrade),
    /// A request that does not ask for a WebSocket: a plain HTTP request for an endpoint.
    Http(HttpRequest),
    /// An upgrade with a `Sec-WebSocket-Version` other than 13.
    WrongVersion,
    /// Not valid HTTP/1.1, or an upgrade missing a required part.
    Malformed,
}

/// A plain HTTP request (not an upgrade).
#[derive(Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET` and `HEAD` are served; anything else is refused with 405.
    pub method: Method,
    /// The path, without the query string.
    pub path: Vec<u8>,
    /// Where it says it comes from.
    pub source: Source,
}

/// What a request says about where it comes from: believed only as far as the server's
/// settings say (see [`crate::access`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    /// `Origin`, as sent.
    pub origin: Option<Vec<u8>>,
    /// `X-Forwarded-For`, its lines joined with commas.
    pub forwarded_for: Option<Vec<u8>>,
    /// `X-Real-IP`.
    pub real_ip: Option<Vec<u8>>,
}

/// The HTTP methods the endpoints tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`: the answer of `GET` without its body.
    Head,
    /// Any other method.
    Other,
}

/// A valid upgrade request.
#[derive(Debug, PartialEq, Eq)]
pub struct Upgrade {
    /// `Sec-WebSocket-Accept` value for the response.
    pub accept: String,
    /// The first subprotocol offered, echoed back (docs/PROTOCOL.md §1).
    pub protocol: Option<String>,
    /// Key and `favored`, or why the target is not a usable URL (closed with 4745 after the
    /// upgrade, so that the client sees the code).
    pub target: Result<Target, BadUrl>,
    /// Where it says it comes from.
    pub source: Source,
}

/// Where a peer wants to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The group key: the path without its leading `/`, as sent (no percent-decoding).
    pub key: Vec<u8>,
    /// The query has a parameter named `favored`.
    pub favored: bool,
}

/// The request target is not a URL path we can take a key from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadUrl;

/// Whether the bytes received so far hold the empty line that ends a request head, looking only
/// at what came after the first `scanned` bytes (and the two before, where the line may have
/// started): a client sending its head a byte at a time costs work linear in its bytes.
pub fn head_complete(buf: &[u8], scanned: usize) -> bool {
    let from = scanned.saturating_sub(2);
    buf.get(from..).is_some_and(|tail| {
        tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n")
    })
}

/// Classifies the bytes received so far.
pub fn parse(buf: &[u8]) -> Parse {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(consumed)) if consumed > MAX_REQUEST_BYTES => Parse::TooLarge,
        Ok(httparse::Status::Complete(consumed)) => Parse::Done {
            consumed,
            request: classify(&req),
        },
        Ok(httparse::Status::Partial) if buf.len() > MAX_REQUEST_BYTES => Parse::TooLarge,
        Ok(httparse::Status::Partial) => Parse::Partial,
        Err(httparse::Error::TooManyHeaders) => Parse::TooLarge,
        Err(_) => Parse::Done {
            consumed: buf.len(),
            request: Request::Malformed,
        },
    }
}

fn header_values<'a>(
    req: &'a httparse::Request<'_, '_>,
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> {
    req.headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

fn classify(req: &httparse::Request<'_, '_>) -> Request {
    let header = |name: &'static str| header_values(req, name);
    let source = Source {
        origin: header("origin").next().map(<[u8]>::to_vec),
        forwarded_for: header("x-forwarded-for")
            .map(<[u8]>::to_vec)
            .reduce(|mut all, line| {
                all.push(b',');
                all.extend_from_slice(&line);
                all
            }),
        real_ip: header("x-real-ip").next().map(<[u8]>::to_vec),
    };
    let has_token = |name: &'static str, token: &str| {
        header(name).any(|v| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    if !has_token("upgrade", "websocket") {
        let target = req.path.unwrap_or("").as_bytes();
        // `GET http://host/health` is `GET /health`; a target that is neither form is a path
        // no endpoint has (404).
        let target = match path_and_query(target) {
            Ok(b"") => b"/",
            Ok(p) => p,
            Err(BadUrl) => target,
        };
        let path = target
            .split(|&b| b == b'?' || b == b'#')
            .next()
            .unwrap_or_default();
        return Request::Http(HttpRequest {
            method: match req.method {
                Some("GET") => Method::Get,
                Some("HEAD") => Method::Head,
                _ => Method::Other,
            },
            path: path.to_vec(),
            source,
        });
    }
    // RFC 6455 §4.2.1: a GET, HTTP/1.1 or higher, `Connection: Upgrade`, a key, version 13.
    if req.method != Some("GET") || req.version != Some(1) || !has_token("connection", "upgrade") {
        return Request::Malformed;
    }
    let Some(key) = header("sec-websocket-key").next().map(<[u8]>::trim_ascii) else {
        return Request::Malformed;
    };
    if key.is_empty() {
        return Request::Malformed;
    }
    if !header("sec-websocket-version").any(|v| v.trim_ascii() == b"13") {
        return Request::WrongVersion;
    }
    let protocol = header("sec-websocket-protocol")
        .flat_map(|v| v.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .find(|p| !p.is_empty())
        .and_then(|p| std::str::from_utf8(p).ok())
        .map(str::to_owned);
    Request::Upgrade(Upgrade {
        accept: tungstenite::handshake::derive_accept_key(key),
        protocol,
        target: parse_target(req.path.unwrap_or("").as_bytes()),
        source,
    })
}

/// The path and query of a request target: itself in origin-form (`/key?q`), what follows
/// the authority in absolute-form (`ws://host/key?q`, RFC 9112 §3.2.2; empty with no path).
fn path_and_query(target: &[u8]) -> Result<&[u8], BadUrl> {
    if target.starts_with(b"/") {
        return Ok(target);
    }
    // absolute-form: scheme "://" authority path
    let scheme_end = find(target, b"://").ok_or(BadUrl)?;
    let scheme = &target[..scheme_end];
    if scheme.is_empty()
        || !scheme
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(b))
    {
        return Err(BadUrl);
    }
    let rest = &target[scheme_end + 3..];
    Ok(
        match rest.iter().position(|&b| matches!(b, b'/' | b'?' | b'#')) {
            Some(i) => &rest[i..],
            None => b"",
        },
    )
}

/// Splits a request target into key and `favored` (docs/PROTOCOL.md §1). Accepts origin-form
/// (`/key?favored`) and absolute-form (`ws://host/key?favored`).
pub fn parse_target(target: &[u8]) -> Result<Target, BadUrl> {
    let path_and_query = path_and_query(target)?;
    // A fragment is never part of the key; a browser does not send one anyway.
    let before_fragment = match path_and_query.iter().position(|&b| b == b'#') {
        Some(i) => &path_and_query[..i],
        None => path_and_query,
    };
    let (path, query) = match before_fragment.iter().position(|&b| b == b'?') {
        Some(i) => (&before_fragment[..i], &before_fragment[i + 1..]),
        None => (before_fragment, &b""[..]),
    };
    let key = path.strip_prefix(b"/").unwrap_or(path);
    Ok(Target {
        key: key.to_vec(),
        favored: query
            .split(|&b| b == b'&')
            .any(|param| param_name_is(param, b"favored")),
    })
}

/// True when the name of `param` (`name` or `name=value`), form-decoded as
/// `URLSearchParams` does, is `name`.
fn param_name_is(param: &[u8], name: &[u8]) -> bool {
    let raw = match param.iter().position(|&b| b == b'=') {
        Some(i) => &param[..i],
        None => param,
    };
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'+' => decoded.push(b' '),
            b'%' => {
                let digit = |at: usize| raw.get(at).and_then(|&b| hex(b));
                match (digit(i + 1), digit(i + 2)) {
                    (Some(h), Some(l)) => {
                        decoded.push(h << 4 | l);
                        i += 2;
                    }
                    _ => decoded.push(b'%'),
                }
            }
            b => decoded.push(b),
        }
        i += 1;
    }
    decoded == name
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests;
