//! systemd socket activation: the listening sockets systemd opened for us, passed as file
//! descriptors 3, 4, ... with `LISTEN_FDS` and `LISTEN_PID` (sd_listen_fds(3)).

use std::io;
use std::os::fd::{FromRawFd, IntoRawFd, RawFd};

use mio::net::TcpListener;

use super::MAX_LISTENERS;

/// The first descriptor systemd passes (SD_LISTEN_FDS_START).
const FIRST_FD: RawFd = 3;

/// The inherited listeners, or `None` when the environment does not hand any to this
/// process. The variables are removed so that nothing else takes the descriptors. Call it
/// before opening any descriptor, so that none can reuse a number systemd named.
pub(super) fn inherited_listeners() -> io::Result<Option<Vec<TcpListener>>> {
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.trim().parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.trim().parse::<usize>().ok());
    let Some(count) = count.filter(|&n| for_us && n > 0) else {
        return Ok(None);
    };
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_FDNAMES");
    if count > MAX_LISTENERS {
        return Err(io::Error::other(format!(
            "LISTEN_FDS={count}: at most {MAX_LISTENERS} listening sockets are served"
        )));
    }
    let mut listeners = Vec::with_capacity(count);
    for fd in (FIRST_FD..).take(count) {
        // SAFETY: fcntl only queries the descriptor's flags.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            return Err(io::Error::other(format!(
                "LISTEN_FDS={count} but descriptor {fd} is not open"
            )));
        }
        if let Err(problem) = check_listening_tcp(fd) {
            return Err(io::Error::other(format!(
                "LISTEN_FDS={count}: descriptor {fd} is not a listening TCP socket: {problem}"
            )));
        }
        // SAFETY: by the sd_listen_fds protocol these descriptors were opened for this process
        // (LISTEN_PID is ours) and nothing else owns them; each is taken exactly once, here,
        // before the process opens any descriptor of its own.
        let listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        // A descriptor that is not a TCP socket fails here, with a clear error, before use;
        // it is given back unclosed, since it is not ours to close.
        if let Err(e) = listener.local_addr() {
            let _ = listener.into_raw_fd();
            return Err(io::Error::new(
                e.kind(),
                format!("descriptor {fd} is not a listening TCP socket: {e}"),
            ));
        }
        listener.set_nonblocking(true)?;
        listeners.push(TcpListener::from_std(listener));
    }
    Ok(Some(listeners))
}

/// Whether `fd` is a TCP socket that listens, as a systemd `.socket` unit with `Accept=no`
/// hands over: not a connected socket (`Accept=yes`), a UDP socket, or one bound but not
/// listening, any of which would leave the loop spinning on an accept that never succeeds.
fn check_listening_tcp(fd: RawFd) -> Result<(), String> {
    let option = |name: libc::c_int| -> Result<libc::c_int, String> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into the integer we own.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                name,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if r == 0 {
            Ok(value)
        } else {
            Err(format!("not a socket ({})", io::Error::last_os_error()))
        }
    };
    let domain = option(libc::SO_DOMAIN)?;
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return Err(format!("address family {domain}, not IPv4 or IPv6"));
    }
    if option(libc::SO_TYPE)? != libc::SOCK_STREAM {
        return Err("not a stream (TCP) socket; a datagram socket cannot be served".into());
    }
    if option(libc::SO_ACCEPTCONN)? == 0 {
        return Err(
            "it does not listen (a connected socket, as `Accept=yes` hands over, or one bound \
             but not listening); use `Accept=no` in the socket unit"
                .into(),
        );
    }
    Ok(())
}
