//! The HTTP endpoints, answered on the same port for requests that are not upgrades:
//! `/health`, `/ready`, `/metrics` (Prometheus text) and `/`, a small status page. The last
//! two only for clients in `--metrics-allow`. A WebSocket upgrade on any path is a group key.

use std::net::IpAddr;

use super::driver::Driver;
use crate::handshake::{self, HttpRequest, Method};

/// The status page: self-contained (no outside assets), it reads `/metrics` every two seconds.
const STATUS_PAGE: &str = include_str!("status.html");

const TEXT: &str = "text/plain; charset=utf-8";

impl Driver {
    /// The complete answer to a plain HTTP request from `client`.
    pub(super) fn http_answer(&self, client: IpAddr, req: &HttpRequest) -> Vec<u8> {
        let with_body = req.method == Method::Get;
        let ok = |content_type: &str, body: &[u8]| {
            handshake::response(200, "OK", content_type, "", body, with_body)
        };
        let allowed = self.config.metrics_allow.iter().any(|n| n.contains(client));
        let path = req.path.as_slice();
        if req.method == Method::Other {
            return handshake::response(
                405,
                "Method Not Allowed",
                TEXT,
                "Allow: GET, HEAD\r\n",
                b"Only GET and HEAD are served.\n",
                true,
            );
        }
        match path {
            b"/health" => ok(TEXT, b"ok\n"),
            b"/ready" if self.stopping_until.is_some() => handshake::response(
                503,
                "Service Unavailable",
                TEXT,
                "",
                b"stopping\n",
                with_body,
            ),
            b"/ready" => ok(TEXT, b"ready\n"),
            b"/metrics" | b"/" if !allowed => handshake::response(
                403,
                "Forbidden",
                TEXT,
                "",
                b"Forbidden: see --metrics-allow.\n",
                with_body,
            ),
            b"/metrics" => ok(
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render(&self.gauges()).as_bytes(),
            ),
            b"/" => ok("text/html; charset=utf-8", STATUS_PAGE.as_bytes()),
            _ => handshake::response(
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
}
