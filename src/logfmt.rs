//! `--log-format json`: one JSON object per log line, for journald, Loki or Vector. The
//! record's message and its structured fields (`log`'s key-values: the connection id, the
//! client's address, the close code, the limit) become members; text stays the default.
//! Pure: the binary installs [`write_json`] as its logger's format.

use std::fmt::Write as _;

/// How the binary writes its log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// env_logger's text lines (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Parses `text` or `json`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("'{s}' is not a log format (text or json)")),
        }
    }
}

/// Appends `s` as a JSON string (RFC 8259 §7).
fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The JSON object of one record, without its line end: `time` (as given), `level`,
/// `target`, `message`, then each field, numbers as numbers, the rest as strings. A field
/// named like one of the first four is prefixed `field_`.
pub fn json_line(time: &str, record: &log::Record<'_>) -> String {
    let mut out = String::with_capacity(160);
    out.push_str("{\"time\":");
    push_str(&mut out, time);
    out.push_str(",\"level\":");
    push_str(&mut out, record.level().as_str());
    out.push_str(",\"target\":");
    push_str(&mut out, record.target());
    out.push_str(",\"message\":");
    push_str(&mut out, &record.args().to_string());
    let mut fields = Fields(&mut out);
    let _ = record.key_values().visit(&mut fields);
    out.push('}');
    out
}

struct Fields<'a>(&'a mut String);

impl<'kvs> log::kv::VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        let out = &mut *self.0;
        out.push(',');
        let key = key.as_str();
        if matches!(key, "time" | "level" | "target" | "message") {
            push_str(out, &format!("field_{key}"));
        } else {
            push_str(out, key);
        }
        out.push(':');
        match (value.to_u64(), value.to_i64()) {
            (Some(n), _) => {
                let _ = write!(out, "{n}");
            }
            (None, Some(n)) => {
                let _ = write!(out, "{n}");
            }
            _ => push_str(out, &value.to_string()),
        }
        Ok(())
    }
}

/// The env_logger format of `--log-format json`.
pub fn write_json(
    buf: &mut env_logger::fmt::Formatter,
    record: &log::Record<'_>,
) -> std::io::Result<()> {
    use std::io::Write as _;
    let time = buf.timestamp_millis().to_string();
    writeln!(buf, "{}", json_line(&time, record))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_become_json_objects_with_their_fields() {
        let kvs: &[(&str, log::kv::Value<'_>)] = &[
            ("conn", log::kv::Value::from("3.7")),
            ("client", log::kv::Value::from("203.0.113.1")),
            ("code", log::kv::Value::from(1008u16)),
            ("message", log::kv::Value::from("shadowed")),
        ];
        let line = json_line(
            "2026-12-04T10:00:00.000Z",
            &log::Record::builder()
                .args(format_args!("closed: \"quoted\"\n\tand a control \u{1}"))
                .level(log::Level::Warn)
                .target("sigver::server")
                .key_values(&kvs)
                .build(),
        );
        assert_eq!(
            line,
            "{\"time\":\"2026-12-04T10:00:00.000Z\",\"level\":\"WARN\",\"target\":\"sigver::server\",\
             \"message\":\"closed: \\\"quoted\\\"\\n\\tand a control \\u0001\",\"conn\":\"3.7\",\
             \"client\":\"203.0.113.1\",\"code\":1008,\"field_message\":\"shadowed\"}"
        );
    }

    #[test]
    fn formats_parse() {
        assert_eq!(LogFormat::parse("json"), Ok(LogFormat::Json));
        assert_eq!(LogFormat::parse("text"), Ok(LogFormat::Text));
        assert!(LogFormat::parse("xml").is_err());
    }
}
