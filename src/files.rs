//! Reading the operator's files (TLS key and certificates, key secrets) at start and on
//! reload, without ever blocking the loop. Knows nothing of what the files hold.

use std::path::Path;

/// Reads a regular file whole. Opened without blocking and checked before it is read: a FIFO
/// (or a device) at the path would otherwise block the loop on a reload, freezing every
/// connection. The error is the problem, for the caller to attach to the file's name.
pub(crate) fn read_regular(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let cannot = |e: std::io::Error| format!("cannot read: {e}");
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(cannot)?;
    if !file.metadata().map_err(cannot)?.is_file() {
        return Err("not a regular file".into());
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(cannot)?;
    Ok(bytes)
}
