//! Requests from outside the loop: the waker (a [`super::Handle`]), signals, certificate
//! reloads and the graceful shutdown.

use std::sync::atomic::Ordering;

use log::{error, info};
use signal_hook::consts::SIGHUP;

use super::driver::Driver;
use crate::tls;

impl Driver {
    pub(super) fn on_wake(&mut self) {
        if self.shared.reload.swap(false, Ordering::SeqCst) {
            self.reload_tls();
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
                SIGHUP => self.reload_tls(),
                _ if self.stopping_until.is_some() => return true,
                _ => self.begin_shutdown(),
            }
        }
        false
    }

    /// Reads the TLS files again; on any error keeps serving with the old ones.
    fn reload_tls(&mut self) {
        let Some(files) = &self.config.tls else {
            info!("reload requested: no TLS files to reload");
            return;
        };
        match tls::load(files) {
            Ok(config) => {
                self.tls = Some(config);
                info!("TLS certificate reloaded from {}", files.cert.display());
            }
            Err(e) => error!("TLS reload failed, keeping the previous certificate: {e}"),
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
