//! Why a connection is closed, and the close code and reason the peer receives for it.
//!
//! Every close the server initiates goes through a [`CloseReason`], so that the code, the human
//! reason (docs/PROTOCOL.md §7) and the log line cannot disagree.

use std::fmt;

/// Why the server closes a WebSocket connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// The group key (the URL path) is empty (4741).
    KeyEmpty,
    /// The group key is longer than [`crate::hub::MAX_KEY_LEN`] bytes (4741).
    KeyTooLong,
    /// With `--key-secret`, the group key is not signed with one of the secrets (4741).
    KeyNotSigned,
    /// Three heartbeat ticks passed without a heartbeat from the client (4742).
    Heartbeat,
    /// The client sent a text frame (4743).
    TextFrame,
    /// The client sent bytes that do not decode as a `Message` (4743).
    BadMessage,
    /// The client sent a `Message` with no field of its oneof set (4743).
    EmptyMessage,
    /// A lone member was replaced by a joiner that had already tried it (4744).
    BlockingMember,
    /// The request URL cannot be parsed (4745).
    BadUrl,
    /// The server is stopping (1001).
    Shutdown,
    /// The client broke the WebSocket framing rules (1002).
    ProtocolError,
    /// A message or frame is larger than the configured limit (1009).
    MessageTooBig,
    /// The client does not read what is sent to it and its send queue is full (1008).
    SendQueueFull,
    /// The client sends more messages per second than allowed (1008).
    RateLimited,
    /// The server's memory budget is spent and this client holds the most (1008).
    MemoryBudget,
    /// A message came in more fragments than allowed (1008).
    TooManyFragments,
    /// A `connect` lists more members than allowed (4743).
    TooManyMembers,
    /// A message holds more fields than allowed (4743).
    TooManyFields,
    /// A newcomer would join a group that has `--max-group-size` members (4746).
    GroupFull,
}

impl CloseReason {
    /// Every reason, in a fixed order (for counters indexed by reason).
    pub const ALL: [CloseReason; 19] = [
        Self::KeyEmpty,
        Self::KeyTooLong,
        Self::KeyNotSigned,
        Self::Heartbeat,
        Self::TextFrame,
        Self::BadMessage,
        Self::EmptyMessage,
        Self::BlockingMember,
        Self::BadUrl,
        Self::Shutdown,
        Self::ProtocolError,
        Self::MessageTooBig,
        Self::SendQueueFull,
        Self::RateLimited,
        Self::MemoryBudget,
        Self::TooManyFragments,
        Self::TooManyMembers,
        Self::TooManyFields,
        Self::GroupFull,
    ];

    /// Position in [`CloseReason::ALL`], which lists the reasons in declaration order.
    pub fn index(self) -> usize {
        self as usize
    }

    /// A short snake_case name, for metric labels.
    pub fn label(self) -> &'static str {
        match self {
            Self::KeyEmpty => "key_empty",
            Self::KeyTooLong => "key_too_long",
            Self::KeyNotSigned => "key_not_signed",
            Self::Heartbeat => "heartbeat",
            Self::TextFrame => "text_frame",
            Self::BadMessage => "bad_message",
            Self::EmptyMessage => "empty_message",
            Self::BlockingMember => "blocking_member",
            Self::BadUrl => "bad_url",
            Self::Shutdown => "shutdown",
            Self::ProtocolError => "protocol_error",
            Self::MessageTooBig => "message_too_big",
            Self::SendQueueFull => "send_queue_full",
            Self::RateLimited => "rate_limited",
            Self::MemoryBudget => "memory_budget",
            Self::TooManyFragments => "too_many_fragments",
            Self::TooManyMembers => "too_many_members",
            Self::TooManyFields => "too_many_fields",
            Self::GroupFull => "group_full",
        }
    }

    /// The WebSocket close code sent to the peer.
    pub fn close_code(self) -> u16 {
        match self {
            Self::KeyEmpty | Self::KeyTooLong | Self::KeyNotSigned => 4741,
            Self::Heartbeat => 4742,
            Self::TextFrame
            | Self::BadMessage
            | Self::EmptyMessage
            | Self::TooManyMembers
            | Self::TooManyFields => 4743,
            Self::BlockingMember => 4744,
            Self::BadUrl => 4745,
            Self::GroupFull => 4746,
            Self::Shutdown => 1001,
            Self::ProtocolError => 1002,
            Self::SendQueueFull
            | Self::RateLimited
            | Self::MemoryBudget
            | Self::TooManyFragments => 1008,
            Self::MessageTooBig => 1009,
        }
    }

    /// The human reason sent with the close code; RFC 6455 §5.5 allows at most 123 bytes.
    pub fn reason(self) -> &'static str {
        match self {
            Self::KeyEmpty => "Empty group key",
            Self::KeyTooLong => "Group key longer than 512 bytes",
            Self::KeyNotSigned => "Key not signed",
            Self::Heartbeat => "Too many missed heartbeats",
            Self::TextFrame => "Text frames are not supported: send binary protobuf messages",
            Self::BadMessage => "Message is not a valid protobuf Message",
            Self::EmptyMessage => "Message has no field set",
            Self::BlockingMember => "Replaced by a peer that could not join through you",
            Self::BadUrl => "Request URL cannot be parsed",
            Self::Shutdown => "Server is stopping",
            Self::ProtocolError => "WebSocket protocol error",
            Self::MessageTooBig => "Message too big",
            Self::SendQueueFull => "Send queue full",
            Self::RateLimited => "Rate limit exceeded",
            Self::MemoryBudget => "Server memory budget exceeded",
            Self::TooManyFragments => "Too many frames in one message",
            Self::TooManyMembers => "Too many members in connect",
            Self::TooManyFields => "Message has too many fields",
            Self::GroupFull => "Group is full",
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.close_code(), self.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [CloseReason; 19] = CloseReason::ALL;

    #[test]
    fn indexes_and_labels_are_distinct() {
        for (i, r) in ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert_eq!(ALL.iter().filter(|o| o.label() == r.label()).count(), 1);
        }
    }

    #[test]
    fn reasons_fit_in_a_close_frame() {
        // RFC 6455 §5.5: control frame payload <= 125 bytes, two of which are the code.
        for r in ALL {
            assert!(!r.reason().is_empty() && r.reason().len() <= 123, "{r:?}");
        }
    }
}
