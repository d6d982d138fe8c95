//! Every HTTP answer the server gives, as pure functions: the `101` of an upgrade, the refusals
//! (`503`, `429`), the errors of a bad request (`400`, `426`, `431`), and the endpoints served
//! on the same port for requests that are not upgrades: `/health`, `/ready`, `/metrics`
//! (Prometheus text), `/status.json` (the status page's history) and `/`, the status page;
//! the last three only for clients in `--metrics-allow`. A WebSocket upgrade on any path is a
//! group key (docs/PROTOCOL.md §1).

use std::fmt::Write as _;

use crate::access::OriginPolicy;
use crate::handshake::{BadUrl, HttpRequest, Method, Request, Target, Upgrade};
use crate::metrics::HandshakeFailure;

/// The status page: self-contained (no outside assets), it reads `/metrics` every two seconds
/// and `/status.json` for its charts.
const STATUS_PAGE: &str = include_str!("status.html");

const TEXT: &str = "text/plain; charset=utf-8";

/// Why a connection over a limit is refused (it still gets an HTTP answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The server holds its maximum number of connections: 503.
    Full,
    /// This address holds its maximum number of connections: 429.
    PerAddress,
    /// The server is stopping: 503.
    Stopping,
}

/// What the server's state says about a request, beyond the request itself.
#[allow(missing_debug_implementations)] // holds a closure
pub struct Context<'a> {
    /// The connection was admitted over a limit.
    pub refusal: Option<Refusal>,
    /// The server is stopping: upgrades get 503, `/ready` says so.
    pub stopping: bool,
    /// The client may read `/metrics`, `/status.json` and `/`.
    pub metrics_allowed: bool,
    /// Which `Origin`s may open a WebSocket.
    pub origins: &'a OriginPolicy,
    /// Renders the metrics text, only when asked for.
    pub metrics: &'a dyn Fn() -> String,
    /// Renders the status page's history (`/status.json`), only when asked for.
    pub status: &'a dyn Fn() -> String,
}

/// The answer to a request head.
#[derive(Debug)]
pub enum Answer {
    /// Switch to WebSocket with this `101` answer, on this target.
    Upgrade(Vec<u8>, Result<Target, BadUrl>),
    /// Send this answer, then close. A failed upgrade names its failure, for the counters.
    Close(Vec<u8>, Option<HandshakeFailure>),
}

/// The answer to a complete request head (`None`: the head was over the size limit).
pub fn answer(request: Option<&Request>, ctx: &Context<'_>) -> Answer {
    let refuse = |failure: HandshakeFailure| Answer::Close(refusal(failure), Some(failure));
    let Some(request) = request else {
        return Answer::Close(
            error(431, "Request Header Fields Too Large", "", ""),
            Some(HandshakeFailure::TooLarge),
        );
    };
    match request {
        Request::Upgrade(_) if ctx.stopping || ctx.refusal == Some(Refusal::Stopping) => {
            refuse(HandshakeFailure::RefusedStopping)
        }
        Request::Upgrade(u) if !ctx.origins.allows(u.source.origin.as_deref()) => Answer::Close(
            error(
                403,
                "Forbidden",
                "",
                "This origin may not use this server: see --allow-origin.\n",
            ),
            Some(HandshakeFailure::Origin),
        ),
        Request::Upgrade(_) if ctx.refusal == Some(Refusal::Full) => {
            refuse(HandshakeFailure::RefusedFull)
        }
        Request::Upgrade(_) if ctx.refusal == Some(Refusal::PerAddress) => {
            refuse(HandshakeFailure::RefusedPerAddress)
        }
        Request::Upgrade(u) => Answer::Upgrade(switching_protocols(u), u.target.clone()),
        Request::Http(r) => Answer::Close(endpoint(r, ctx), None),
        Request::WrongVersion => Answer::Close(
            error(
                426,
                "Upgrade Required",
                "Sec-WebSocket-Version: 13\r\n",
                "Only WebSocket version 13 is supported.\n",
            ),
            Some(HandshakeFailure::WrongVersion),
        ),
        Request::Malformed => Answer::Close(
            error(400, "Bad Request", "", "Bad request.\n"),
            Some(HandshakeFailure::BadRequest),
        ),
    }
}

fn refusal(failure: HandshakeFailure) -> Vec<u8> {
    let body = match failure {
        HandshakeFailure::RefusedPerAddress => {
            return error(
                429,
                "Too Many Requests",
                "Retry-After: 5\r\n",
                "Too many connections from your address.\n",
            )
        }
        HandshakeFailure::RefusedStopping => "The server is stopping; try again shortly.\n",
        _ => "Too many connections; try again later.\n",
    };
    error(503, "Service Unavailable", "Retry-After: 5\r\n", body)
}

/// The answer of an endpoint.
fn endpoint(req: &HttpRequest, ctx: &Context<'_>) -> Vec<u8> {
    let with_body = req.method == Method::Get;
    let ok =
        |content_type: &str, body: &[u8]| response(200, "OK", content_type, "", body, with_body);
    if req.method == Method::Other {
        return response(
            405,
            "Method Not Allowed",
            TEXT,
            "Allow: GET, HEAD\r\n",
            b"Only GET and HEAD are served.\n",
            true,
        );
    }
    match req.path.as_slice() {
        b"/health" => ok(TEXT, b"ok\n"),
        b"/ready" if ctx.stopping => response(
            503,
            "Service Unavailable",
            TEXT,
            "",
            b"stopping\n",
            with_body,
        ),
        b"/ready" => ok(TEXT, b"ready\n"),
        b"/metrics" | b"/" | b"/status.json" if !ctx.metrics_allowed => response(
            403,
            "Forbidden",
            TEXT,
            "",
            b"Forbidden: see --metrics-allow.\n",
            with_body,
        ),
        b"/metrics" => ok(
            "text/plain; version=0.0.4; charset=utf-8",
            (ctx.metrics)().as_bytes(),
        ),
        b"/status.json" => ok("application/json", (ctx.status)().as_bytes()),
        b"/" => ok("text/html; charset=utf-8", STATUS_PAGE.as_bytes()),
        _ => response(
            404,
            "Not Found",
            TEXT,
            "",
            b"Not found. This is a WebSocket signaling server: connect with ws:// or wss://; \
              the path is the group key.\n",
            with_body,
        ),
    }
}

/// The `101 Switching Protocols` answer to an upgrade (RFC 6455 §4.2.2).
pub fn switching_protocols(upgrade: &Upgrade) -> Vec<u8> {
    let mut s = String::with_capacity(160);
    s.push_str("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n");
    let _ = write!(s, "Sec-WebSocket-Accept: {}\r\n", upgrade.accept);
    if let Some(p) = &upgrade.protocol {
        let _ = write!(s, "Sec-WebSocket-Protocol: {p}\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// A short complete HTTP answer in plain text, after which the connection is closed.
pub fn error(status: u16, reason: &str, extra_headers: &str, body: &str) -> Vec<u8> {
    response(status, reason, TEXT, extra_headers, body.as_bytes(), true)
}

/// A complete HTTP answer, after which the connection is closed; without the body (but with
/// its length) when `with_body` is false, as `HEAD` wants.
pub fn response(
    status: u16,
    reason: &str,
    content_type: &str,
    extra_headers: &str,
    body: &[u8],
    with_body: bool,
) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{extra_headers}\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::Source;

    static ANY_ORIGIN: OriginPolicy = OriginPolicy {
        allowed: Vec::new(),
        require: false,
    };

    fn ctx(refusal: Option<Refusal>, stopping: bool) -> Context<'static> {
        Context {
            refusal,
            stopping,
            metrics_allowed: false,
            origins: &ANY_ORIGIN,
            metrics: &|| unreachable!("metrics are not allowed here"),
            status: &|| unreachable!("the status is not allowed here"),
        }
    }

    fn head(answer: &Answer) -> String {
        let bytes = match answer {
            Answer::Upgrade(b, _) | Answer::Close(b, _) => b,
        };
        let text = String::from_utf8_lossy(bytes);
        text.lines().next().unwrap_or_default().to_owned()
    }

    fn get(path: &str) -> Request {
        Request::Http(HttpRequest {
            method: Method::Get,
            path: path.as_bytes().to_vec(),
            source: Source::default(),
        })
    }

    #[test]
    fn refusals_answer_upgrades_but_not_endpoints() {
        let upgrade = Request::Upgrade(Upgrade {
            accept: "x".into(),
            protocol: None,
            target: Ok(Target {
                key: b"k".to_vec(),
                favored: false,
            }),
            source: Source::default(),
        });
        let cases = [
            (None, false, "HTTP/1.1 101 Switching Protocols"),
            (
                Some(Refusal::Full),
                false,
                "HTTP/1.1 503 Service Unavailable",
            ),
            (
                Some(Refusal::PerAddress),
                false,
                "HTTP/1.1 429 Too Many Requests",
            ),
            (None, true, "HTTP/1.1 503 Service Unavailable"),
        ];
        for (refusal, stopping, line) in cases {
            assert_eq!(head(&answer(Some(&upgrade), &ctx(refusal, stopping))), line);
            let health = answer(Some(&get("/health")), &ctx(refusal, stopping));
            assert_eq!(head(&health), "HTTP/1.1 200 OK");
        }
    }

    #[test]
    fn ready_says_503_while_stopping_and_metrics_need_permission() {
        assert_eq!(
            head(&answer(Some(&get("/ready")), &ctx(None, false))),
            "HTTP/1.1 200 OK"
        );
        let stopping = answer(Some(&get("/ready")), &ctx(None, true));
        assert_eq!(head(&stopping), "HTTP/1.1 503 Service Unavailable");
        for path in ["/metrics", "/", "/status.json"] {
            assert_eq!(
                head(&answer(Some(&get(path)), &ctx(None, false))),
                "HTTP/1.1 403 Forbidden",
                "{path}"
            );
        }
        assert!(matches!(
            answer(None, &ctx(None, false)),
            Answer::Close(_, Some(HandshakeFailure::TooLarge))
        ));
    }

    #[test]
    fn error_answers_are_complete() {
        let answer = String::from_utf8(error(404, "Not Found", "", "nothing here\n")).unwrap();
        assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(answer.contains("Content-Length: 13\r\n"));
        assert!(answer.ends_with("\r\n\r\nnothing here\n"));
    }
}
