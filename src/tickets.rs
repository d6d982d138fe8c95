//! TLS session tickets: a browser that reconnects (a page reload, a network change) resumes
//! its TLS session instead of paying a full handshake, the server's costliest work per
//! connection.
//!
//! Tickets are stateless: the session's secrets travel in the ticket, encrypted under keys
//! only this process knows, so resumption costs the server no memory per client. The keys
//! are made at random when the server starts and when the TLS files are reloaded (so that a
//! client sees a renewed certificate at its next connection, not the one of its session); the
//! loop rotates them every [`crate::Config::tls_ticket_rotation`]: a ticket is then accepted
//! for at most two rotation periods, after which a stolen ticket (or the key of one) opens
//! nothing. The encryption is rustls' own (`rustls::crypto::ring::Ticketer`); this module
//! only decides which keys make tickets and which still open them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls::server::{NoServerSessionStorage, ProducesTickets};
use rustls::ServerConfig;

/// The current ticket keys and the previous ones. Immutable: rotating makes a new set, so the
/// loop never shares a lock with rustls.
pub struct TicketKeys {
    current: Arc<dyn ProducesTickets>,
    previous: Option<Arc<dyn ProducesTickets>>,
    rotation: Duration,
}

impl fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TicketKeys")
            .field("rotation", &self.rotation)
            .finish_non_exhaustive()
    }
}

impl TicketKeys {
    /// Fresh keys, rotated every `rotation`.
    pub fn new(rotation: Duration) -> Result<Arc<Self>, rustls::Error> {
        Ok(Arc::new(Self {
            current: rustls::crypto::ring::Ticketer::new()?,
            previous: None,
            rotation,
        }))
    }

    /// New keys make the tickets from now on; the current ones still open theirs until the
    /// next rotation; the previous ones are forgotten.
    pub fn rotated(&self) -> Result<Arc<Self>, rustls::Error> {
        Ok(Arc::new(Self {
            current: rustls::crypto::ring::Ticketer::new()?,
            previous: Some(Arc::clone(&self.current)),
            rotation: self.rotation,
        }))
    }

    /// Fresh keys, with no previous ones: no ticket made before opens anything.
    pub fn renewed(&self) -> Result<Arc<Self>, rustls::Error> {
        Self::new(self.rotation)
    }

    /// `config` issuing and accepting tickets under these keys, with no session cache (one
    /// would hold memory per client, and tickets make it useless).
    pub fn apply(self: &Arc<Self>, config: &mut ServerConfig) {
        config.ticketer = Arc::clone(self) as Arc<dyn ProducesTickets>;
        config.session_storage = Arc::new(NoServerSessionStorage {});
        // One ticket a connection: a page reconnects its one signaling socket, and each
        // resumption brings a fresh ticket.
        config.send_tls13_tickets = 1;
    }
}

impl ProducesTickets for TicketKeys {
    fn enabled(&self) -> bool {
        true
    }

    /// How long a client may keep a ticket: two rotations, in seconds.
    fn lifetime(&self) -> u32 {
        u32::try_from(self.rotation.as_secs().saturating_mul(2)).unwrap_or(u32::MAX)
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.current.encrypt(plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.current
            .decrypt(cipher)
            .or_else(|| self.previous.as_ref()?.decrypt(cipher))
    }
}

/// `config` with resumption off: no tickets, no session cache.
pub fn disable(config: &mut ServerConfig) {
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_opens_for_two_rotations_then_not() {
        let keys = TicketKeys::new(Duration::from_secs(60)).unwrap();
        let ticket = keys.encrypt(b"session secrets").unwrap();
        assert_ne!(&ticket[..], b"session secrets");
        assert_eq!(keys.decrypt(&ticket).unwrap(), b"session secrets");
        let once = keys.rotated().unwrap();
        assert_eq!(once.decrypt(&ticket).unwrap(), b"session secrets");
        let newer = once.encrypt(b"newer").unwrap();
        let twice = once.rotated().unwrap();
        assert_eq!(twice.decrypt(&ticket), None);
        assert_eq!(twice.decrypt(&newer).unwrap(), b"newer");
        assert_eq!(twice.lifetime(), 120);
    }

    #[test]
    fn keys_are_per_process_secrets() {
        let (a, b) = (
            TicketKeys::new(Duration::from_secs(60)).unwrap(),
            TicketKeys::new(Duration::from_secs(60)).unwrap(),
        );
        let ticket = a.encrypt(b"session secrets").unwrap();
        assert_eq!(b.decrypt(&ticket), None);
        assert_eq!(b.decrypt(b"forged"), None);
    }
}
