//! Requests from outside the loop: the waker (a [`super::Handle`]), signals, reloads of the
//! TLS files and the key secrets, the rotation of the session ticket keys, and the graceful
//! shutdown.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use log::{debug, error, info};
use signal_hook::consts::SIGHUP;

use super::driver::{ms, Driver};
use crate::{keys, tls};

impl Driver {
    pub(super) fn on_wake(&mut self) {
        if self.shared.reload.swap(false, Ordering::SeqCst) {
            self.reload_files();
        }
        if self.shared.stop.load(Ordering::SeqCst) {
            self.begin_shutdown();
        }
    }

    /// Handles pending signals; true when the loop must stop at once.
    pub(super) fn on_signals(&mut self) -> bool {
        let Some(signals) = self.signals.as_mut() else {
            return false;
        };
        let pending: Vec<i32> = signals.pending().collect();
        for signal in pending {
            match signal {
                SIGHUP => self.reload_files(),
                _ if self.stopping_until.is_some() => return true,
                _ => self.begin_shutdown(),
            }
        }
        false
    }

    /// Reads the TLS files and the key secrets file again; each that fails to load keeps
    /// serving with the old one.
    fn reload_files(&mut self) {
        if self.config.tls.is_none() && self.config.key_secret.is_none() {
            info!("reload requested: no TLS files or key secrets to reload");
            return;
        }
        self.reload_tls();
        self.reload_key_secrets();
    }

    fn reload_tls(&mut self) {
        let Some(files) = &self.config.tls else {
            return;
        };
        // New ticket keys with the new certificate: a client resuming an old session would
        // never see the certificate the operator just installed.
        let tickets = match &self.tickets {
            Some(keys) => match keys.renewed() {
                Ok(keys) => Some(keys),
                Err(e) => {
                    return error!("TLS reload failed, keeping the previous certificate: {e}")
                }
            },
            None => None,
        };
        match tls::load(files, tickets.as_ref()) {
            Ok(config) => {
                self.tickets = tickets;
                let rotation = ms(self.config.tls_ticket_rotation.as_millis());
                self.tickets_rotate_at = self.now.saturating_add(rotation);
                self.tls = Some(config);
                info!("TLS certificate reloaded from {}", files.cert.display());
            }
            Err(e) => error!("TLS reload failed, keeping the previous certificate: {e}"),
        }
    }

    /// Rotates the session ticket keys when due: new keys make tickets, the last ones still
    /// open theirs for one more period. The TLS configuration is copied with the new keys
    /// (connections in their handshake keep the one they started with).
    pub(super) fn rotate_ticket_keys(&mut self) {
        let (Some(keys), Some(config)) = (&self.tickets, &self.tls) else {
            return;
        };
        if self.now < self.tickets_rotate_at {
            return;
        }
        let rotation = ms(self.config.tls_ticket_rotation.as_millis());
        self.tickets_rotate_at = self.now.saturating_add(rotation);
        match keys.rotated() {
            Ok(keys) => {
                let mut config = rustls::ServerConfig::clone(config);
                keys.apply(&mut config);
                self.tls = Some(Arc::new(config));
                self.tickets = Some(keys);
                debug!("TLS session ticket keys rotated");
            }
            // Only the system's random source can fail here; the old keys serve on.
            Err(e) => error!("cannot rotate the TLS session ticket keys: {e}"),
        }
    }

    /// A broken file keeps the last good secrets: refusing every key until the file is
    /// fixed would cut off every group, which a typo should not do.
    fn reload_key_secrets(&mut self) {
        let Some(path) = &self.config.key_secret else {
            return;
        };
        match keys::load(path) {
            Ok(secrets) => {
                info!(
                    "Key secrets reloaded from {} ({} secret(s))",
                    path.display(),
                    secrets.len()
                );
                self.key_secrets = Some(secrets);
            }
            Err(e) => error!("Key secret reload failed, keeping the previous secrets: {e}"),
        }
    }

    fn begin_shutdown(&mut self) {
        if self.stopping_until.is_some() {
            return;
        }
        info!(
            "Signaling server is stopping: closing {} connections",
            self.conns.len()
        );
        // With systemd's sockets, new connections wait in the backlog for the next process.
        // Otherwise they are still answered: /ready says 503, upgrades get 503.
        if self.inherited {
            for mut listener in std::mem::take(&mut self.listeners) {
                // Ignored failure: the listener is dropped right after.
                let _ = self.poll.registry().deregister(&mut listener);
            }
        }
        let grace = super::driver::ms(self.config.shutdown_grace.as_millis());
        self.stopping_until = Some(self.now.saturating_add(grace));
        self.close_all();
    }
}
